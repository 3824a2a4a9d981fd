r"""The CLIP-score filtering experiment, end to end (`make filter-experiment`).

  python -m projects.digits.filtering.run --data_dir data \
      --out workdirs/filtering [--keep_fraction 0.6] [--clean_workdir W]

1. make_noisy.py: the digits data as JSONL, 40% of the training captions
   swapped (OUT/data);
2. trains the contrastive demo on the noisy split (OUT/noisy) and exports
   it (OUT/exports/noisy);
3. python -m multimodal.filter scores the noisy split with that export and
   keeps --keep_fraction of it (OUT/data/train_filtered.jsonl, scores.jsonl,
   the histogram and summary beside it);
4. trains on the filtered split (OUT/filtered), on the clean one
   (OUT/clean; or takes --clean_workdir, e.g. the `make demo` run, which
   reads the same records from the tfds data) and, with --control, on a
   random subset of the noisy split as large as the filtered one
   (OUT/random);
5. report.py prints the tables (the cut's precision and recall on the
   swapped records; zero-shot accuracies on the clean test split).

A step whose output exists is not run again, so an interrupted run resumes
where it stopped (the trainer resumes its own checkpoints). Each training
takes about 10 minutes on a quiet 2-core CPU.
"""
from __future__ import annotations

import os
import subprocess
import sys

from absl import app
from absl import flags

from projects.digits.filtering import make_noisy

CONFIG = 'projects/digits/filtering/config.py'


def _run(*args: str) -> None:
  cmd = [sys.executable, '-m', *args]
  print('+', ' '.join(cmd), flush=True)
  subprocess.run(cmd, check=True)


def _train(variant: str, data: str, workdir: str) -> None:
  if not os.path.exists(os.path.join(workdir, 'final_test.json')):
    _run('multimodal.train', f'--config={CONFIG}:{variant},{data}',
         f'--workdir={workdir}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  out = os.path.abspath(args.out)
  data = os.path.join(out, 'data')
  if not os.path.exists(os.path.join(data, 'make_noisy.json')):
    make_noisy.make(args.data_dir, data, args.fraction, args.seed,
                    random_keep=args.keep_fraction)
  _train('noisy', data, os.path.join(out, 'noisy'))
  export = os.path.join(out, 'exports', 'noisy')
  if not os.path.exists(os.path.join(export, 'model.json')):
    _run('multimodal.export', f'--workdir={os.path.join(out, "noisy")}',
         f'--out={export}')
  filtered = os.path.join(data, 'train_filtered.jsonl')
  if not os.path.exists(filtered):
    _run('multimodal.filter', f'--pretrained={export}',
         f'--data=jsonl:{os.path.join(data, "train_noisy.jsonl")}',
         '--path_keys=image,speech', f'--keep_fraction={args.keep_fraction}',
         f'--out={filtered}', f'--scores={os.path.join(data, "scores.jsonl")}')
  _train('filtered', data, os.path.join(out, 'filtered'))
  clean = args.clean_workdir or os.path.join(out, 'clean')
  if not args.clean_workdir:
    _train('clean', data, clean)
  runs = [f'noisy={os.path.join(out, "noisy")}']
  if args.control:
    _train('random', data, os.path.join(out, 'random'))
    runs.append(f'noisy: a random {args.keep_fraction:.0%}='
                f'{os.path.join(out, "random")}')
  runs += [f'noisy: CLIP-filtered {args.keep_fraction:.0%}='
           f'{os.path.join(out, "filtered")}', f'clean={clean}']
  _run('projects.digits.filtering.report', f'--data={data}',
       f'--runs={",".join(runs)}')


if __name__ == '__main__':
  flags.DEFINE_string('data_dir', 'data', 'Where digits_trimodal is built.')
  flags.DEFINE_string('out', 'workdirs/filtering', 'Output folder.')
  flags.DEFINE_float('fraction', 0.4, 'Share of training captions swapped.')
  flags.DEFINE_integer('seed', 0, 'Seed of the swap.')
  flags.DEFINE_float('keep_fraction', 0.6, 'Share of the noisy split kept.')
  flags.DEFINE_bool('control', False, 'Also train on a random subset of the '
                    'noisy split as large as the filtered one.')
  flags.DEFINE_string('clean_workdir', None, 'A finished clean run to '
                      'compare with (default: train one on the clean JSONL).')
  app.run(main)
