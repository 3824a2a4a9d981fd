"""Fixed batch sizes for jitted inference: pad to a bucket, chunk the rest.

A jitted function compiles once per input shape. Padding every call's batch
up to the smallest of a few bucket sizes (chunking batches larger than the
largest bucket) bounds the compilations of a function to the number of
buckets, whatever stream of batch sizes arrives. Padding rows repeat the
last real row (not zeros), so they hold realistic values (no all-padding
text, no generation running to its budget) and are cut from the outputs.
"""
from __future__ import annotations

from collections import Counter
import threading
from typing import Any, Callable, Sequence

import jax
import numpy as np


def check_buckets(sizes: Sequence[int]) -> tuple[int, ...]:
  """Sorted, distinct positive bucket sizes; ValueError otherwise."""
  sizes = tuple(sizes)
  if not sizes or any(not isinstance(s, (int, np.integer)) or s < 1
                      for s in sizes):
    raise ValueError(f'buckets must be positive ints, e.g. (1, 4, 16, 64); '
                     f'got {sizes}.')
  return tuple(sorted(set(int(s) for s in sizes)))


def plan(n: int, buckets: Sequence[int]) -> list[tuple[int, int, int]]:
  """Chunks of n rows: [(start, stop, padded size)], each stop - start <=
  padded size, a bucket; chunks of the largest bucket, then the rest
  padded up to the smallest bucket that holds it."""
  largest = buckets[-1]
  out, start = [], 0
  while start < n:
    stop = min(n, start + largest)
    size = next(b for b in buckets if b >= stop - start)
    out.append((start, stop, size))
    start = stop
  return out


def pad_rows(x: np.ndarray, size: int) -> np.ndarray:
  """x [n, ...] -> [size, ...], padded with copies of the last row."""
  n = x.shape[0]
  if n == size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)])


def run(call: Callable[..., Any], batched: Sequence[Any],
        buckets: Sequence[int]):
  """Calls `call(*padded)` per chunk of the batched arguments and returns
  its outputs (a pytree of arrays [n, ...]) for the real rows, as NumPy.

  Args:
    call: takes the padded arguments (same structure as `batched`, leading
      axis a bucket size) and the chunk index as keyword `chunk`.
    batched: pytrees of NumPy arrays sharing the leading axis n >= 1.
    buckets: check_buckets() output.
  """
  leaves = jax.tree.leaves(batched)
  n = leaves[0].shape[0]
  if any(leaf.shape[0] != n for leaf in leaves):
    raise ValueError(f'Batched inputs disagree on the number of examples: '
                     f'{[leaf.shape[0] for leaf in leaves]}.')
  parts = []
  for i, (start, stop, size) in enumerate(plan(n, buckets)):
    padded = jax.tree.map(lambda x: pad_rows(x[start:stop], size), batched)
    out = call(*padded, chunk=i)
    parts.append(jax.tree.map(lambda y: np.asarray(y)[:stop - start], out))
  if len(parts) == 1:
    return parts[0]
  return jax.tree.map(lambda *ys: np.concatenate(ys), *parts)


class TraceCounter:
  """Counts traces (= compilations, without a persistent cache) per name.

  `wrap(name, fn)` returns fn counting one per trace: the Python body of a
  jitted function runs only when JAX traces it for a new input signature.
  """

  def __init__(self):
    self.counts = Counter()
    self._lock = threading.Lock()

  def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def traced(*args, **kwargs):
      with self._lock:
        self.counts[name] += 1
      return fn(*args, **kwargs)
    return traced

  def __getitem__(self, name: str) -> int:
    return self.counts[name]

  def as_dict(self) -> dict[str, int]:
    with self._lock:
      return dict(self.counts)
