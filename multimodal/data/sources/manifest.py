"""`source = 'jsonl'` and `source = 'csv'`: a manifest file per split whose
records name media files (or hold text inline).

Config keys (config.dataset):
  splits         split name -> manifest path (absolute, or relative to the
                 current directory), e.g. {'train': 'data/train.jsonl'}.
  path_keys      record keys whose values are file paths, relative to the
                 manifest's directory (absolute allowed); the source reads
                 those files and returns their bytes. Default ().
  delimiter      csv only: the column separator; default tab for .tsv and
                 comma otherwise ('tab' or '\\t' also mean tab). open_clip's
                 CSVs are tab-separated with columns filepath and title.
  required_keys  csv only: columns that must exist (checked at open, with a
                 clear error), besides path_keys. Default ().

JSONL: one JSON object per line; blank lines are skipped. Values pass
through as parsed (text, lists of captions, numbers, nested objects).
Random access uses the byte offset of every line, found once at open
(int64 arrays, 16 bytes a record); a line that is not a JSON object raises
RecordError 'bad_json' when it is read, so one bad line costs one record.

CSV: the first row is the header (column names, the record keys); values
are strings. Random access uses the byte span of every row, found once at
open by running the csv parser over the file while counting the bytes of
the physical lines it consumes: a quoted field may hold newlines, so rows
cannot be found by splitting on newlines, but the parser pulls exactly the
lines of one row before returning it, which gives exact spans without
keeping the parsed rows in memory. A row with the wrong number of columns,
broken quoting or text that is not UTF-8 raises RecordError 'bad_row'.

A path that does not exist raises RecordError 'missing_file' (other read
failures: 'unreadable_file'); an empty path value is 'missing_file' too.
"""
from __future__ import annotations

import array
import csv
import io
import json
import os
from typing import Any, Sequence

import numpy as np

from multimodal import registry
from multimodal.data.sources import base


class _ManifestSource(base.Source):
  """Shared by JSONL and CSV: spans of records in one file, path keys."""

  format = '?'

  def __init__(self, path: str, path_keys: Sequence[str] = ()):
    self.path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f'{self.format} manifest not found: '
                              f'{self.path}.')
    self.root = os.path.dirname(self.path)
    self.path_keys = tuple(path_keys)
    self._name = os.path.basename(self.path)
    self._files = base.FileHandles()
    # Byte offset, byte length and 1-based line number of each record.
    self._offsets = np.zeros(0, np.int64)
    self._lengths = np.zeros(0, np.int64)
    self._lines = np.zeros(0, np.int64)

  def __len__(self) -> int:
    return len(self._offsets)

  def _record_id(self, index: int) -> str:
    return f'{self._name}:{int(self._lines[index])}'

  def _span(self, index: int, rid: str) -> bytes:
    size = int(self._lengths[index])
    try:
      data = self._files.pread(self.path, size, int(self._offsets[index]))
    except OSError as e:
      raise base.RecordError('unreadable_file', rid, f'cannot read the '
                             f'manifest ({e.strerror or e})', self.path)
    if len(data) != size:
      raise base.RecordError('unreadable_file', rid, 'the manifest is '
                             'shorter than when it was opened (changed '
                             'since?)', self.path)
    return data

  def _read_paths(self, record: dict[str, Any], rid: str) -> dict[str, Any]:
    for key in self.path_keys:
      if key not in record:
        continue  # validate() reports missing keys
      value = record[key]
      if isinstance(value, list):
        record[key] = [self._read_path(key, v, rid) for v in value]
      else:
        record[key] = self._read_path(key, value, rid)
    return record

  def _read_path(self, key: str, value, rid: str) -> bytes:
    if not isinstance(value, str):
      raise base.RecordError('bad_path', rid, f'{key!r} should be a file '
                             f'path, got {type(value).__name__} {value!r}',
                             self.path)
    if not value.strip():
      raise base.RecordError('missing_file', rid, f'{key!r} is an empty '
                             'path', self.path)
    path = os.path.join(self.root, os.path.expanduser(value))
    return base.read_file(path, rid)

  def describe(self) -> str:
    keys = f', files under {self.path_keys}' if self.path_keys else ''
    return f'{self.format} {self.path}: {len(self)} records{keys}'


class JsonlSource(_ManifestSource):
  """Records of a JSON-lines manifest (one object per line)."""

  format = 'jsonl'

  def __init__(self, path: str, path_keys: Sequence[str] = ()):
    super().__init__(path, path_keys)
    offsets, lengths, lines = (array.array('q') for _ in range(3))
    pos = 0
    with open(self.path, 'rb') as f:
      for lineno, line in enumerate(f, 1):
        if line.strip():
          offsets.append(pos)
          lengths.append(len(line))
          lines.append(lineno)
        pos += len(line)
    self._offsets, self._lengths, self._lines = (
        np.frombuffer(a, np.int64).copy() for a in (offsets, lengths, lines))

  def _read(self, index: int) -> dict[str, Any]:
    rid = self._record_id(index)
    data = self._span(index, rid)
    try:
      record = json.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
      raise base.RecordError('bad_json', rid, f'not valid JSON ({e})',
                             self.path) from None
    if not isinstance(record, dict):
      raise base.RecordError('bad_json', rid, f'a JSON '
                             f'{type(record).__name__}, not an object',
                             self.path)
    record['__key__'] = rid
    return self._read_paths(record, rid)


class CsvSource(_ManifestSource):
  """Records of a CSV/TSV manifest with a header row."""

  format = 'csv'

  def __init__(self, path: str, path_keys: Sequence[str] = (),
               delimiter: str | None = None,
               required_keys: Sequence[str] = ()):
    super().__init__(path, path_keys)
    self.delimiter = _delimiter(self.path, delimiter)
    self.columns, spans = _index_rows(self.path, self.delimiter)
    if len(set(self.columns)) != len(self.columns):
      dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
      raise ValueError(f'CSV {self.path} repeats columns {dupes} in its '
                       'header; rename them.')
    for what, keys in (('path_keys', self.path_keys),
                       ('required_keys', required_keys)):
      missing = [k for k in keys if k not in self.columns]
      if missing:
        raise ValueError(
            f'CSV {self.path} has no column {missing[0]!r} (from '
            f'config.dataset.{what}); its columns are {self.columns} with '
            f'delimiter {self.delimiter!r}. Fix the key, or set '
            'config.dataset.delimiter if the header was not split.')
    self._offsets, self._lengths, self._lines = spans

  def _read(self, index: int) -> dict[str, Any]:
    rid = self._record_id(index)
    data = self._span(index, rid)
    try:
      lines = [line.decode('utf-8') for line in io.BytesIO(data)]
      rows = list(csv.reader(lines, delimiter=self.delimiter))
    except UnicodeDecodeError as e:
      raise base.RecordError('bad_row', rid, f'not UTF-8 text ({e})',
                             self.path) from None
    except csv.Error as e:
      raise base.RecordError('bad_row', rid, f'cannot be parsed ({e})',
                             self.path) from None
    if len(rows) != 1 or len(rows[0]) != len(self.columns):
      got = len(rows[0]) if len(rows) == 1 else f'{len(rows)} rows'
      raise base.RecordError('bad_row', rid, f'has {got} columns, the '
                             f'header has {len(self.columns)}', self.path)
    record = dict(zip(self.columns, rows[0]))
    record['__key__'] = rid
    return self._read_paths(record, rid)

  def describe(self) -> str:
    return super().describe() + f', columns {self.columns}'


def _delimiter(path: str, delimiter: str | None) -> str:
  if delimiter is None or delimiter == '':
    return '\t' if path.lower().endswith('.tsv') else ','
  if delimiter in ('tab', '\\t'):
    return '\t'
  if len(delimiter) != 1:
    raise ValueError(f'config.dataset.delimiter must be one character (or '
                     f"'tab'), got {delimiter!r}.")
  return delimiter


def _index_rows(path: str, delimiter: str):
  """(header columns, (offsets, lengths, line numbers) of the data rows)."""
  consumed = [0, 0]  # bytes, physical lines handed to the parser so far

  def lines(f):
    for raw in f:
      consumed[0] += len(raw)
      consumed[1] += 1
      text = raw.decode('utf-8', errors='replace')  # reading re-checks
      yield text.lstrip('\ufeff') if consumed[1] == 1 else text

  offsets, lengths, linenos = (array.array('q') for _ in range(3))
  with open(path, 'rb') as f:
    reader = csv.reader(lines(f), delimiter=delimiter)
    try:
      columns = next(reader)
    except StopIteration:
      raise ValueError(f'CSV {path} is empty; it needs a header row naming '
                       'its columns.') from None
    except csv.Error as e:
      raise ValueError(f'CSV {path}: cannot parse the header row ({e}).'
                       ) from None
    start, start_line = consumed[0], consumed[1] + 1
    while True:
      try:
        row = next(reader)
      except StopIteration:
        break
      except csv.Error:
        row = None  # keep its span: reading it reports 'bad_row'
      if row != []:  # [] is a blank line
        offsets.append(start)
        lengths.append(consumed[0] - start)
        linenos.append(start_line)
      start, start_line = consumed[0], consumed[1] + 1
  spans = tuple(np.frombuffer(a, np.int64).copy()
                for a in (offsets, lengths, linenos))
  return columns, spans


def _manifest_path(dataset_cfg, split: str, fmt: str, example: str) -> str:
  splits = base.cfg_require(dataset_cfg, 'splits', fmt,
                            f"{{'train': '{example}'}}")
  if split not in splits:
    raise ValueError(f'Split {split!r} is not in config.dataset.splits; it '
                     f'has {sorted(splits)}.')
  if not splits[split]:
    raise ValueError(f'config.dataset.splits[{split!r}] is empty; set it to '
                     f'the {fmt} manifest of that split, e.g. {example!r}.')
  path = os.path.abspath(os.path.expanduser(splits[split]))
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'The {fmt} manifest of split {split!r} does not exist: {path} '
        f'(config.dataset.splits[{split!r}] = {splits[split]!r}; relative '
        f'paths are relative to the current directory, {os.getcwd()}).')
  return path


def _check(fmt: str, example: str):
  def check(dataset_cfg, splits, keys):
    del keys  # known only by reading a record (or a CSV's header)
    return base.check_each_split(
        dataset_cfg, splits,
        lambda cfg, split: _manifest_path(cfg, split, fmt, example))
  return check


@registry.register('source', 'jsonl')
@base.checked_by(_check('jsonl', 'data/train.jsonl'))
def open_jsonl(dataset_cfg, split: str) -> JsonlSource:
  path = _manifest_path(dataset_cfg, split, 'jsonl', 'data/train.jsonl')
  return JsonlSource(path, base.cfg_keys(dataset_cfg, 'path_keys'))


@registry.register('source', 'csv')
@base.checked_by(_check('csv', 'data/train.csv'))
def open_csv(dataset_cfg, split: str) -> CsvSource:
  path = _manifest_path(dataset_cfg, split, 'csv', 'data/train.csv')
  return CsvSource(path, base.cfg_keys(dataset_cfg, 'path_keys'),
                   delimiter=base.cfg_get(dataset_cfg, 'delimiter'),
                   required_keys=base.cfg_keys(dataset_cfg, 'required_keys'))
