r"""python -m multimodal.filter: CLIP-score filtering of a data source.

  python -m multimodal.filter --pretrained exports/siglip \
      --data jsonl:data/train.jsonl --path_keys image --pairs image:caption \
      --keep_fraction 0.3 --out data/train_top30.jsonl

See multimodal/filter/__init__.py for what is written, data.py for the
--data forms and pairs.py for --pairs. Exit status 2 on a usage or
configuration mistake (one `error:` line; MULTIMODAL_TRACEBACK=1 shows the
traceback).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags

from multimodal import filter as filter_lib  # pylint: disable=redefined-builtin
from multimodal import registry
from multimodal.filter import cut as cut_lib
from multimodal.filter import data as data_lib

_PRETRAINED = flags.DEFINE_string(
    'pretrained', None, 'Contrastive export (or workdir) that scores.')
_DATA = flags.DEFINE_string('data', None, data_lib.FORMS + '.')
_SPLIT = flags.DEFINE_string('split', 'train', 'Split to filter (slices '
                             'allowed: train[:10%]).')
_PATH_KEYS = flags.DEFINE_list('path_keys', [], 'Manifest keys holding file '
                               'paths (config.dataset.path_keys).')
_DATA_OPT = flags.DEFINE_multi_string(
    'data_opt', [], 'Other config.dataset KEY=VALUE (repeatable).')
_IMPORTS = flags.DEFINE_list('imports', [], 'Modules registering your own '
                             'sources, fields or towers (config.imports).')
_KEEP = flags.DEFINE_float('keep_fraction', None, 'Keep this fraction of the '
                           'scored records, best first.')
_THRESHOLD = flags.DEFINE_float('threshold', None, 'Keep records scoring at '
                                'least this.')
_OUT = flags.DEFINE_string('out', None, 'The filtered manifest (*.jsonl).')
_PAIRS = flags.DEFINE_string(
    'pairs', None, 'MEDIA:TEXT record keys to score, comma-separated '
    "(e.g. 'image:caption'); default: the export's pairs.")
_COMBINE = flags.DEFINE_enum('combine', 'mean', cut_lib.COMBINE,
                             "A record's score from its pairs' scores.")
_SCORES = flags.DEFINE_string('scores', None, 'Also write every record\'s '
                              'scores (JSONL) here.')
_HISTOGRAM = flags.DEFINE_string(
    'histogram', '', 'Histogram PNG (default: OUT.hist.png; --histogram= '
    'with nothing after it is the default; "none" for no histogram).')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Rows per model call.')
_MAX_TEXTS = flags.DEFINE_integer('max_texts', 8, 'Phrasings of a text value '
                                  'scored (the first ones).')
_THREADS = flags.DEFINE_integer('num_threads', 4, 'Threads reading and '
                                'preprocessing records.')


def report(summary: dict) -> str:
  """The lines printed at the end of a run."""
  lines = [f'Scored {summary["scored"]} of {summary["records"]} records of '
           f'{summary["data"]} on {", ".join(summary["pairs"])} '
           f'({summary["combine"]} of the pairs\' cosine similarities).']
  cut, kept = summary['cut'], summary['kept']
  share = _share(kept, summary['scored'])
  lines.append(f'Kept {kept} ({share} of those scored); cut at {cut:.4f}.'
               if cut is not None else f'Kept {kept}.')
  if summary['skipped']:
    lines.append(f'Skipped {summary["skipped"]} records that cannot be '
                 'used:')
    for reason, n in summary['skipped_by_reason'].items():
      example = summary['skipped_examples'][reason][0]
      lines.append(f'  {reason}: {n}, e.g. {example}')
  else:
    lines.append('Skipped no record.')
  lines.append(f'Wrote {summary["out"]}' + (
      f' ({summary["media_written"]} media files beside it)'
      if summary['media_written'] else ''))
  for key in ('scores', 'histogram'):
    if summary[key]:
      lines.append(f'Wrote {summary[key]}')
  lines.append('Train on it with ' + summary['train_flags'])
  return '\n'.join(lines)


def _share(n, total) -> str:
  return f'{100 * n / total:.1f}%' if total else '-'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  missing = [f'--{n}' for n, v in (('pretrained', _PRETRAINED.value),
                                   ('data', _DATA.value), ('out', _OUT.value))
             if not v]
  if missing:
    raise app.UsageError(f'{", ".join(missing)} required.')
  try:
    cut_lib.check_choice(_KEEP.value, _THRESHOLD.value)
    registry.import_modules(_IMPORTS.value)
    histogram = None if _HISTOGRAM.value == 'none' else _HISTOGRAM.value
    dataset = data_lib.dataset_config(_DATA.value, _SPLIT.value,
                                      path_keys=_PATH_KEYS.value,
                                      options=_DATA_OPT.value)
    result = filter_lib.filter_data(
        _PRETRAINED.value, dataset, _SPLIT.value, _OUT.value,
        keep_fraction=_KEEP.value, threshold=_THRESHOLD.value,
        pairs=_PAIRS.value, combine=_COMBINE.value,
        scores_path=_SCORES.value, histogram_path=histogram,
        batch_size=_BATCH.value, max_texts=_MAX_TEXTS.value,
        num_threads=_THREADS.value)
  except (ValueError, KeyError, FileNotFoundError, ImportError) as e:
    if os.environ.get('MULTIMODAL_TRACEBACK'):
      raise
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)
  print(report(result.summary))
  print(json.dumps({k: result.summary[k] for k in (
      'records', 'scored', 'kept', 'skipped', 'skipped_by_reason', 'cut')}))


if __name__ == '__main__':
  app.run(main)
