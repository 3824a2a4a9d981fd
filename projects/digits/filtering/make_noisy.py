r"""The digits_trimodal data as JSONL manifests, with a noisy training split.

  python -m projects.digits.filtering.make_noisy --data_dir data \
      --out workdirs/filtering/data [--fraction 0.4] [--seed 0]

writes to --out:
  media/             each distinct PNG scan and OGG clip once
  test.jsonl         the clean test split (360 records)
  train_clean.jsonl  the training split as is (3,774 records)
  train_noisy.jsonl  the same records, but a seeded `fraction` of them
                     carry the captions of another record of that set: both
                     its image captions and its speech captions come from
                     one other record (a random derangement of the chosen
                     records, so each chosen record loses its own texts and
                     the texts of the split are the same multiset). Every
                     record says what was done: "swapped" (bool) and
                     "captions_from" (the donor's index, or null).
  train_random.jsonl a seeded random --random_keep share of the noisy
                     records (source order kept): the control that is as
                     small as the filtered split but keeps the noise rate.

Records keep the keys the contrastive experiment reads (image, speech,
image_captions, speech_captions, label) and the attributes the captions
describe; media goes through multimodal.filter.records, the writer the
filter uses. The first --check records (default 400: all of the test
split) of each written split are then preprocessed both ways (tfds record
and JSONL record, evaluation mode) and must give identical arrays, so a
run on these manifests sees what a run on the tfds data sees.
"""
from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import ml_collections as mlc
import numpy as np

from multimodal.data import pipeline
from multimodal.data import sources
from multimodal.filter import records as records_lib
from projects.digits import data as digits_data
from projects.digits.configs import contrastive

KEYS = ('id', 'label', 'image', 'image_captions', 'image_thickness',
        'image_slant', 'image_size', 'speech', 'speech_captions', 'voice_id')
PATH_KEYS = ('image', 'speech')
TEXT_KEYS = ('image_captions', 'speech_captions')


def swap_plan(n: int, fraction: float, seed: int) -> np.ndarray:
  """int64 [n]: the record whose captions record i gets (i itself when not
  swapped). round(fraction * n) records form one random cycle, so none
  keeps its own captions."""
  rng = np.random.default_rng(seed)
  chosen = rng.permutation(n)[:round(fraction * n)]
  donor = np.arange(n)
  if len(chosen) > 1:
    donor[chosen] = np.roll(chosen, 1)
  return donor


def random_subset(n: int, fraction: float, seed: int) -> np.ndarray:
  """Ascending indices of round(fraction * n) records drawn at random."""
  rng = np.random.default_rng([seed, 1])
  return np.sort(rng.permutation(n)[:round(fraction * n)])


def _write(path: str, rows) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + '\n')
  os.replace(tmp, path)


def _check_same_inputs(tfds_source, manifest: str, count: int) -> None:
  """The first `count` records give identical arrays both ways."""
  config = contrastive.get_config()
  fields = list(config.input.fields)
  prep = pipeline.Preprocess(config.input, fields, train=False)
  jsonl = sources.open_source(mlc.ConfigDict(dict(
      source='jsonl', splits={'x': manifest}, path_keys=PATH_KEYS)), 'x')
  for i in range(min(count, len(jsonl))):
    a = prep(tfds_source[i], np.random.default_rng(i))
    b = prep(jsonl[i], np.random.default_rng(i))
    for field in fields:
      if not np.array_equal(a[field], b[field]):
        raise AssertionError(f'Record {i}: field {field} differs between '
                             f'the tfds data and {manifest}.')


def make(data_dir: str, out: str, fraction: float = 0.4, seed: int = 0,
         check: int = 400, random_keep: float = 0.6) -> dict:
  """Writes the manifests (module docstring); returns counts."""
  os.makedirs(out, exist_ok=True)
  stats = {}
  for split in ('test', 'train'):
    source = digits_data.open_split({'data_dir': data_dir}, split)
    name = 'test.jsonl' if split == 'test' else 'train_clean.jsonl'
    path = os.path.join(out, name)
    writer = records_lib.ManifestWriter(path, os.path.join(out, 'media'))
    rows = []
    for i in range(len(source)):
      record = source[i]
      rows.append(writer({k: record[k] for k in KEYS}))
    _write(path, rows)
    _check_same_inputs(source, path, check)
    stats[split] = len(rows)
    if split == 'train':
      donor = swap_plan(len(rows), fraction, seed)
      noisy = []
      for i, row in enumerate(rows):
        row = dict(row, swapped=bool(donor[i] != i),
                   captions_from=int(donor[i]) if donor[i] != i else None)
        for key in TEXT_KEYS:
          row[key] = rows[donor[i]][key]
        noisy.append(row)
      _write(os.path.join(out, 'train_noisy.jsonl'), noisy)
      _write(os.path.join(out, 'train_random.jsonl'),
             [noisy[i] for i in random_subset(len(noisy), random_keep,
                                              seed)])
      labels = np.array([r['label'] for r in rows])
      stats['swapped'] = int((donor != np.arange(len(rows))).sum())
      stats['swapped_other_digit'] = int((labels[donor] != labels).sum())
  with open(os.path.join(out, 'make_noisy.json'), 'w') as f:
    json.dump(dict(stats, fraction=fraction, seed=seed,
                   random_keep=random_keep), f, indent=2)
  return stats


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  stats = make(args.data_dir, args.out, args.fraction, args.seed, args.check,
               args.random_keep)
  print(json.dumps(stats))


if __name__ == '__main__':
  flags.DEFINE_string('data_dir', 'data', 'Where digits_trimodal is built.')
  flags.DEFINE_string('out', 'workdirs/filtering/data', 'Output folder.')
  flags.DEFINE_float('fraction', 0.4, 'Share of training records whose '
                     'captions are swapped.')
  flags.DEFINE_integer('seed', 0, 'Seed of the swap.')
  flags.DEFINE_float('random_keep', 0.6, 'Share of the noisy records in '
                     'train_random.jsonl.')
  flags.DEFINE_integer('check', 400, 'Records of each split checked to '
                       'preprocess identically from tfds and JSONL.')
  app.run(main)
