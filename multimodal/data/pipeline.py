"""grain input pipelines over any registered data source.

One pipeline serves training and evaluation:

  source (config.dataset.source) -> shuffle(seed) -> repeat
         -> random_map(preprocess) -> [process share]
         -> to_iter_dataset(threads, prefetch) -> batch

Because every random choice (caption phrasing, augmentation, audio offset) is
drawn by grain's `random_map` from (seed, index), the iterator's state is just
a position: `iterator.get_state()` / `set_state()` (and the orbax checkpoint
that stores them) resume at exactly the next example a run would have seen.

A batch is a dict of NumPy arrays, per process (not global), holding the
fields the task (and its evaluators) ask for. `config.input.fields` maps each
output field to a record key (a key may be a path 'a/b' into nested values,
e.g. clevr's 'question_answer/question'), and the field's kind
(multimodal/data/kinds) makes its array, e.g.
  image            float32 [B, S, S, C]  in [-1, 1]
  audio            float32 [B, T, F]     log-mel, see multimodal.data.audio
  image_text, ...  int32   [B, L]        text ids, eos then 0-padding
  *_refs           int32   [B, R, L]     every reference text of the record
  label            int32   [B]           an integer class
  seed             int32   [B]           randomness for the model (modality
                                         dropout)
Images may be encoded bytes or decoded uint8 arrays (tfds Image features);
audio may be encoded bytes or decoded samples (tfds Audio features, e.g.
LibriSpeech's int16), cropped to the first input.num_frames frames.

Records that cannot be used (multimodal.data.errors.DataError: a corrupt
image, a missing file, an empty caption...) stop the pipeline naming the
record, or with config.input.on_error='skip' are dropped and counted per
reason (`Preprocess.skipped`); more than max_skip_fraction skipped is an
error.

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
import os
import threading
from typing import Any

from absl import logging
import grain
import numpy as np

from multimodal import registry
from multimodal.data import kinds as kinds_lib
from multimodal.data import sources
from multimodal.data import text as text_lib
from multimodal.data.errors import DataError
from multimodal.data.errors import ReasonCounts

ON_ERROR = ('raise', 'skip')
# Skips before the pipeline itself judges the skipped fraction (fewer are
# too noisy a sample; the trainer also checks at every log step).
_MIN_SKIPS_TO_JUDGE = 100


def open_source(dataset_cfg, split: str):
  """The random-access source of `split` named by config.dataset.source."""
  return sources.open_source(dataset_cfg, split)


def tokenizer_path(input_cfg) -> str:
  if not input_cfg.get('tokenizer'):
    raise ValueError(
        'config.input.tokenizer is not set: give a sentencepiece .model file '
        '(train one on your texts with `python -m multimodal.tokenizer train '
        '--data MANIFEST --field caption --vocab_size 8000 --out '
        'DIR/spm.model`).')
  return os.path.expanduser(input_cfg.tokenizer)


def make_tokenizer(input_cfg) -> text_lib.Tokenizer:
  return text_lib.Tokenizer(tokenizer_path(input_cfg), input_cfg.max_text_len)


@dataclasses.dataclass
class SkipCounter(ReasonCounts):
  """Records seen and skipped (per reason) in this process; thread safe."""
  seen: int = 0
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

  def __getstate__(self):
    # Grain's worker processes (config.input.num_workers) receive the
    # preprocessing pickled; a lock does not pickle, and each copy counts
    # on its own (config_checks refuses on_error='skip' with workers, whose
    # counts would not reach the trainer's metrics).
    state = dict(self.__dict__)
    del state['lock']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state, lock=threading.Lock())

  def add_seen(self):
    with self.lock:
      self.seen += 1

  def add(self, reason: str, message: str) -> bool:
    with self.lock:
      return super().add(reason, message)

  def metrics(self, prefix: str = 'data') -> dict[str, float]:
    """{'data/skipped': n, 'data/skipped/<reason>': n, 'data/seen': n}."""
    with self.lock:
      out = {f'{prefix}/skipped/{r}': float(n) for r, n in self.counts.items()}
      out[f'{prefix}/skipped'] = float(self.total)
      out[f'{prefix}/seen'] = float(self.seen)
    return out

  def check(self, max_fraction: float) -> None:
    """Raises when more than `max_fraction` of the records seen were
    skipped: a dataset that broken is a mistake, not noise."""
    with self.lock:
      skipped, seen = self.total, self.seen
      if not seen or skipped <= max_fraction * seen:
        return
      detail = '; '.join(f'{r}: {n} (e.g. {self.examples[r][0]})'
                         for r, n in sorted(self.counts.items()))
    raise RuntimeError(
        f'{skipped} of {seen} records were skipped '
        f'({100 * skipped / seen:.1f}% '
        f'> config.input.max_skip_fraction={max_fraction}): {detail}. Fix '
        'the data, or raise max_skip_fraction if that much loss is expected.')


class _CachedRecords:
  """A source whose records, once read, stay in memory
  (config.input.cache_raw): for datasets that fit in RAM and whose reading
  and deserialising cost more than their preprocessing (tfds's per-feature
  parsing, small files). Reads from grain's threads may race on a record;
  both read the same value."""

  def __init__(self, source):
    self.source = source
    self.records = {}

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    record = self.records.get(index)
    if record is None:
      record = self.records[index] = self.source[index]
    return record


class _Guarded:
  """A source whose unreadable records (DataError: a missing file, a
  truncated tar member...) come back as {'__error__': error} instead of
  raising inside grain, so Preprocess can count or report them."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    try:
      return self.source[index]
    except DataError as e:
      e.record = e.record or f'#{index}'
      return {'__error__': e}


def record_id(record: dict[str, Any]) -> str:
  rid = record.get('__key__', record.get('id', '?'))
  return rid.decode() if isinstance(rid, bytes) else str(rid)


class Preprocess:
  """Turns one raw record into one example of the batch fields in `fields`.

  `input_cfg.fields` maps output field -> record key (e.g. audio -> speech),
  and each field's kind (multimodal.data.kinds) does its preprocessing, so
  the same code reads any dataset by changing config only. Records that
  cannot be used (DataError) raise, naming the record, or with
  `input_cfg.on_error = 'skip'` are counted per reason in `self.skipped`
  and dropped.
  """

  def __init__(self, input_cfg, fields: list[str], train: bool,
               tokenizer: text_lib.Tokenizer | None = None):
    on_error = input_cfg.get('on_error', 'raise')
    if on_error not in ON_ERROR:
      raise ValueError(f'config.input.on_error={on_error!r}: use one of '
                       f'{ON_ERROR}.')
    self.on_error = on_error
    self.max_skip_fraction = input_cfg.get('max_skip_fraction', 0.01)
    self.cfg = input_cfg
    self.train = train
    self.tokenizer = tokenizer or make_tokenizer(input_cfg)
    self.kinds = {f: registry.get('field', kinds_lib.kind_of(f, input_cfg))(
        input_cfg, train=train, tokenizer=self.tokenizer) for f in fields}
    unmapped = [f for f in fields if not self.kinds[f].generated
                and f not in input_cfg.fields]
    if unmapped:
      raise ValueError(f'Fields {unmapped} have no record key: add them to '
                       'config.input.fields (output field -> record key).')
    self.fields = fields
    # Plain values: ConfigDict lookups per record are a measurable share of
    # a small dataset's preprocessing.
    self._keys = {f: input_cfg.fields[f] for f in fields
                  if not self.kinds[f].generated}
    self.aligned = [f for f in input_cfg.get('aligned_fields', ())
                    if f in fields]
    self.aligned_items = input_cfg.get('aligned_items', 0)
    self.skipped = SkipCounter()

  def keys(self) -> dict[str, str]:
    """Output field -> the record key it reads (generated fields left out)."""
    return dict(self._keys)

  def _aligned_items(self, record, rng) -> list[int]:
    """The items of the aligned lists this example holds."""
    lengths = {f: len(lookup(record, self._keys[f]))
               for f in self.aligned}
    if len(set(lengths.values())) != 1 or not min(lengths.values()):
      raise DataError('bad_aligned_lists', f'aligned fields need non-empty '
                      f'lists of one length, got lengths {lengths}')
    num = lengths[self.aligned[0]]
    if not self.aligned_items:
      return [int(rng.integers(num))]
    if num < self.aligned_items:
      raise DataError('bad_aligned_lists', f'config.input.aligned_items='
                      f'{self.aligned_items} but this record has {num} items')
    return list(range(self.aligned_items))

  def __call__(self, record: dict[str, Any], rng: np.random.Generator):
    self.skipped.add_seen()
    out = {}
    try:
      if '__error__' in record:
        raise record['__error__']
      items = self._aligned_items(record, rng) if self.aligned else None
      for field in self.fields:
        kind = self.kinds[field]
        if kind.generated:
          out[field] = kind(None, rng)
          continue
        value = lookup(record, self._keys[field])
        if field in self.aligned:
          values = [kind(value[i], rng) for i in items]
          out[field] = np.stack(values) if self.aligned_items else values[0]
        else:
          out[field] = kind(value, rng)
    except DataError as e:
      e.record = e.record or record_id(record)
      if self.on_error == 'raise':
        where = f' (file {e.path})' if e.path else ''
        raise DataError(
            e.reason, f'{e.args[0]}{where} [{e.reason}]. Fix the record, or '
            "set config.input.on_error='skip' to skip (and count) such "
            'records.', e.record, e.path) from e
      if self.skipped.add(e.reason, str(e)):
        logging.warning('Skipping record (%s): %s', e.reason, e)
      # grain keeps reading until it finds a usable record: a split where
      # (nearly) every record is bad must fail here, not spin forever.
      if self.skipped.total >= _MIN_SKIPS_TO_JUDGE:
        self.skipped.check(self.max_skip_fraction)
      return None
    return out


_MISSING = object()


def lookup(record: dict[str, Any], key: str):
  """record[key], where 'a/b' may read record['a']['b'] (sources.lookup);
  a missing key is a DataError ('missing_key')."""
  value = sources.lookup(record, key, _MISSING)
  if value is _MISSING:
    have = sorted(k for k in record if not k.startswith('__'))
    raise DataError('missing_key', f'record has no {key!r} (it has {have}); '
                    'fix config.input.fields if no record has it')
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
  if config.input.get('cache_raw'):
    source = _CachedRecords(source)
  # The pipeline runs over record indices and reads a record in a map:
  # grain's source stage measures the byte size of every record it returns
  # (a walk over each record's leaves, ~80 us for a digits record, a quarter
  # of its whole preprocessing); over plain ints that costs nothing.
  guarded = _Guarded(source)
  ds = grain.MapDataset.range(len(guarded)).map(guarded.__getitem__)
  num_records = len(ds)
  if not num_records:
    raise ValueError(f'Split {split!r} of {config.dataset.get("source")} has '
                     'no records; check config.dataset.')
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
