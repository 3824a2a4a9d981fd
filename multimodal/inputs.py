"""Raw inputs of the inference API (multimodal.predictor) -> model arrays.

Each modality's raw values are first brought to what the data pipeline's
field kinds read (multimodal/data/kinds), then those same kinds, built with
train=False from the export's input config, make the arrays; preprocessing
is therefore the one of training and evaluation, not a copy of it.

  image  a file path (str or os.PathLike), encoded bytes (PNG, JPEG, ...),
         a PIL image, or pixels as a NumPy array [H, W] / [H, W, 1|3]:
         uint8, or float in [0, 1] (scaled to uint8 by round(255 x), as
         the pipeline reads images as 8-bit) -> float32 [S, S, C] in [-1, 1]
  audio  a file path or encoded bytes (WAV, FLAC, OGG/Opus: what soundfile
         reads), a (samples, sample_rate) tuple, or samples alone with the
         call's `sample_rate`; int PCM or float, [N] or [N, channels], any
         rate (resampled to the export's log-mel rate by
         multimodal.data.audio.resample) -> log-mel float32 [T, F]
  video  a directory of frame images (read in name order: zero-pad the
         numbers), a list of frames (each as an image above), frames as a
         NumPy array [T, H, W] / [T, H, W, 1|3] (uint8, or float in
         [0, 1]), a .npy file of such frames, or a video file (mp4,
         webm, ...; decoded with PyAV when installed: pip install av) ->
         float32 [T, S, S, C] in [-1, 1] (the export's video_frames,
         stride and centred window)
  text   a str (or UTF-8 bytes) -> int32 [L] ids (pieces, eos, pads); a
         text longer than L - 1 pieces is an error, not truncated

Problems are `InputError`s naming the item and the fix; `reason` is a short
name (the server answers 4xx with it).
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from multimodal import registry
from multimodal.data import audio as audio_lib
from multimodal.data import kinds as kinds_lib
from multimodal.data import text as text_lib
from multimodal.data.errors import DataError

# Modality -> the keyword argument of the API that takes its raw values.
ARGUMENTS = {'image': 'images', 'video': 'videos', 'audio': 'audio',
             'text': 'texts'}
MODALITIES = tuple(ARGUMENTS)


class InputError(ValueError):
  """An input the model cannot use (the caller's mistake, not the model's).

  reason: 'unknown_modality', 'missing_modality' (the model has no tower
  for it), 'bad_image', 'bad_audio', 'bad_video', 'text_too_long', 'empty_text',
  'bad_value' (wrong type or shape), 'missing_file', 'unsupported' (e.g.
  caption() on a contrastive export), 'bad_option' (decoding options).
  """

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def _read_file(path, what: str) -> bytes:
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise InputError('missing_file', f'{what}: cannot read {str(path)!r} '
                     f'({e.strerror or e}).') from e


def _is_path(value) -> bool:
  return isinstance(value, (str, os.PathLike))


def image_value(value, what: str = 'image') -> bytes | np.ndarray:
  """A raw image (module docstring) -> encoded bytes or uint8 pixels, what
  the 'image' field kind decodes."""
  if _is_path(value):
    return _read_file(value, what)
  if isinstance(value, (bytes, bytearray, memoryview)):
    return bytes(value)
  if isinstance(value, Image.Image):
    mode = value.mode if value.mode in ('L', 'RGB') else 'RGB'
    return np.asarray(value.convert(mode))
  if isinstance(value, np.ndarray):
    if not (value.ndim == 2 or (value.ndim == 3 and value.shape[2] in (1, 3))):
      raise InputError('bad_value', f'{what}: pixels must be [H, W] or '
                       f'[H, W, 1|3], got shape {value.shape}.')
    if value.dtype == np.uint8:
      return value
    if np.issubdtype(value.dtype, np.floating):
      if value.size and (np.nanmin(value) < 0 or np.nanmax(value) > 1
                         or np.isnan(value).any()):
        raise InputError(
            'bad_value', f'{what}: float pixels must be in [0, 1], got '
            f'{np.nanmin(value):.3g}..{np.nanmax(value):.3g}. Pass uint8 '
            'pixels, or arrays already preprocessed for the model (in '
            '[-1, 1], at its size) to embed_arrays().')
      return np.round(value * 255.0).astype(np.uint8)
    raise InputError('bad_value', f'{what}: pixels of dtype {value.dtype}; '
                     'use uint8 or float in [0, 1].')
  raise InputError('bad_value', f'{what}: {type(value).__name__} is not an '
                   'image; give a file path, encoded bytes, a PIL image or '
                   'a NumPy array.')


FRAME_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp')


def video_value(value, what: str = 'video'):
  """A raw clip (module docstring) -> what the 'video' field kind reads:
  file bytes, a list of encoded frames, or uint8 frames [T, H, W(, C)]."""
  if _is_path(value):
    if not os.path.isdir(value):
      return _read_file(value, what)
    names = sorted(n for n in os.listdir(value)
                   if n.lower().endswith(FRAME_EXTENSIONS))
    if not names:
      raise InputError('bad_video', f'{what}: the directory {str(value)!r} '
                       f'holds no frame images ({", ".join(FRAME_EXTENSIONS)}'
                       ').')
    return [_read_file(os.path.join(value, n), what) for n in names]
  if isinstance(value, (bytes, bytearray, memoryview)):
    return bytes(value)
  if isinstance(value, np.ndarray):
    if value.ndim not in (3, 4) or (value.ndim == 4
                                    and value.shape[3] not in (1, 3)):
      raise InputError('bad_value', f'{what}: frames must be [T, H, W] or '
                       f'[T, H, W, 1|3], got shape {value.shape}.')
    return np.stack([image_value(f, f'{what} frame {i}')
                     for i, f in enumerate(value)])
  if isinstance(value, (list, tuple)):
    if not value:
      raise InputError('bad_video', f'{what}: the list of frames is empty.')
    return [image_value(f, f'{what} frame {i}') for i, f in enumerate(value)]
  raise InputError('bad_value', f'{what}: {type(value).__name__} is not a '
                   'video; give a directory of frames, a list of frames, a '
                   'frame array, or a .npy / video file path or bytes.')


def audio_value(value, rate: int, sample_rate: int | None = None,
                what: str = 'audio') -> np.ndarray:
  """A raw clip (module docstring) -> mono float32 samples at `rate` Hz,
  what the 'audio' field kind reads. `sample_rate` is the rate of bare
  sample arrays."""
  try:
    if _is_path(value):
      value = _read_file(value, what)
    if isinstance(value, (bytes, bytearray, memoryview)):
      wave, sr = audio_lib.read_audio(bytes(value))
    elif isinstance(value, tuple):
      if len(value) != 2 or not isinstance(value[1], (int, np.integer)):
        raise InputError('bad_value', f'{what}: a tuple must be (samples, '
                         f'sample_rate in Hz), got {len(value)} items.')
      wave, sr = audio_lib.samples_to_float(value[0]), int(value[1])
    elif isinstance(value, np.ndarray):
      if sample_rate is None:
        raise InputError(
            'bad_value', f'{what}: samples without a sample rate; pass '
            f'(samples, rate) or sample_rate=RATE (this model reads {rate} '
            'Hz and resamples others).')
      wave, sr = audio_lib.samples_to_float(value), int(sample_rate)
    else:
      raise InputError('bad_value', f'{what}: {type(value).__name__} is not '
                       'audio; give a file path, encoded bytes, (samples, '
                       'rate) or samples with sample_rate=.')
    if not np.all(np.isfinite(wave)):
      raise InputError('bad_audio', f'{what}: samples hold NaN or inf.')
    return audio_lib.resample(wave, sr, rate)
  except audio_lib.AudioDecodeError as e:
    raise InputError('bad_audio', f'{what}: {e}') from e


class Preprocessor:
  """The export's field kinds, for raw values of each modality.

  Built from the experiment's config.input (config.json) and the export's
  tokenizer; `settings` are checked against preprocess.json, so an export
  whose recorded preprocessing differs from what this code would do is an
  error rather than silently different inputs.
  """

  def __init__(self, input_cfg, tokenizer_path: str | None,
               recorded: dict | None = None):
    self.cfg = input_cfg
    self.tokenizer = None
    if tokenizer_path and input_cfg.get('max_text_len'):
      self.tokenizer = text_lib.Tokenizer(tokenizer_path,
                                          input_cfg.max_text_len)
    self._kinds = {}
    self.recorded = recorded or {}

  def kind(self, modality: str):
    """The field kind object of `modality` (built on first use)."""
    if modality not in self._kinds:
      if modality == 'text' and self.tokenizer is None:
        raise InputError('missing_modality', 'This export has no tokenizer '
                         'or max_text_len: it cannot read texts.')
      kind = registry.get('field', modality)(self.cfg, train=False,
                                             tokenizer=self.tokenizer)
      recorded = self.recorded.get(modality)
      if recorded is not None:
        settings = dict(kind.settings())
        mine = {k: v for k, v in settings.items() if k != 'tokenizer'}
        theirs = {k: v for k, v in recorded.items() if k != 'tokenizer'}
        if _jsonable(mine) != theirs:
          raise ValueError(
              f'preprocess.json records {modality} preprocessing {theirs}, '
              f'but its config.input gives {_jsonable(mine)}: the export is '
              'inconsistent (re-export it with this version).')
      self._kinds[modality] = kind
    return self._kinds[modality]

  def example_shape(self, modality: str) -> tuple[tuple[int, ...], Any]:
    shape = self.kind(modality).example_shape()
    if shape is None:
      raise InputError('unsupported', f'The {modality} field kind does not '
                       'declare its example shape.')
    return shape

  @property
  def sample_rate(self) -> int:
    return self.kind('audio').mel.sample_rate

  def check_text(self, text, what: str = 'text') -> str:
    """`text` as str; InputError when empty or longer than the model reads."""
    if isinstance(text, bytes):
      text = text.decode('utf-8', errors='replace')
    if not isinstance(text, str):
      raise InputError('bad_value', f'{what}: {type(text).__name__} is not '
                       'a str.')
    if not text.strip():
      raise InputError('empty_text', f'{what} is empty.')
    tok = self.tokenizer
    pieces = len(tok.sp.encode(text))
    if pieces > tok.max_len - 1:
      raise InputError(
          'text_too_long', f'{what} has {pieces} tokens; this model reads at '
          f'most {tok.max_len - 1} (max_text_len {tok.max_len} including the '
          f'end token). Shorten it: {text[:60]!r}...')
    return text

  def one(self, modality: str, value, *, sample_rate: int | None = None,
          what: str | None = None) -> np.ndarray:
    """One raw value -> one example array (module docstring)."""
    what = what or modality
    kind = self.kind(modality)
    if modality == 'image':
      value = image_value(value, what)
    elif modality == 'audio':
      value = audio_value(value, self.sample_rate, sample_rate, what)
    elif modality == 'video':
      value = video_value(value, what)
    elif modality == 'text':
      value = self.check_text(value, what)
    else:
      raise InputError('unknown_modality', f'No raw-input reader for '
                       f'{modality!r}; pass preprocessed arrays instead.')
    try:
      # Evaluation preprocessing draws nothing at random; the rng is unused.
      return kind(value, np.random.default_rng(0))
    except DataError as e:
      raise InputError(e.reason, f'{what}: {e}') from e
    except ValueError as e:
      if modality != 'video':
        raise
      # A video file, and no decoder installed (the kind names it).
      raise InputError('unsupported', f'{what}: {e}') from e

  def batch(self, modality: str, values: Sequence, *,
            sample_rate: int | None = None, allow_missing: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
    """Raw values -> (arrays [N, ...], present bool [N]).

    With allow_missing, a None value is an example without this modality:
    a zero array, present False.
    """
    argument = ARGUMENTS.get(modality, modality)
    one_clip = (modality == 'audio' and isinstance(values, tuple)
                and len(values) == 2
                and isinstance(values[1], (int, np.integer)))
    if one_clip or isinstance(values, (str, bytes, np.ndarray, Image.Image)) \
        or _is_path(values) or not isinstance(values, Sequence):
      raise InputError('bad_value', f'{argument}= takes a list of values '
                       f'(one per example), got {type(values).__name__}: '
                       f'wrap one value in a list (a batch array: '
                       'list(array)).')
    shape, dtype = self.example_shape(modality)
    out = np.zeros((len(values),) + tuple(shape), dtype)
    present = np.ones(len(values), bool)
    for i, value in enumerate(values):
      what = f'{argument}[{i}]'
      if value is None:
        if not allow_missing:
          raise InputError('bad_value', f'{what} is None; only caption() '
                           'and answer() take missing media.')
        present[i] = False
        continue
      out[i] = self.one(modality, value, sample_rate=sample_rate, what=what)
    return out, present


def _jsonable(settings: dict) -> dict:
  """Settings as they read back from JSON (tuples become lists)."""
  return json.loads(json.dumps(settings))


def kind_of(field: str, input_cfg) -> str:
  """The field kind (= modality name for media and text) of a model field."""
  return kinds_lib.kind_of(field, input_cfg)
