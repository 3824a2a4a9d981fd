"""What every data source shares: the record error, split slicing,
`open_source` and the pre-training `validate` pass.

A source is a random-access sequence of records (what grain's
`MapDataset.source` reads):

  len(source)      number of records
  source[i]        dict: record key -> value. Values are `str` (text),
                   `bytes` (encoded media read from files), `list[str]`
                   (several captions), int/float, or dicts (parsed JSON).
                   Every record has '__key__', a human-readable id such as
                   'train.jsonl:17' or '00003.tar:000000042'.
  source.describe() one line for logs: format, path(s), number of records.

Sources pickle without open file handles (grain sends them to worker
processes); `FileHandles` opens them again on first use.

A source raises `RecordError` when one record cannot be read, so callers
can count and skip it rather than stop a run.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import numbers
import os
import re
import threading
from typing import Any, Iterable

from multimodal import registry
from multimodal.data.errors import DataError
from multimodal.data.errors import ReasonCounts


class RecordError(DataError):
  """One record that a source cannot read (a DataError, so the pipeline
  counts it per reason with config.input.on_error='skip').

  Attributes:
    reason: short snake_case kind of problem ('missing_file', 'bad_json',
      'bad_row', 'unreadable_member', ...), what `validate` counts by.
    record: human-readable record id, e.g. 'train.jsonl:17'.
    path: the file involved, or None.
    message: what is wrong, one line (also args[0], as for DataError).
  """

  def __init__(self, reason: str, record: str, message: str,
               path: str | None = None):
    message = ' '.join(str(message).split())  # always one line
    super().__init__(reason, message, record, path)
    self.message = message

  def __reduce__(self):
    # Exceptions pickle through their args, which hold the message only.
    return (RecordError, (self.reason, self.record, self.message, self.path))

  def __str__(self) -> str:
    where = f' (file {self.path})' if self.path else ''
    return f'Record {self.record}{where}: {self.message} [{self.reason}]'


class Source:
  """Base class of the random-access sources; subclasses define `__len__`,
  `_read(index) -> dict` (index in [0, len)) and `describe()`."""

  def __len__(self) -> int:
    raise NotImplementedError

  def _read(self, index: int) -> dict[str, Any]:
    raise NotImplementedError

  def describe(self) -> str:
    raise NotImplementedError

  def __getitem__(self, index) -> dict[str, Any]:
    return self._read(check_index(index, len(self)))

  def __repr__(self) -> str:
    return f'<{self.describe()}>'


def check_index(index, length: int) -> int:
  """`index` (int or NumPy integer, negative counts from the end) as an int
  in [0, length); IndexError outside (which also ends `for r in source`)."""
  if not isinstance(index, numbers.Integral):
    raise TypeError(f'Sources are indexed by int, got {type(index).__name__}'
                    f' ({index!r}).')
  index = int(index)
  if index < 0:
    index += length
  if not 0 <= index < length:
    raise IndexError(f'Record index {index} is out of range for a source of '
                     f'{length} records.')
  return index


class FileHandles:
  """Read-only file descriptors opened on first use, read with `os.pread`.

  `pread` takes the offset as an argument, so grain's reader threads can
  share one descriptor without a seek/read race. Pickling drops the
  descriptors (they are per process); they reopen on the next read.
  """

  def __init__(self):
    self._fds: dict[str, int] = {}
    self._lock = threading.Lock()

  def pread(self, path: str, size: int, offset: int) -> bytes:
    """Up to `size` bytes of `path` from byte `offset` (fewer at its end)."""
    fd = self._fds.get(path)
    if fd is None:
      with self._lock:
        fd = self._fds.get(path)
        if fd is None:
          fd = self._fds[path] = os.open(path, os.O_RDONLY)
    chunks = []
    while size > 0:  # pread may return less than asked for, not only at EOF
      chunk = os.pread(fd, size, offset)
      if not chunk:
        break
      chunks.append(chunk)
      size -= len(chunk)
      offset += len(chunk)
    return b''.join(chunks)

  def close(self) -> None:
    with self._lock:
      fds, self._fds = self._fds, {}
    for fd in fds.values():
      try:
        os.close(fd)
      except OSError:
        pass

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass  # interpreter shutdown: os may be gone already

  def __getstate__(self):
    return {}

  def __setstate__(self, state):
    del state
    self.__init__()


def read_file(path: str, record: str) -> bytes:
  """The whole file `path` (encoded media of one record) or a RecordError:
  'missing_file' if it does not exist, 'unreadable_file' otherwise."""
  try:
    with open(path, 'rb') as f:
      return f.read()
  except FileNotFoundError:
    raise RecordError('missing_file', record, 'file does not exist',
                      path) from None
  except OSError as e:
    raise RecordError('unreadable_file', record,
                      f'cannot read the file ({e.strerror or e})',
                      path) from None


def cfg_get(cfg, key: str, default=None):
  """`cfg[key]` for an ml_collections ConfigDict or a dict; default if unset
  or None."""
  value = cfg.get(key, default) if hasattr(cfg, 'get') else getattr(
      cfg, key, default)
  return default if value is None else value


def cfg_keys(cfg, key: str) -> tuple[str, ...]:
  """A tuple of record keys from config; a lone string is one key (not a
  sequence of one-letter keys)."""
  value = cfg_get(cfg, key, ())
  return (value,) if isinstance(value, str) else tuple(value)


def checked_by(check):
  """Decorator that gives a source opener its config check.

  `check(dataset_cfg, splits, keys) -> [problem, ...]` reports what is
  wrong with config.dataset for this source without reading a record:
  settings, split names, paths, and record keys the source's metadata
  lists. `splits` maps the config key to the split name without its slice
  ({'train_split': 'train', 'eval_split': 'test'}); `keys` is
  config.input.fields (output field -> the record key it reads). Each
  problem is one line naming its key (multimodal.config_checks.problem).
  Run by multimodal.config_checks.check before training; a source without
  a check is opened as before.
  """
  def wrap(opener):
    opener.check_config = check
    return opener
  return wrap


def check_each_split(dataset_cfg, splits: dict[str, str], locate
                     ) -> list[str]:
  """Problems from `locate(dataset_cfg, split)` (which finds a split's
  files and raises ValueError or OSError when it cannot) for each split."""
  from multimodal.config_checks import problem  # pylint: disable=g-import-not-at-top
  out = []
  for key, split in splits.items():
    try:
      locate(dataset_cfg, split)
    except (ValueError, OSError) as e:
      out.append(problem(key, split, str(e)))
  return out


def check_keys(keys: dict[str, str], has_key, what: str,
               have: Iterable[str]) -> list[str]:
  """Problems for the record keys (`keys`: field -> record key) for which
  `has_key(key)` is False; `what` names the records, `have` lists their
  keys."""
  from multimodal.config_checks import problem  # pylint: disable=g-import-not-at-top
  return [problem(f'input.fields.{field}', key, f'{what} records have no '
                  f'key {key!r}; they have {", ".join(sorted(have))}')
          for field, key in sorted(keys.items()) if not has_key(key)]


def cfg_require(cfg, key: str, source: str, example: str):
  value = cfg_get(cfg, key)
  if value is None or value == '':
    raise ValueError(f'The {source!r} source needs config.dataset.{key}, '
                     f'which is not set; e.g. config.dataset.{key} = '
                     f'{example}.')
  return value


# ----------------------------------------------------------------------------
# Split slicing.

_SLICE = re.compile(r'^(?P<name>[^\[\]]+)\[(?P<start>[^\[\]:]*):'
                    r'(?P<stop>[^\[\]:]*)\]$')
_BOUND = re.compile(r'^\s*(?P<value>[+-]?\d+)\s*(?P<percent>%?)\s*$')
_SLICE_HELP = ('Use NAME[START:STOP] with integers or percentages, e.g. '
               'train[:90%], train[90%:], train[-500:], train[:1000].')


@dataclasses.dataclass(frozen=True)
class SplitSlice:
  """A parsed `name[start:stop]`; a bound is (value, is_percent) or None."""
  name: str
  start: tuple[int, bool] | None = None
  stop: tuple[int, bool] | None = None

  def indices(self, length: int) -> tuple[int, int]:
    """[first, last) record positions this slice selects of `length`."""
    start, stop, _ = slice(_resolve(self.start, length),
                           _resolve(self.stop, length)).indices(length)
    return start, max(start, stop)


def _resolve(bound, length: int) -> int | None:
  if bound is None:
    return None
  value, percent = bound
  if not percent:
    return value
  # Rounding half up on the magnitude makes a[:p%] and a[p%:] complementary
  # and a[-p%:] as long as a[:p%].
  count = math.floor(abs(value) * length / 100 + 0.5)
  return -count if value < 0 else count


def parse_split(split: str) -> SplitSlice:
  """'train' -> SplitSlice('train'); 'train[:90%]' -> with bounds.

  Raises ValueError for a malformed slice (steps, single indices, percents
  beyond 100, text that is not a number).
  """
  if '[' not in split and ']' not in split:
    return SplitSlice(split.strip())
  match = _SLICE.match(split.strip())
  if not match:
    raise ValueError(f'Malformed split {split!r}. {_SLICE_HELP}')
  bounds = []
  for part in ('start', 'stop'):
    text = match.group(part)
    if not text.strip():
      bounds.append(None)
      continue
    bound = _BOUND.match(text)
    if not bound:
      raise ValueError(f'Malformed split {split!r}: {part} {text!r} is not '
                       f'an integer or a percentage. {_SLICE_HELP}')
    value, percent = int(bound.group('value')), bool(bound.group('percent'))
    if percent and abs(value) > 100:
      raise ValueError(f'Malformed split {split!r}: {text!r} is beyond '
                       f'100%. {_SLICE_HELP}')
    bounds.append((value, percent))
  return SplitSlice(match.group('name').strip(), *bounds)


class SlicedSource(Source):
  """Records [first, last) of another source, e.g. for 'train[90%:]'."""

  def __init__(self, source, split: str, first: int, last: int):
    self.source = source
    self.split = split
    self.first, self.last = first, last

  def __len__(self) -> int:
    return self.last - self.first

  def _read(self, index: int) -> dict[str, Any]:
    return self.source[self.first + index]

  def describe(self) -> str:
    inner = (self.source.describe() if hasattr(self.source, 'describe')
             else repr(self.source))
    return (f'{inner}; slice {self.split!r} = records [{self.first}, '
            f'{self.last}) -> {len(self)} records')


def open_source(dataset_cfg, split: str):
  """The random-access source of `split` of the dataset `dataset_cfg`.

  Args:
    dataset_cfg: ml_collections ConfigDict or dict; `source` names the
      format ('tfds' when unset, as before sources were configurable), the
      other keys are read by that format (see its module).
    split: a split name, optionally sliced: 'train', 'train[:90%]',
      'train[90%:]', 'train[-500:]', 'train[:1000]'.

  Returns:
    A source (see this module's docstring); a slice is applied to whatever
    the format returns.
  """
  name = cfg_get(dataset_cfg, 'source', 'tfds')
  parsed = parse_split(split)
  opener = registry.get('source', name)
  source = opener(dataset_cfg, parsed.name)
  if parsed.start is None and parsed.stop is None:
    return source
  first, last = parsed.indices(len(source))
  if last <= first:
    raise ValueError(f'Split {split!r} selects no records of the '
                     f'{len(source)} in {parsed.name!r}; widen the slice.')
  return SlicedSource(source, split, first, last)


# ----------------------------------------------------------------------------
# Validation before training.

_RAISE = object()  # lookup's default: raise KeyError
_MISSING = object()


def lookup(record: dict[str, Any], key: str, default=_RAISE):
  """record[key]; a key 'a/b' that is not itself a key reads
  record['a']['b'] (as the pipeline does). KeyError, or `default`, when
  absent."""
  if key in record:
    return record[key]
  value = record
  for part in key.split('/'):
    if not isinstance(value, dict) or part not in value:
      if default is _RAISE:
        raise KeyError(key)
      return default
    value = value[part]
  return value


@dataclasses.dataclass
class ValidationReport(ReasonCounts):
  """What `validate` found.

  Attributes:
    counts, examples: per reason (ReasonCounts); a record is counted once
      per reason, and may have several reasons.
    num_checked: records read.
    bad: indices (into the source) of the records with any problem.
    description: the source's describe().
  """
  num_checked: int = 0
  bad: set[int] = dataclasses.field(default_factory=set)
  description: str = ''

  @property
  def ok(self) -> bool:
    return not self.bad

  def add_record(self, index: int, reason: str, message: str) -> None:
    """Counts a problem of record `index`."""
    self.bad.add(index)
    self.add(reason, message)

  def summary(self) -> str:
    """Multi-line report: totals, then each reason's count and examples."""
    n, bad = self.num_checked, len(self.bad)
    share = f' ({100 * bad / n:.2f}%)' if n else ''
    lines = [f'Checked {n} records of {self.description or "the source"}: '
             f'{bad} with problems{share}.']
    for reason, count in sorted(self.counts.items(), key=lambda kv: -kv[1]):
      lines.append(f'  {reason}: {count}')
      lines.extend(f'    e.g. {m}' for m in self.examples.get(reason, ()))
    return '\n'.join(lines)


def validate(source, keys: Iterable[str], text_keys: Iterable[str] = (),
             max_records: int | None = None) -> ValidationReport:
  """Reads records and counts their problems by reason.

  Args:
    source: a source (or any sequence of record dicts).
    keys: record keys every record needs ('a/b' reads nested dicts).
    text_keys: keys whose values are text or lists of texts (also
      required); empty or whitespace text, an empty list, or a list with an
      empty text is 'empty_text', a value that is not text is 'not_text'.
    max_records: check only the first max_records records (None: all).

  Returns:
    A ValidationReport; reasons are the sources' RecordError reasons
    ('missing_file', 'bad_json', 'bad_row', 'unreadable_member', ...) plus
    'missing_key', 'empty_text' and 'not_text'. Undecodable media (a
    truncated PNG) is not seen here: the source returns its bytes, and
    decoding (the pipeline's preprocess) reports it.
  """
  text_keys = list(text_keys)
  keys = list(dict.fromkeys([*keys, *text_keys]))
  total = len(source)
  n = total if max_records is None else min(total, max_records)
  report = ValidationReport(description=(
      source.describe() if hasattr(source, 'describe') else repr(source)))
  for i in range(n):
    report.num_checked += 1
    try:
      record = source[i]
    except RecordError as e:
      report.add_record(i, e.reason, str(e))
      continue
    rid = record.get('__key__', f'#{i}')
    problems = collections.OrderedDict()
    for key in keys:
      value = lookup(record, key, _MISSING)
      if value is _MISSING:
        have = ', '.join(sorted(k for k in record if k != '__key__'))
        problems.setdefault('missing_key',
                            f'Record {rid}: no key {key!r} (it has: {have})')
      elif key in text_keys:
        problem = text_problem(value)
        if problem:
          reason, what = problem
          problems.setdefault(reason, f'Record {rid}: {key!r} {what}')
    for reason, message in problems.items():
      report.add_record(i, reason, message)
  return report


def text_problem(value) -> tuple[str, str] | None:
  """(reason, what is wrong) for a value that should be a text or a list
  of texts, else None: 'empty_text' (empty or whitespace text, an empty
  list, a list with an empty text) or 'not_text'."""
  if isinstance(value, (str, bytes)):
    return None if _has_text(value) else ('empty_text', 'is empty')
  if isinstance(value, (list, tuple)) or (
      hasattr(value, 'ndim') and getattr(value, 'ndim', 0) == 1):
    if not len(value):
      return ('empty_text', 'is an empty list of texts')
    for j, item in enumerate(value):
      if not isinstance(item, (str, bytes)):
        return ('not_text', f'item {j} is {type(item).__name__}, not text')
      if not _has_text(item):
        return ('empty_text', f'text {j} of {len(value)} is empty')
    return None
  return ('not_text', f'is {type(value).__name__}, not text')


def _has_text(value: str | bytes) -> bool:
  if isinstance(value, bytes):
    value = value.decode('utf-8', errors='replace')
  return bool(value.strip())
