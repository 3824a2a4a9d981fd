"""`source = 'webdataset'`: tar shards as img2dataset writes them, read by
random access.

Layout: each shard (00000.tar, ...) holds the files of many records; a
record is the members sharing a key (webdataset's convention: the member
path up to the first dot of its basename; the rest, lower-cased, is the
extension), e.g. 000000042.jpg, 000000042.txt, 000000042.json; audio as
KEY.flac / KEY.wav / KEY.mp3.

Config keys (config.dataset):
  splits     split name -> shard pattern(s): a brace pattern
             ('shards/{00000..00009}.tar': zero-padded ranges, comma lists
             'a{1,2}', several braces), a glob ('shards/*.tar'), or a list
             of them. Relative paths are relative to the current directory.
  index_dir  where the shard indexes are cached (default: next to each
             shard as SHARD.tar.index.json; set it when the shard directory
             is not writable).

A record is {extension: value, '__key__': 'SHARD:KEY'}: text extensions
(txt, text, caption, cls, ...) decoded to str, json parsed (a parse failure
is RecordError 'bad_json'), anything else bytes.

Random access: opening a shard the first time indexes it (Python's tarfile
reads its headers: member offset and size, grouped by key) and caches the
index as JSON with the shard's size and mtime; later opens reuse it unless
the shard changed. Reading a record is one `pread` per member, so shuffling,
per-process sharding and exact resume work as for array_record.

The PyPI `webdataset` package (1.x) is not used: it streams shards
sequentially (an IterableDataset with shuffle buffers), which cannot give
the random access grain's index-based shuffling, sharding and checkpointed
positions need; tar headers are simple enough for the standard library.

Damaged shards: non-regular members (directories, links) and members with
no extension are ignored. A truncated shard keeps the records whose headers
were read: a member whose data is cut off raises RecordError
'unreadable_member' when read (so validate counts it), and the records
whose headers are gone are lost, which describe() and a warning report
(with the byte at which indexing stopped). Compressed shards (.tar.gz) are
refused with a clear error: they cannot be read at random.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import posixpath
import re
import tarfile
import tempfile
from typing import Any, Sequence

from absl import logging
import numpy as np

from multimodal import registry
from multimodal.data.sources import base

INDEX_VERSION = 1
INDEX_SUFFIX = '.index.json'
# Extensions decoded to str (matched on the last dotted part, so
# 'en.txt' is text too).
TEXT_EXTENSIONS = frozenset({'txt', 'text', 'caption', 'cls', 'cls2',
                             'transcript', 'id', 'index', 'inx'})
JSON_EXTENSIONS = frozenset({'json'})


# ----------------------------------------------------------------------------
# Shard patterns.

_RANGE = re.compile(r'^(-?\d+)\.\.(-?\d+)$')


def expand_braces(pattern: str) -> list[str]:
  """All strings a brace pattern names, in order.

  '{00000..00003}.tar' -> ['00000.tar', ..., '00003.tar'] (zero-padded to
  the width of the bounds when either has a leading zero), 'a{x,y}b' ->
  ['axb', 'ayb']; braces may repeat and nest. Raises ValueError for an
  unbalanced brace.
  """
  start = pattern.find('{')
  if start < 0:
    if '}' in pattern:
      raise ValueError(f'Unbalanced "}}" in shard pattern {pattern!r}.')
    return [pattern]
  depth, stop = 0, -1
  for i in range(start, len(pattern)):
    depth += {'{': 1, '}': -1}.get(pattern[i], 0)
    if depth == 0:
      stop = i
      break
  if stop < 0:
    raise ValueError(f'Unbalanced "{{" in shard pattern {pattern!r}.')
  head, body, tail = pattern[:start], pattern[start + 1:stop], pattern[
      stop + 1:]
  match = _RANGE.match(body)
  if match:
    lo_text, hi_text = match.groups()
    lo, hi = int(lo_text), int(hi_text)
    padded = any(t.lstrip('-').startswith('0') and len(t.lstrip('-')) > 1
                 for t in (lo_text, hi_text))
    width = max(len(lo_text), len(hi_text)) if padded else 0
    step = 1 if hi >= lo else -1
    options = [str(v).zfill(width) for v in range(lo, hi + step, step)]
  else:
    options = _split_top_level(body)
  tails = expand_braces(tail)
  return [p for option in options for h in expand_braces(head + option)
          for p in (h + t for t in tails)]


def _split_top_level(body: str) -> list[str]:
  parts, depth, current = [], 0, []
  for ch in body:
    if ch == ',' and depth == 0:
      parts.append(''.join(current))
      current = []
      continue
    depth += {'{': 1, '}': -1}.get(ch, 0)
    current.append(ch)
  parts.append(''.join(current))
  return parts


def shard_paths(patterns: str | Sequence[str]) -> list[str]:
  """Absolute shard paths named by brace patterns and/or globs.

  Braces are expanded first; a resulting name with *, ? or [ is a glob
  (sorted matches). Raises FileNotFoundError naming what matched nothing.
  """
  if isinstance(patterns, str):
    patterns = [patterns]
  paths = []
  for pattern in patterns:
    for name in expand_braces(os.path.expanduser(pattern)):
      if glob.has_magic(name):
        found = sorted(glob.glob(name))
        if not found:
          raise FileNotFoundError(f'No shard matches {name!r} (from '
                                  f'{pattern!r}, relative to {os.getcwd()}).')
        paths.extend(found)
      elif not os.path.isfile(name):
        raise FileNotFoundError(f'Shard {os.path.abspath(name)} does not '
                                f'exist (from pattern {pattern!r}).')
      else:
        paths.append(name)
  if not paths:
    raise FileNotFoundError(f'The shard patterns {patterns!r} name no file.')
  return [os.path.abspath(p) for p in paths]


# ----------------------------------------------------------------------------
# Shard indexes.


def index_path(shard: str, index_dir: str | None = None) -> str:
  """Where the index of `shard` is cached."""
  if not index_dir:
    return shard + INDEX_SUFFIX
  # Shards in different directories may share a basename.
  tag = hashlib.sha1(os.path.abspath(shard).encode()).hexdigest()[:10]
  return os.path.join(os.path.expanduser(index_dir),
                      f'{os.path.basename(shard)}.{tag}{INDEX_SUFFIX}')


def build_index(shard: str) -> dict[str, Any]:
  """Reads the tar headers of `shard`.

  Returns a JSON-able dict: 'records' = [[key, [[ext, offset, size], ...]],
  ...] in order of first appearance, 'ignored' = members skipped (not
  regular files, no extension), 'problem' = why indexing stopped early
  (None if it read to the end).
  """
  stat = os.stat(shard)
  with open(shard, 'rb') as f:
    if f.read(2) == b'\x1f\x8b':
      raise ValueError(f'Shard {shard} is gzip-compressed; random access '
                       'needs uncompressed tar: gunzip it (or re-shard '
                       'without compression).')
  groups: dict[str, list[list[Any]]] = {}
  ignored, problem = 0, None
  try:
    tar = tarfile.open(shard, mode='r:')
  except tarfile.TarError as e:
    tar, problem = None, f'no readable tar header at its start ({e})'
  while tar is not None:
    try:
      member = tar.next()
    except tarfile.TarError as e:
      problem = f'stopped reading headers at byte {tar.offset}: {e}'
      break
    if member is None:
      # tarfile also ends quietly at a damaged or cut-off header; only
      # zero padding may follow a real end.
      if not _zeros_from(shard, tar.offset):
        problem = (f'stopped reading headers at byte {tar.offset} of '
                   f'{stat.st_size}: the header there is damaged or cut off')
      elif stat.st_size - tar.offset < tarfile.BLOCKSIZE:
        problem = (f'no end-of-archive block after byte {tar.offset}: the '
                   'shard was cut short between members')
      break
    dirname, basename = posixpath.split(member.name)
    dot = basename.find('.')
    if not member.isreg() or dot <= 0:
      ignored += 1
      continue
    key = posixpath.join(dirname, basename[:dot])
    ext = basename[dot + 1:].lower()
    members = groups.setdefault(key, [])
    if any(m[0] == ext for m in members):
      ignored += 1  # a repeated KEY.EXT: the first one counts
      continue
    members.append([ext, member.offset_data, member.size])
  if tar is not None:
    tar.close()
  return {'version': INDEX_VERSION, 'shard': os.path.basename(shard),
          'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns,
          'records': [[k, m] for k, m in groups.items()],
          'ignored': ignored, 'problem': problem}


def _zeros_from(path: str, offset: int) -> bool:
  """Whether every byte of `path` from `offset` on is zero."""
  with open(path, 'rb') as f:
    f.seek(offset)
    while chunk := f.read(1 << 20):
      if chunk.count(0) != len(chunk):
        return False
  return True


def load_index(shard: str, index_dir: str | None = None
               ) -> tuple[dict[str, Any], bool]:
  """(index of `shard`, whether it was built now rather than reused).

  A cached index is reused when its version, and the shard's size and
  mtime, match; otherwise the shard is indexed and the index written
  (atomically) for next time. If it cannot be written, a warning says how
  to fix that and the index is used from memory.
  """
  path = index_path(shard, index_dir)
  stat = os.stat(shard)
  try:
    with open(path, encoding='utf-8') as f:
      index = json.load(f)
    if (index.get('version') == INDEX_VERSION and
        index.get('size') == stat.st_size and
        index.get('mtime_ns') == stat.st_mtime_ns):
      return index, False
  except (OSError, ValueError):
    pass  # absent or unreadable: rebuild
  index = build_index(shard)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path),
                               prefix='.index-', suffix='.tmp')
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      json.dump(index, f, separators=(',', ':'))
    os.replace(tmp, path)  # readers never see a half-written index
  except OSError as e:
    logging.warning('Could not cache the index of shard %s at %s (%s); it '
                    'will be rebuilt on every open. Set '
                    'config.dataset.index_dir to a writable directory.',
                    shard, path, e)
  return index, True


def index_shards(patterns: str | Sequence[str], index_dir: str | None = None,
                 processes: int | None = None) -> tuple[int, int]:
  """Caches the indexes of all shards ahead of training, in parallel.

  Indexing reads every tar header in Python (about 50 us a member, so a
  shard of 10,000 image-text records takes about 1.5 s); for many shards,
  run this once (e.g. python -m multimodal.data.sources.index_webdataset
  'shards/{00000..09999}.tar' --processes 16) rather than on the first
  training open. Returns (indexes built, indexes already cached).
  """
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  import functools  # pylint: disable=g-import-not-at-top
  paths = shard_paths(patterns)
  load = functools.partial(_built, index_dir=index_dir)
  with concurrent.futures.ProcessPoolExecutor(processes) as pool:
    built = sum(pool.map(load, paths, chunksize=8))
  return built, len(paths) - built


def _built(shard: str, index_dir: str | None) -> bool:
  return load_index(shard, index_dir)[1]


# ----------------------------------------------------------------------------
# The source.


class WebDatasetSource(base.Source):
  """Records of uncompressed tar shards, read by offset.

  Args:
    shards: shard paths or patterns (see shard_paths).
    index_dir: where indexes are cached (None: next to each shard).

  Attributes:
    shards: absolute shard paths.
    num_built, num_reused: shard indexes built at open vs reused.
    problems: shard path -> why its indexing stopped early.
  """

  def __init__(self, shards: str | Sequence[str],
               index_dir: str | None = None):
    self.shards = shard_paths(shards)
    self.index_dir = index_dir
    self.num_built = self.num_reused = self.num_ignored = 0
    self.problems: dict[str, str] = {}
    exts: dict[str, int] = {}
    keys, rec_shard, rec_start = [], [], [0]
    m_ext, m_offset, m_size = [], [], []
    for s, shard in enumerate(self.shards):
      index, built = load_index(shard, index_dir)
      self.num_built += built
      self.num_reused += not built
      self.num_ignored += index['ignored']
      if index['problem']:
        self.problems[shard] = index['problem']
        logging.warning('Shard %s is damaged: indexing %s; records after '
                        'that point are lost.', shard, index['problem'])
      for key, members in index['records']:
        keys.append(key)
        rec_shard.append(s)
        for ext, offset, size in members:
          m_ext.append(exts.setdefault(ext, len(exts)))
          m_offset.append(offset)
          m_size.append(size)
        rec_start.append(len(m_ext))
    # Flat arrays, not per-record dicts: compact to keep and to pickle.
    self._keys = np.array(keys, dtype=str)
    self._shard = np.array(rec_shard, np.int32)
    self._start = np.array(rec_start, np.int64)
    self._exts = list(exts)
    self._m_ext = np.array(m_ext, np.int32)
    self._m_offset = np.array(m_offset, np.int64)
    self._m_size = np.array(m_size, np.int64)
    self._names = [os.path.basename(s) for s in self.shards]
    self._files = base.FileHandles()

  def __len__(self) -> int:
    return len(self._keys)

  def _read(self, index: int) -> dict[str, Any]:
    shard = self.shards[self._shard[index]]
    key = str(self._keys[index])
    rid = f'{self._names[self._shard[index]]}:{key}'
    record: dict[str, Any] = {'__key__': rid}
    for j in range(self._start[index], self._start[index + 1]):
      ext, size = self._exts[self._m_ext[j]], int(self._m_size[j])
      try:
        data = self._files.pread(shard, size, int(self._m_offset[j]))
      except OSError as e:
        raise base.RecordError('unreadable_file', rid, f'cannot read the '
                               f'shard ({e.strerror or e})', shard) from None
      if len(data) != size:
        raise base.RecordError(
            'unreadable_member', rid, f'member {key}.{ext} is cut off: '
            f'{len(data)} of {size} bytes (truncated shard?)', shard)
      record[ext] = _decode(ext, data, rid, f'{key}.{ext}', shard)
    return record

  def describe(self) -> str:
    where = (self.shards[0] if len(self.shards) == 1 else
             f'{len(self.shards)} shards {self.shards[0]} .. '
             f'{os.path.basename(self.shards[-1])}')
    text = (f'webdataset {where}: {len(self)} records; indexes built '
            f'{self.num_built}, reused {self.num_reused}')
    if self.num_ignored:
      text += f'; {self.num_ignored} members ignored'
    if self.problems:
      text += f'; {len(self.problems)} damaged shards (records lost)'
    return text


def _decode(ext: str, data: bytes, rid: str, member: str, shard: str):
  last = ext.rsplit('.', 1)[-1]
  if last in TEXT_EXTENSIONS or last in JSON_EXTENSIONS:
    try:
      text = data.decode('utf-8')
      return json.loads(text) if last in JSON_EXTENSIONS else text
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
      reason = 'bad_json' if last in JSON_EXTENSIONS else 'bad_text'
      raise base.RecordError(reason, rid, f'member {member} cannot be '
                             f'parsed ({e})', shard) from None
  return data


def _patterns(dataset_cfg, split: str):
  """The shard patterns config.dataset.splits gives `split`."""
  splits = base.cfg_require(dataset_cfg, 'splits', 'webdataset',
                            "{'train': 'shards/{00000..00009}.tar'}")
  if split not in splits:
    raise ValueError(f'Split {split!r} is not in config.dataset.splits; it '
                     f'has {sorted(splits)}.')
  patterns = splits[split]
  if not patterns:
    raise ValueError(f'config.dataset.splits[{split!r}] is empty; set it to '
                     "the shards of that split, e.g. "
                     "'shards/{00000..00009}.tar'.")
  return patterns if isinstance(patterns, str) else list(patterns)


def _check(dataset_cfg, splits, keys):
  del keys  # known only by reading a shard
  return base.check_each_split(
      dataset_cfg, splits,
      lambda cfg, split: shard_paths(_patterns(cfg, split)))


@registry.register('source', 'webdataset')
@base.checked_by(_check)
def open_webdataset(dataset_cfg, split: str) -> WebDatasetSource:
  return WebDatasetSource(_patterns(dataset_cfg, split),
                          index_dir=base.cfg_get(dataset_cfg, 'index_dir'))

