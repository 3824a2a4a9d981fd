"""Few-shot linear probes on frozen features (closed-form ridge regression).

For each k in `shots`, k training examples per class are drawn, a linear
map from features to +-1 one-hot targets is fitted in closed form for each
L2 strength, the strength is chosen on held-out training examples (never
on the test set), and test accuracy is the argmax of the fitted scores.
Repeated over `repeats` draws and averaged. Fast enough to run at every
evaluation: no gradient steps, one [D, D] solve per strength.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

L2_REGS = (2.0 ** -6, 2.0 ** -3, 1.0, 2.0 ** 3, 2.0 ** 6, 2.0 ** 10)


def _fit(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
  """W [D + 1, C] minimising |[x, 1] W - y|^2 + l2 |W|^2 (bias free)."""
  x = np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1)
  reg = l2 * np.eye(x.shape[1])
  reg[-1, -1] = 0.0
  return np.linalg.solve(x.T @ x + reg, x.T @ y)


def _predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
  return np.argmax(x @ w[:-1] + w[-1], axis=1)


def _standardise(train: np.ndarray, *others: np.ndarray):
  mean, std = train.mean(0), train.std(0) + 1e-6
  return [(a - mean) / std for a in (train, *others)]


def fewshot_accuracy(train_x: np.ndarray, train_y: np.ndarray,
                     test_x: np.ndarray, test_y: np.ndarray, *,
                     shots: Sequence[int] = (1, 5, 10),
                     l2_regs: Sequence[float] = L2_REGS, repeats: int = 5,
                     seed: int = 0) -> dict[int, float]:
  """Mean test accuracy of k-shot ridge probes, for each k in `shots`.

  Args:
    train_x: float [N, D] features of the pool the shots are drawn from.
    train_y: int [N] class ids in [0, C).
    test_x, test_y: [M, D] and [M], the evaluation set.
    shots: examples per class to fit on.
    l2_regs: the L2 strengths tried; the best on held-out pool examples
      (those not drawn as shots) is used on the test set.
    repeats: independent draws of the shots, averaged.
    seed: seeds the draws.

  Returns:
    {k: mean test accuracy in [0, 1]}.
  """
  train_x, test_x = (np.asarray(a, np.float64) for a in (train_x, test_x))
  train_y, test_y = np.asarray(train_y), np.asarray(test_y)
  classes = np.unique(train_y)
  if len(classes) < 2:
    raise ValueError(f'Need at least 2 classes in the training pool, got '
                     f'{classes.tolist()}.')
  counts = {c: int(np.sum(train_y == c)) for c in classes}
  rng = np.random.default_rng(seed)
  out = {}
  for k in shots:
    short = {int(c): n for c, n in counts.items() if n <= k}
    if short:
      raise ValueError(f'{k}-shot needs more than {k} training examples per '
                       f'class (the rest choose the L2 strength); classes '
                       f'with too few: {short}.')
    accs = []
    for _ in range(repeats):
      picked = np.concatenate([
          rng.choice(np.flatnonzero(train_y == c), k, replace=False)
          for c in classes])
      held = np.setdiff1d(np.arange(len(train_y)), picked)
      xs, xh, xt = _standardise(train_x[picked], train_x[held], test_x)
      targets = 2.0 * (train_y[picked][:, None] == classes[None]) - 1.0
      fits = [_fit(xs, targets, l2) for l2 in l2_regs]
      held_acc = [np.mean(classes[_predict(w, xh)] == train_y[held])
                  for w in fits]
      best = fits[int(np.argmax(held_acc))]
      accs.append(np.mean(classes[_predict(best, xt)] == test_y))
    out[k] = float(np.mean(accs))
  return out
