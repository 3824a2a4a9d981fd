"""`--data` / `--split` / `--path_keys` / `--data_opt`: the source to filter,
as the trainer's config.dataset gives it.

  --data FORMAT:WHERE      jsonl:data/train.jsonl, csv:data/train.tsv,
                           webdataset:'shards/{00000..00099}.tar'
                           (WHERE becomes config.dataset.splits[SPLIT]);
                           coco_captions:/data/coco, librispeech:/data/LS
                           (config.dataset.root); tfds:NAME
                           (config.dataset.name)
  --data PATH              a .jsonl / .csv / .tsv manifest or .tar shards
  --data SOURCE            any other registered source by name, e.g.
                           digits_trimodal, with its settings from --data_opt
  --split SPLIT            the split (sliced as the trainer's: train[:90%])
  --path_keys a,b          config.dataset.path_keys of a manifest
  --data_opt KEY=VALUE     any other config.dataset key (repeatable; 'a.b'
                           for nested ones), the value read as a Python
                           literal when it is one, as the trainer's
                           --config.dataset.KEY=VALUE: data_dir=data,
                           delimiter=tab, index_dir=/tmp/idx
"""
from __future__ import annotations

import ast
import os
from typing import Iterable

from multimodal import registry
from multimodal.data import sources

_BY_SPLIT = ('jsonl', 'csv', 'webdataset')
_BY_ROOT = ('coco_captions', 'librispeech')
_EXTENSIONS = (('.jsonl', 'jsonl'), ('.json', 'jsonl'), ('.ndjson', 'jsonl'),
               ('.csv', 'csv'), ('.tsv', 'csv'), ('.tar', 'webdataset'))
FORMS = ("jsonl:PATH, csv:PATH, webdataset:PATTERN, coco_captions:ROOT, "
         "librispeech:ROOT, tfds:NAME, a .jsonl/.csv/.tsv/.tar path, or a "
         "registered source name")


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def dataset_config(data: str, split: str, *, path_keys: Iterable[str] = (),
                   options: Iterable[str] = ()) -> dict:
  """config.dataset (a dict) for `--data` and the flags beside it."""
  if not data:
    raise ValueError(f'--data is required: {FORMS}.')
  names = registry.names('source')  # the built-in ones at least
  fmt, sep, where = data.partition(':')
  if not sep or fmt not in names:
    fmt, where = None, data
    for ext, name in _EXTENSIONS:
      if data.lower().endswith(ext):
        fmt = name
    if fmt is None:
      if '/' in data or os.sep in data or os.path.exists(data):
        raise ValueError(f'--data={data!r}: cannot tell the format of this '
                         f'path; use {FORMS}.')
      # A source name; one registered by the export's config.imports (or
      # --imports) is known only once those are imported, and opening an
      # unknown one lists the registered sources.
      fmt, where = data, ''
  cfg: dict = {'source': fmt}
  split_name = sources.parse_split(split).name
  if where:
    if fmt in _BY_SPLIT:
      cfg['splits'] = {split_name: where}
    elif fmt in _BY_ROOT:
      cfg['root'] = where
    elif fmt == 'tfds':
      cfg['name'] = where
    else:
      raise ValueError(f'--data={data!r}: the {fmt!r} source takes no '
                       'location after the colon; give its settings with '
                       '--data_opt KEY=VALUE.')
  keys = tuple(k.strip() for k in path_keys if k.strip())
  if keys:
    cfg['path_keys'] = keys
  for option in options:
    key, sep, value = option.partition('=')
    if not sep or not key.strip():
      raise ValueError(f'--data_opt {option!r} is not KEY=VALUE, e.g. '
                       'data_dir=data or "path_keys=(\'image\',)".')
    node = cfg
    parts = key.strip().split('.')
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = _literal(value)
  return cfg
