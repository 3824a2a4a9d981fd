"""grain input pipelines over tfds array_record sources.

One pipeline serves training and evaluation:

  source -> [process shard] -> shuffle(seed) -> repeat -> random_map(preprocess)
         -> to_iter_dataset(threads, prefetch) -> batch

Because every random choice (caption phrasing, augmentation, audio offset) is
drawn by grain's `random_map` from (seed, index), the iterator's state is just
a position: `iterator.get_state()` / `set_state()` (and the orbax checkpoint
that stores them) resume at exactly the next example a run would have seen.

A batch is a dict of NumPy arrays, per process (not global):
  image            float32 [B, S, S, C]  in [-1, 1]
  audio            float32 [B, T, F]     log-mel, see multimodal.data.audio
  image_text       int32   [B, L]        caption ids, eos then 0-padding
  audio_text       int32   [B, L]
  question, answer, question_type
                   int32   [B, L]        text, as image_text ([B, K, L] with
                                         aligned_items K, below)
  image_text_refs, audio_text_refs, answer_refs
                   int32   [B, R, L]     every reference text of the record
                                         (R = input.max_references; missing
                                         ones are all-0 rows; [B, K, R, L]
                                         when aligned)
  seed             int32   [B]           a random number for randomness in
                                         the model (modality dropout)
  label            int32   [B]           -1 when input.fields maps no label
(only the fields the task asks for, plus `label`).

Record keys come from `input.fields` (output field -> record key); a key
may be a path 'a/b' into nested features (e.g. clevr's
'question_answer/question'). Images may be encoded bytes or decoded uint8
arrays (tfds Image features); audio may be encoded bytes or decoded
samples (tfds Audio features, e.g. LibriSpeech's int16), cropped to the
first input.num_frames frames.

Aligned lists (VQA): the output fields in `input.aligned_fields` read
records whose values are lists of the same length (questions, answers,
question types), and one index picks the same item of each. With
`input.aligned_items = 0` an example holds one item, drawn at random (in
evaluation from the fixed eval seed); with `aligned_items = K` it holds
items 0..K-1 stacked, e.g. question int32 [B, K, L], so training sees every
question of a record against one encoding of its media and evaluation
covers every question of every record.
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
          'audio_text': 'text', 'question': 'text', 'answer': 'text',
          'question_type': 'text', 'image_text_refs': 'texts',
          'audio_text_refs': 'texts', 'answer_refs': 'texts', 'seed': 'seed'}
# Kinds made from the example's randomness alone, not from a record key.
_GENERATED = ('seed',)


def open_source(dataset_cfg, split: str):
  """Random-access tfds source for `split`; builds the built-in data if absent."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(dataset_cfg.data_dir or
                                tfds.core.constants.DATA_DIR)
  if dataset_cfg.name == 'digits_trimodal':
    from data_pipelines import digits_trimodal  # pylint: disable=g-import-not-at-top
    builder = digits_trimodal.build(data_dir)
  else:
    try:
      builder = tfds.builder(dataset_cfg.name, data_dir=data_dir)
    except ModuleNotFoundError as e:
      if 'tensorflow' not in str(e):
        raise
      raise ModuleNotFoundError(
          f'The tfds builder {dataset_cfg.name!r} needs TensorFlow just to be '
          'constructed (its feature spec calls tf), and TensorFlow is not a '
          'dependency here: pip install tensorflow-cpu, or use a dataset '
          'whose builder does not need it.') from e
  # Splits are unknown (empty) only for data not prepared yet, or mocked
  # (tfds.testing.mock_data); reading then reports what is missing.
  if builder.info.splits and split not in builder.info.splits:
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
    unmapped = [f for f in fields if _KINDS[f] not in _GENERATED
                and f not in input_cfg.fields]
    if unmapped:
      raise ValueError(f'Fields {unmapped} have no record key: add them to '
                       'config.input.fields (output field -> record key).')
    self.cfg = input_cfg
    self.fields = fields
    self.train = train
    self.aligned = [f for f in input_cfg.get('aligned_fields', ())
                    if f in fields]
    self.aligned_items = input_cfg.get('aligned_items', 0)
    self.max_references = input_cfg.get('max_references', 0)
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
    if isinstance(data, np.ndarray):  # decoded samples: not hashable
      feats, free = self._clip_features_uncached(data)
    else:
      feats, free = self._clip_features(data)
    if self.train and self.cfg.audio_augment:
      feats, free = audio_lib.augment_features(feats, free, rng,
                                               **self.cfg.audio_augment)
    shift = int(rng.integers(0, free + 1)) if self.train else free // 2
    return audio_lib.shift_frames(feats, shift)

  def _clip_features_uncached(self, data):
    wave = audio_lib.decode_audio(data, self.mel.sample_rate)
    return audio_lib.clip_features(wave, self.mel)

  def _text(self, value, rng):
    if _is_list(value):
      if not len(value):
        raise ValueError('empty list of texts')
      # Training samples a phrasing; evaluation draws one too, but from a
      # fixed seed, so every evaluation sees the same captions.
      value = value[int(rng.integers(len(value)))]
    return self.tokenizer(value)

  def _texts(self, value, rng):
    """Every text of a list (or the one text) -> int32 [max_references, L]."""
    del rng  # all of them, no choice
    if self.max_references < 1:
      raise ValueError('reference fields need config.input.max_references '
                       '>= 1 (the number of texts kept per example)')
    value = list(value) if _is_list(value) else [value]
    if not value:
      raise ValueError('empty list of reference texts')
    out = np.zeros((self.max_references, self.tokenizer.max_len), np.int32)
    for i, text in enumerate(value[:self.max_references]):
      out[i] = self.tokenizer(text)
    return out

  def _seed(self, value, rng):
    del value
    return np.int32(rng.integers(0, np.iinfo(np.int32).max))

  def _aligned_items(self, record, rng) -> list[int]:
    """The items of the aligned lists this example holds."""
    lengths = {f: len(_lookup(record, self.cfg.fields[f]))
               for f in self.aligned}
    if len(set(lengths.values())) != 1 or not min(lengths.values()):
      raise ValueError(f'aligned fields need non-empty lists of one length, '
                       f'got lengths {lengths}')
    num = lengths[self.aligned[0]]
    if not self.aligned_items:
      return [int(rng.integers(num))]
    if num < self.aligned_items:
      raise ValueError(f'config.input.aligned_items={self.aligned_items} but '
                       f'this record has {num} items; lower it to {num}')
    return list(range(self.aligned_items))

  def __call__(self, record: dict[str, Any], rng: np.random.Generator):
    out = {}
    try:
      items = self._aligned_items(record, rng) if self.aligned else None
      for field in self.fields:
        fn = getattr(self, '_' + _KINDS[field])
        if _KINDS[field] in _GENERATED:
          out[field] = fn(None, rng)
        elif field in self.aligned:
          value = _lookup(record, self.cfg.fields[field])
          texts = [fn(value[i], rng) for i in items]
          out[field] = np.stack(texts) if self.aligned_items else texts[0]
        else:
          out[field] = fn(_lookup(record, self.cfg.fields[field]), rng)
      out['label'] = (np.int32(_lookup(record, self.cfg.fields.label))
                      if 'label' in self.cfg.fields else np.int32(-1))
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


def _is_list(value) -> bool:
  return isinstance(value, (list, tuple, np.ndarray))


def _lookup(record: dict[str, Any], key: str):
  """record[key]; a key 'a/b' that is not itself a key of the record reads
  record['a']['b'] (nested features; coco's flat 'image/id' is a key)."""
  if key in record:
    return record[key]
  value = record
  for part in key.split('/'):
    if not isinstance(value, dict) or part not in value:
      have = sorted(value) if isinstance(value, dict) else type(value).__name__
      raise KeyError(f'Record has no {key!r} (at {part!r}: found {have}); '
                     'fix config.input.fields.')
    value = value[part]
  return value


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
