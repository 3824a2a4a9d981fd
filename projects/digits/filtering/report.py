r"""The filtering experiment's tables: how well the cut found the swapped
captions, and the runs' zero-shot accuracies and retrieval recalls side by
side.

  W=workdirs/filtering
  python -m projects.digits.filtering.report --data $W/data \
      --runs noisy=$W/noisy,filtered=$W/filtered,clean=workdirs/demo

reads DATA/train_noisy.jsonl (which records were swapped), DATA/scores.jsonl
and DATA/train_filtered.summary.json (multimodal.filter's outputs) and each
run's final_test.json; prints markdown tables and writes
DATA/scores_by_noise.png (the score histogram split by swapped / intact).
"""
from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import numpy as np

from multimodal import registry
from multimodal.data import sources

ZERO_SHOT = (('image', 'image'), ('speech', 'audio'),
             ('image~speech', 'image~audio'))
# Instance-level retrieval among the 360 test items: beyond the digit, only
# what the captions describe (stroke, slant, size; accent, pitch, speed)
# tells items apart, so swapped captions show here more than in zero-shot.
RETRIEVAL = (('image→caption', 'image->image_text'),
             ('speech→caption', 'audio->audio_text'))


def _jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """ROC AUC of `-scores` for finding `positive` (the probability that a
  random positive scores lower than a random negative; ties count half)."""
  pos, neg = scores[positive], scores[~positive]
  if not len(pos) or not len(neg):
    return float('nan')
  order = np.argsort(np.concatenate([pos, neg]), kind='stable')
  ranks = np.empty(len(order))
  ranks[order] = np.arange(1, len(order) + 1)
  values = np.concatenate([pos, neg])
  for v in np.unique(values):  # average ranks of ties
    tie = values == v
    ranks[tie] = ranks[tie].mean()
  return float((len(pos) * len(neg) + len(pos) * (len(pos) + 1) / 2
                - ranks[:len(pos)].sum()) / (len(pos) * len(neg)))


def cut_quality(data: str) -> tuple[str, dict]:
  """Markdown table of how the cut separates swapped from intact records,
  for the record score used and each single pair; and the numbers."""
  noisy = _jsonl(os.path.join(data, 'train_noisy.jsonl'))
  rows = {r['index']: r for r in _jsonl(os.path.join(data, 'scores.jsonl'))}
  with open(os.path.join(data, 'train_filtered.summary.json')) as f:
    summary = json.load(f)
  scored = [i for i in sorted(rows) if 'score' in rows[i]]
  swapped = np.array([noisy[i]['swapped'] for i in scored])
  labels = np.array([noisy[i]['label'] for i in scored])
  donors = np.array([noisy[i]['captions_from'] if noisy[i]['swapped'] else i
                     for i in scored])
  other_digit = swapped & (np.array([noisy[d]['label'] for d in donors])
                           != labels)
  kept = np.array([rows[i]['kept'] for i in scored])
  k = int(kept.sum())
  candidates = {f'record score ({summary["combine"]} of the pairs), the '
                'cut used': np.array([rows[i]['score'] for i in scored])}
  for name in summary['pairs']:
    candidates[f'pair {name} alone'] = np.array(
        [rows[i]['pairs'][name] for i in scored])
  both = np.array([list(rows[i]['pairs'].values()) for i in scored])
  candidates['min of the pairs'] = both.min(-1)
  lines = ['| score | removed | swapped among removed (precision) | swapped '
           'removed (recall) | swapped to another digit removed | ROC AUC |',
           '| --- | --- | --- | --- | --- | --- |']
  numbers = {}
  for name, s in candidates.items():
    keep = np.zeros(len(s), bool)
    keep[np.argsort(-s, kind='stable')[:k]] = True  # the same keep count
    removed = ~keep
    precision = (removed & swapped).sum() / max(1, removed.sum())
    recall = (removed & swapped).sum() / max(1, swapped.sum())
    recall_other = (removed & other_digit).sum() / max(1, other_digit.sum())
    a = auc(s, swapped)
    numbers[name] = dict(removed=int(removed.sum()), precision=precision,
                         recall=recall, recall_other_digit=recall_other,
                         auc=a)
    lines.append(f'| {name} | {int(removed.sum())} | {100 * precision:.1f}% '
                 f'| {100 * recall:.1f}% | {100 * recall_other:.1f}% | '
                 f'{a:.3f} |')
  used = next(iter(numbers.values()))
  noise_kept = (kept & swapped).sum() / max(1, k)
  head = (f'{len(scored)} of {summary["records"]} records scored '
          f'({summary["skipped"]} skipped), {int(swapped.sum())} swapped '
          f'({int(other_digit.sum())} to another digit); kept {k} '
          f'(keep_fraction {summary["keep_fraction"]}), cut at '
          f'{summary["cut"]:.4f}; swapped records left among the kept: '
          f'{int((kept & swapped).sum())} ({100 * noise_kept:.1f}%, from '
          f'{100 * swapped.mean():.1f}%).')
  numbers['kept_noise_rate'] = float(noise_kept)
  numbers['used'] = used
  _histogram(os.path.join(data, 'scores_by_noise.png'),
             candidates[next(iter(candidates))], swapped, summary['cut'])
  return head + '\n\n' + '\n'.join(lines), numbers


def _histogram(path, scores, swapped, cut) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 3))
  bins = np.linspace(scores.min(), scores.max(), 61)
  ax.hist(scores[~swapped], bins=bins, alpha=0.7, color='tab:blue',
          label=f'captions intact ({int((~swapped).sum())})')
  ax.hist(scores[swapped], bins=bins, alpha=0.7, color='tab:orange',
          label=f'captions swapped ({int(swapped.sum())})')
  ax.axvline(cut, color='tab:red', linestyle='--', label=f'cut {cut:.3f}')
  ax.set_xlabel('record score: mean cosine similarity (image and speech '
                'vs their captions)')
  ax.set_ylabel('records')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def accuracy_table(runs: dict[str, str]) -> tuple[str, dict]:
  """Markdown table of each run's final zero-shot accuracies and retrieval
  recall@1 / @5 on the test split."""
  lines = ['| training data | records | ' + ' | '.join(
      [f'zero-shot {name}' for name, _ in ZERO_SHOT]
      + [f'{name} R@1 / R@5' for name, _ in RETRIEVAL]) + ' |',
           '| --- | --- |' + ' --- |' * (len(ZERO_SHOT) + len(RETRIEVAL))]
  numbers = {}
  for run, workdir in runs.items():
    with open(os.path.join(workdir, 'final_test.json')) as f:
      final = json.load(f)
    with open(os.path.join(workdir, 'config.json')) as f:
      config = json.load(f)
    registry.import_modules(config.get('imports', ()))
    n = len(sources.open_source(config['dataset'], config['train_split']))
    row = {'records': n}
    cells = []
    for name, key in ZERO_SHOT:
      row[name] = final[f'test/zeroshot/{key}']
      cells.append(f'{100 * row[name]:.1f}%')
    for name, key in RETRIEVAL:
      r1, r5 = (final[f'test/retrieval/{key}@{k}'] for k in (1, 5))
      row[f'{name} R@1'], row[f'{name} R@5'] = r1, r5
      cells.append(f'{100 * r1:.1f} / {100 * r5:.1f}%')
    numbers[run] = row
    lines.append(f'| {run} | {n} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines), numbers


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  out = {}
  if args.data:
    text, out['cut'] = cut_quality(args.data)
    print(text + '\n')
  if args.runs:
    runs = dict(item.split('=', 1) for item in args.runs)
    text, out['runs'] = accuracy_table(runs)
    print(text + '\n')
  print(json.dumps(out, default=float))


if __name__ == '__main__':
  flags.DEFINE_string('data', None, 'make_noisy.py output folder (holding '
                      'the filter outputs).')
  flags.DEFINE_list('runs', [], 'NAME=WORKDIR of each run to tabulate.')
  app.run(main)
