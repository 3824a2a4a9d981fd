"""grain input pipelines over tfds array_record sources.

One pipeline serves training and evaluation:

  source -> [process shard] -> shuffle(seed) -> repeat -> random_map(preprocess)
         -> to_iter_dataset(threads, prefetch) -> batch

Because every random choice (caption phrasing, augmentation, audio offset) is
drawn by grain's `random_map` from (seed, index), the iterator's state is just
a position: `iterator.get_state()` / `set_state()` (and the orbax checkpoint
that stores them) resume at exactly the next example a run would have seen.

A batch is a dict of NumPy arrays, per process (not global):
  image       float32 [B, S, S, C]  in [-1, 1]
  audio       float32 [B, T, F]     log-mel, see multimodal.data.audio
  image_text  int32   [B, L]        caption ids, eos then 0-padding
  audio_text  int32   [B, L]
  label       int32   [B]
(only the fields the model consumes, plus `label`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import threading
from typing import Any

from absl import logging
import grain
import numpy as np

from multimodal.data import audio as audio_lib
from multimodal.data import image as image_lib
from multimodal.data import text as text_lib

# Fields of an output batch and the kind of preprocessing each one gets.
_KINDS = {'image': 'image', 'audio': 'audio', 'image_text': 'text',
          'audio_text': 'text', 'question': 'text', 'answer': 'text'}


def open_source(dataset_cfg, split: str):
  """Random-access tfds source for `split`; builds the built-in data if absent."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(dataset_cfg.data_dir or
                                tfds.core.constants.DATA_DIR)
  if dataset_cfg.name == 'digits_trimodal':
    from data_pipelines import digits_trimodal  # pylint: disable=g-import-not-at-top
    builder = digits_trimodal.build(data_dir)
  else:
    builder = tfds.builder(dataset_cfg.name, data_dir=data_dir)
  if split not in builder.info.splits:
    raise ValueError(f'Split {split!r} is not in {dataset_cfg.name}; it has '
                     f'{sorted(builder.info.splits)}.')
  return builder.as_data_source(split)


def tokenizer_path(input_cfg) -> str:
  if input_cfg.get('tokenizer'):
    return os.path.expanduser(input_cfg.tokenizer)
  from data_pipelines import digits_trimodal  # pylint: disable=g-import-not-at-top
  return digits_trimodal.TOKENIZER_PATH


@dataclasses.dataclass
class SkipCounter:
  """Corrupt records skipped so far in this process (thread safe)."""
  count: int = 0
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

  def add(self):
    with self.lock:
      self.count += 1


class Preprocess:
  """Turns one raw record into one example of the batch fields in `fields`.

  `input_cfg.fields` maps output field -> record key (e.g. audio -> speech),
  so the same code reads other datasets by changing config only.
  """

  def __init__(self, input_cfg, fields: list[str], train: bool):
    unknown = [f for f in fields if f not in _KINDS]
    if unknown:
      raise ValueError(f'No preprocessing known for fields {unknown}; known: '
                       f'{sorted(_KINDS)}.')
    self.cfg = input_cfg
    self.fields = fields
    self.train = train
    self.tokenizer = text_lib.Tokenizer(tokenizer_path(input_cfg),
                                        input_cfg.max_text_len)
    self.mel = audio_lib.LogMelConfig(num_frames=input_cfg.num_frames,
                                      num_mels=input_cfg.num_mels)
    self.skipped = SkipCounter()
    self._clip_features = self._clip_features_uncached
    if input_cfg.audio_cache_size:
      self._clip_features = functools.lru_cache(
          maxsize=input_cfg.audio_cache_size)(self._clip_features_uncached)

  def _image(self, data, rng):
    aug = self.cfg.augment if self.train else None
    img = image_lib.decode_image(data, self.cfg.image_channels)
    if aug:
      return image_lib.to_array(img, self.cfg.image_size, rng=rng,
                                max_shift=aug.max_shift,
                                max_scale=aug.max_scale,
                                max_rotate=aug.max_rotate)
    return image_lib.to_array(img, self.cfg.image_size)

  def _audio(self, data, rng):
    # Decoding and the FFT dominate the pipeline's cost, so each clip's
    # features are computed once (cached) and random placement in time is a
    # whole-frame shift of them, which is exact (see audio_lib.shift_frames).
    feats, free = self._clip_features(data)
    if self.train and self.cfg.audio_augment:
      feats, free = audio_lib.augment_features(feats, free, rng,
                                               **self.cfg.audio_augment)
    shift = int(rng.integers(0, free + 1)) if self.train else free // 2
    return audio_lib.shift_frames(feats, shift)

  def _clip_features_uncached(self, data: bytes):
    wave = audio_lib.decode_audio(data, self.mel.sample_rate)
    return audio_lib.clip_features(wave, self.mel)

  def _text(self, value, rng):
    if isinstance(value, (list, tuple, np.ndarray)):
      if not len(value):
        raise ValueError('empty list of texts')
      # Training samples a phrasing; evaluation draws one too, but from a
      # fixed seed, so every evaluation sees the same captions.
      value = value[int(rng.integers(len(value)))]
    return self.tokenizer(value)

  def __call__(self, record: dict[str, Any], rng: np.random.Generator):
    out = {}
    try:
      for field in self.fields:
        key = self.cfg.fields[field]
        kind = _KINDS[field]
        out[field] = getattr(self, '_' + kind)(record[key], rng)
      out['label'] = np.int32(record[self.cfg.fields.label])
    except (image_lib.ImageDecodeError, audio_lib.AudioDecodeError,
            ValueError) as e:
      rid = record.get('id', b'?')
      rid = rid.decode() if isinstance(rid, bytes) else rid
      if not self.cfg.skip_corrupt:
        raise ValueError(
            f'Record {rid!r}: {e} Set config.input.skip_corrupt=True to '
            'skip (and count) such records.') from e
      self.skipped.add()
      logging.warning('Skipping corrupt record %r: %s', rid, e)
      return None
    return out


def make_iterator(config, split: str, *, train: bool, fields: list[str],
                  batch_size: int, process_index: int = 0,
                  process_count: int = 1, source=None):
  """Returns (iterator, preprocess, number of records in the split).

  batch_size is per process. Training repeats forever and drops the last
  partial batch; evaluation makes one pass and keeps it.

  Training order does not depend on the number of processes: the global
  stream (shuffled, repeated, preprocessed with randomness drawn from the
  global position) is dealt out round-robin, so process i's k-th batch holds
  global positions i, i + P, ... of the k-th global batch, and the P
  processes together see exactly the examples one process would. Evaluation
  deals one pass out the same way.
  """
  source = source if source is not None else open_source(config.dataset, split)
  ds = grain.MapDataset.source(source)
  num_records = len(ds)
  if train:
    ds = ds.shuffle(seed=config.seed).repeat(None)
  preprocess = Preprocess(config.input, fields, train)
  # Slicing after the (lazy) map: randomness is drawn from global positions.
  ds = ds.random_map(preprocess, seed=config.seed + (0 if train else 1))
  ds = ds[process_index::process_count]
  ds = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=config.input.num_threads,
      prefetch_buffer_size=config.input.prefetch))
  ds = ds.batch(batch_size, drop_remainder=train)
  if train and config.input.get('num_workers', 0) > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=config.input.num_workers))
  return iter(ds), preprocess, num_records
