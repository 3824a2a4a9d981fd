"""Cross-modal retrieval recall@K, computed in chunks of queries."""
from __future__ import annotations

import numpy as np

from multimodal import evaluators
from multimodal import registry


def ranks_of_matches(queries: np.ndarray, candidates: np.ndarray,
                     chunk: int = 1024) -> np.ndarray:
  """Rank (0 = best) of candidate i for query i, for every i.

  queries, candidates: float [N, E], row i of each is a matching pair. Ties
  are broken deterministically in favour of the lower candidate index, so a
  degenerate model (all scores equal) does not score perfect recall.
  Returns int64 [N].
  """
  if queries.shape != candidates.shape:
    raise ValueError(f'Need paired rows, got {queries.shape} vs '
                     f'{candidates.shape}.')
  n = len(queries)
  ranks = np.empty(n, np.int64)
  idx = np.arange(n)
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    sims = queries[start:stop] @ candidates.T  # [chunk, N]
    own = sims[np.arange(stop - start), idx[start:stop]][:, None]
    better = (sims > own).sum(1)
    tied_before = ((sims == own) & (idx[None, :] < idx[start:stop, None])).sum(1)
    ranks[start:stop] = better + tied_before
  return ranks


def recall_at_k(queries, candidates, ks=(1, 5)) -> dict[int, float]:
  ranks = ranks_of_matches(np.asarray(queries, np.float32),
                           np.asarray(candidates, np.float32))
  return {k: float((ranks < k).mean()) for k in ks}


@registry.register('evaluator', 'retrieval')
class Retrieval(evaluators.Evaluator):
  """recall@K of the paired item in both directions of each pair, over the
  eval split's embeddings (label-free: row i of each field is one record).

  Args (config.evals entry): pairs: ((field, field), ...), default the
  model's pairs; ks: the K values. Returns 'retrieval/<q>-><c>@<K>'.
  """

  def __init__(self, task, pairs=None, ks=(1, 5)):
    self.pairs = [tuple(p) for p in (pairs or task.pairs)]
    unknown = sorted({f for p in self.pairs for f in p} - set(task.fields))
    if unknown:
      raise ValueError(f'retrieval pairs name {unknown}, which the model '
                       f'does not embed (it embeds {task.fields}).')
    self.ks = tuple(ks)

  def __call__(self, outputs, ctx):
    del ctx
    metrics = {}
    for a, b in self.pairs:
      for q, c in ((a, b), (b, a)):
        recalls = recall_at_k(outputs[f'embedding/{q}'],
                              outputs[f'embedding/{c}'], self.ks)
        for k, r in recalls.items():
          metrics[f'retrieval/{q}->{c}@{k}'] = r
    return metrics
