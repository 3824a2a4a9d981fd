"""Cross-modal retrieval recall@K, computed in chunks of queries."""
from __future__ import annotations

import numpy as np


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
