"""Source records as lines of a JSONL manifest the `jsonl` source reads.

Manifest sources (jsonl, csv) already name their media by path: a record
is copied as its manifest holds it, with each path key's path rewritten
relative to the new manifest (absolute paths stay absolute), so no media
is copied. Records of other sources (tfds, webdataset, COCO, LibriSpeech)
hold media as bytes or decoded arrays: each is written once into a media
folder, named by the SHA-1 of its bytes (so a clip shared by several
records is one file), and the record names it by relative path. The keys
that became paths are the new manifest's `path_keys`.

Values: bytes that are UTF-8 text (tfds Text features) become strings;
other bytes are media, with the extension their first bytes tell (png,
jpg, ogg, flac, wav, ...; 'bin' when unknown). uint8 [H, W(, C)] arrays
(tfds Image features) are written as PNG; 1-D sample arrays of an audio
key as 16-bit or float WAV at `sample_rate` (the rate the pipeline assumes
for decoded samples); arrays of text become lists of strings; NumPy
scalars become numbers. Media nested inside a dict value is written too,
but stays a plain path string there (path keys are top-level keys).
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Iterable

import numpy as np

_MAGIC = ((b'\x89PNG\r\n\x1a\n', 'png'), (b'\xff\xd8\xff', 'jpg'),
          (b'GIF8', 'gif'), (b'OggS', 'ogg'), (b'fLaC', 'flac'),
          (b'ID3', 'mp3'), (b'\xff\xfb', 'mp3'), (b'II*\x00', 'tif'),
          (b'MM\x00*', 'tif'), (b'BM', 'bmp'))


def media_extension(data: bytes) -> str:
  """The file extension the first bytes of `data` tell ('bin' if none)."""
  if data[:4] == b'RIFF' and data[8:12] in (b'WAVE', b'WEBP'):
    return 'wav' if data[8:12] == b'WAVE' else 'webp'
  for magic, ext in _MAGIC:
    if data.startswith(magic):
      return ext
  return 'bin'


def as_text(data: bytes) -> str | None:
  """`data` as a string if it is UTF-8 text without control characters
  (other than tab and newlines), else None (media)."""
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError:
    return None
  if any(ch < ' ' and ch not in '\t\n\r' for ch in text):
    return None
  return text


class ManifestWriter:
  """Turns source records into JSON objects for a manifest at `out_path`.

  Args:
    out_path: the manifest being written (paths are made relative to its
      folder).
    media_dir: where media of non-manifest sources go (created on first
      use).
    source_root: for manifest sources, the folder its paths are relative to;
      None otherwise.
    path_keys: for manifest sources, its path keys.
    audio_keys: record keys holding audio (for decoded sample arrays).
    sample_rate: the rate of decoded sample arrays.
  """

  def __init__(self, out_path: str, media_dir: str, *,
               source_root: str | None = None,
               path_keys: Iterable[str] = (),
               audio_keys: Iterable[str] = (), sample_rate: int = 16000):
    self.out_dir = os.path.dirname(os.path.abspath(out_path))
    self.media_dir = os.path.abspath(media_dir)
    self.source_root = source_root
    self.source_path_keys = tuple(path_keys)
    self.audio_keys = set(audio_keys)
    self.sample_rate = sample_rate
    self.path_keys: set[str] = set(self.source_path_keys)
    self.media_written = 0

  def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of `record` ('__key__' left out)."""
    out = {}
    for key, value in record.items():
      if key == '__key__':
        continue
      if key in self.source_path_keys and self.source_root is not None:
        out[key] = self._rewrite(value)
      else:
        out[key] = self._value(key, value)
    return out

  def _rewrite(self, value):
    if isinstance(value, list):
      return [self._rewrite(v) for v in value]
    if not isinstance(value, str) or not value or os.path.isabs(
        os.path.expanduser(value)):
      return value
    return os.path.relpath(os.path.join(self.source_root, value),
                           self.out_dir)

  def _value(self, key: str | None, value):
    """JSON of `value` of top-level record key `key` (None inside a dict:
    media there is written, but the manifest source reads top-level path
    keys only, so its path stays a plain string)."""
    if isinstance(value, (bytes, bytearray)):
      text = as_text(bytes(value))
      if text is not None:
        return text
      return self._file(key, bytes(value), media_extension(bytes(value)))
    if isinstance(value, np.ndarray):
      return self._array(key, value)
    if isinstance(value, np.generic):
      return value.item()
    if isinstance(value, dict):
      return {k: self._value(None, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
      return [self._value(key, v) for v in value]
    return value

  def _array(self, key: str | None, value: np.ndarray):
    if value.dtype.kind in 'OSU':
      return [self._value(key, v) for v in value.tolist()]
    if value.ndim == 0:
      return value.item()
    if value.dtype == np.uint8 and (value.ndim == 2 or (
        value.ndim == 3 and value.shape[-1] in (1, 3, 4))):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      buf = io.BytesIO()
      img = value[..., 0] if value.ndim == 3 and value.shape[-1] == 1 else value
      Image.fromarray(img).save(buf, format='PNG')
      return self._file(key, buf.getvalue(), 'png')
    if key in self.audio_keys and value.ndim in (1, 2):
      import soundfile  # pylint: disable=g-import-not-at-top
      buf = io.BytesIO()
      subtype = 'PCM_16' if value.dtype == np.int16 else 'FLOAT'
      soundfile.write(buf, value, self.sample_rate, format='WAV',
                      subtype=subtype)
      return self._file(key, buf.getvalue(), 'wav')
    return value.tolist()

  def _file(self, key: str | None, data: bytes, ext: str) -> str:
    """Writes `data` once (named by its hash); its path relative to the
    manifest."""
    name = f'{hashlib.sha1(data).hexdigest()[:20]}.{ext}'
    path = os.path.join(self.media_dir, name)
    if not os.path.exists(path):
      os.makedirs(self.media_dir, exist_ok=True)
      tmp = f'{path}.tmp{os.getpid()}'
      with open(tmp, 'wb') as f:
        f.write(data)
      os.replace(tmp, path)
      self.media_written += 1
    if key is not None:
      self.path_keys.add(key)
    return os.path.relpath(path, self.out_dir)
