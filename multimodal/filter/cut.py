"""Where the cut goes, and a histogram of the scores with the cut marked.

Exactly one of:
  keep_fraction F   keeps the round(F * N) best-scored of the N scored
                    records (halves round up), exactly that many: records
                    tied at the cut are taken in source order, so the
                    earlier of two equal scores is kept.
  threshold T       keeps every record scoring >= T (ties at T kept).
"""
from __future__ import annotations

import math
import textwrap

import numpy as np

COMBINE = ('mean', 'min')


def check_choice(keep_fraction: float | None, threshold: float | None
                 ) -> None:
  """Raises ValueError unless exactly one of the two is given (and a
  fraction is in (0, 1])."""
  if (keep_fraction is None) == (threshold is None):
    got = 'both' if keep_fraction is not None else 'neither'
    raise ValueError(f'Give exactly one of --keep_fraction and --threshold '
                     f'(got {got}): --keep_fraction 0.3 keeps the best 30% '
                     'of the records, --threshold 0.28 keeps records scoring '
                     'at least 0.28.')
  if keep_fraction is not None and not 0 < keep_fraction <= 1:
    raise ValueError(f'--keep_fraction={keep_fraction} must be in (0, 1].')
  if threshold is not None and not math.isfinite(threshold):
    raise ValueError(f'--threshold={threshold} must be a finite number.')


def combine(pair_scores: np.ndarray, how: str = 'mean') -> np.ndarray:
  """A record's score from its pairs' scores [N, P]: their mean, or their
  minimum (a record is as good as its worst pair). float32 [N]."""
  if how not in COMBINE:
    raise ValueError(f'--combine={how!r}: use one of {COMBINE}.')
  if not pair_scores.shape[-1]:
    return np.zeros(len(pair_scores), np.float32)
  fn = np.mean if how == 'mean' else np.min
  return fn(pair_scores, axis=-1).astype(np.float32)


def keep_count(n: int, fraction: float) -> int:
  """round(fraction * n), halves up."""
  return min(n, math.floor(fraction * n + 0.5))


def select(scores: np.ndarray, keep_fraction: float | None = None,
           threshold: float | None = None
           ) -> tuple[np.ndarray, float | None]:
  """(bool [N] kept, the cut: the lowest kept score, or the threshold).

  The cut is None when keep_fraction keeps nothing.
  """
  check_choice(keep_fraction, threshold)
  scores = np.asarray(scores)
  if threshold is not None:
    return scores >= threshold, float(threshold)
  k = keep_count(len(scores), keep_fraction)
  order = np.argsort(-scores, kind='stable')  # ties: source order
  kept = np.zeros(len(scores), bool)
  kept[order[:k]] = True
  return kept, (float(scores[order[k - 1]]) if k else None)


def histogram(path: str, scores: np.ndarray, kept: np.ndarray,
              cut: float | None, *, title: str,
              pair_scores: np.ndarray | None = None,
              pair_names=()) -> None:
  """Writes a PNG: the record scores' histogram with the cut marked (and
  one panel per pair when there are several)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = [('record score', scores)]
  if pair_scores is not None and len(pair_names) > 1:
    panels += [(f'pair {n}', pair_scores[:, i])
               for i, n in enumerate(pair_names)]
  fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.8 * len(panels)),
                           squeeze=False)
  lo = min((float(v.min()) for _, v in panels if len(v)), default=-1.0)
  hi = max((float(v.max()) for _, v in panels if len(v)), default=1.0)
  bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 61)
  for ax, (name, values) in zip(axes[:, 0], panels):
    ax.hist(values[kept], bins=bins, color='tab:blue', alpha=0.8,
            label=f'kept ({int(kept.sum())})')
    ax.hist(values[~kept], bins=bins, color='tab:gray', alpha=0.6,
            label=f'dropped ({int((~kept).sum())})')
    if name == 'record score' and cut is not None:
      ax.axvline(cut, color='tab:red', linestyle='--',
                 label=f'cut {cut:.4f}')
    ax.set_xlabel(f'{name}: cosine similarity')
    ax.set_ylabel('records')
    ax.legend(loc='upper left', fontsize=8)
  axes[0, 0].set_title('\n'.join(textwrap.wrap(title, 90)), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
