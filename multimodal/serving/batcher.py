"""Dynamic batching: concurrent requests run as one call on one thread.

Requests are grouped by a key (the server uses endpoint, modality
combination and decoding options: what one call of the predictor can run
together). The worker thread takes the oldest waiting request's group and
waits until the group holds `max_batch` rows or the oldest request has
waited `max_wait_s`, whichever comes first; then it runs every request of
the group that fits (in arrival order, at least one) as one call of the
group's runner and hands each request its part of the result. Every model
call happens on this one thread, so JAX calls are serialised and the
jitted functions' caches are shared.

A runner that fails on a batch of several requests is retried on each
request alone, so one bad request cannot fail the others; a request's own
failure reaches only its future.
"""
from __future__ import annotations

from collections import Counter
import concurrent.futures
import dataclasses
import threading
import time
from typing import Any, Callable, Hashable, Sequence

# runner(key, payloads) -> one result per payload, in order.
Runner = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


@dataclasses.dataclass
class _Request:
  key: Hashable
  payload: Any
  rows: int
  arrived: float
  future: concurrent.futures.Future


class Closed(RuntimeError):
  """submit() after close(): the server is shutting down."""


class Batcher:
  """Groups submitted requests into batches run on one worker thread.

  Args:
    runner: runner(key, payloads) -> results (see module docstring).
    max_batch: rows per batch (a request of more rows runs alone).
    max_wait_s: how long the oldest request of a group may wait for more.
    batching: False runs every request alone, in arrival order.
  """

  def __init__(self, runner: Runner, *, max_batch: int = 32,
               max_wait_s: float = 0.005, batching: bool = True):
    if max_batch < 1 or max_wait_s < 0:
      raise ValueError(f'max_batch must be >= 1 and max_wait_s >= 0, got '
                       f'{max_batch}, {max_wait_s}.')
    self.runner = runner
    self.max_batch = max_batch if batching else 1
    self.max_wait_s = max_wait_s if batching else 0.0
    self.batching = batching
    self._pending: list[_Request] = []
    self._cond = threading.Condition()
    self._closing = False
    self._stats = {'batches': 0, 'rows': 0, 'requests': 0, 'failed': 0,
                   'retried_alone': 0}
    self._rows_hist: Counter = Counter()
    self._requests_hist: Counter = Counter()
    self._thread = threading.Thread(target=self._loop, name='batcher',
                                    daemon=True)
    self._thread.start()

  def submit(self, key: Hashable, payload: Any, rows: int = 1
             ) -> concurrent.futures.Future:
    """Queues one request of `rows` rows; its future gets its result."""
    future = concurrent.futures.Future()
    with self._cond:
      if self._closing:
        raise Closed('The server is shutting down.')
      self._pending.append(_Request(key, payload, max(1, rows),
                                    time.monotonic(), future))
      self._cond.notify()
    return future

  def close(self, timeout: float | None = None) -> None:
    """Stops accepting, runs everything already queued, stops the thread."""
    with self._cond:
      self._closing = True
      self._cond.notify()
    self._thread.join(timeout)

  def stats(self) -> dict:
    """Counters: batches run, rows and requests in them, a histogram of
    rows per batch and of requests per batch, queued requests now."""
    with self._cond:
      return dict(self._stats, queued=len(self._pending),
                  max_batch=self.max_batch, max_wait_ms=self.max_wait_s * 1e3,
                  batching=self.batching,
                  batch_rows=dict(sorted(self._rows_hist.items())),
                  batch_requests=dict(sorted(self._requests_hist.items())))

  # ------------------------------------------------------------ worker ---

  def _group_rows(self, key) -> int:
    return sum(r.rows for r in self._pending if r.key == key)

  def _take(self) -> list[_Request] | None:
    """The next batch (blocking), or None once closed and drained."""
    with self._cond:
      while not self._pending:
        if self._closing:
          return None
        self._cond.wait()
      first = self._pending[0]
      deadline = first.arrived + self.max_wait_s
      while (not self._closing and self._group_rows(first.key) <
             self.max_batch):
        left = deadline - time.monotonic()
        if left <= 0:
          break
        self._cond.wait(left)
      batch, rows = [], 0
      for r in self._pending:
        if r.key != first.key:
          continue
        if batch and rows + r.rows > self.max_batch:
          break
        batch.append(r)
        rows += r.rows
      taken = {id(r) for r in batch}
      self._pending = [r for r in self._pending if id(r) not in taken]
      return batch

  def _loop(self):
    while True:
      batch = self._take()
      if batch is None:
        return
      self._run(batch)

  def _run(self, batch: list[_Request]):
    key = batch[0].key
    live = [r for r in batch if r.future.set_running_or_notify_cancel()]
    if not live:
      return
    try:
      results = self.runner(key, [r.payload for r in live])
      if len(results) != len(live):
        raise RuntimeError(f'The runner returned {len(results)} results for '
                           f'{len(live)} requests.')
    except Exception as e:  # pylint: disable=broad-except
      if len(live) == 1:
        self._count(live, failed=1)
        live[0].future.set_exception(e)
        return
      with self._cond:
        self._stats['retried_alone'] += len(live)
      for r in live:  # one failure must not fail the others
        self._run_alone(r)
      return
    self._count(live)
    for r, result in zip(live, results):
      r.future.set_result(result)

  def _run_alone(self, r: _Request):
    try:
      (result,) = self.runner(r.key, [r.payload])
    except Exception as e:  # pylint: disable=broad-except
      self._count([r], failed=1)
      r.future.set_exception(e)
      return
    self._count([r])
    r.future.set_result(result)

  def _count(self, batch: list[_Request], failed: int = 0):
    rows = sum(r.rows for r in batch)
    with self._cond:
      self._stats['batches'] += 1
      self._stats['rows'] += rows
      self._stats['requests'] += len(batch)
      self._stats['failed'] += failed
      self._rows_hist[rows] += 1
      self._requests_hist[len(batch)] += 1
