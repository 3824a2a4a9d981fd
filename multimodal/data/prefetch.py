"""Batches placed on the devices ahead of the step that consumes them.

The training step is dispatched asynchronously; while it runs, the loop can
already read, shard and transfer the next `size` batches, so a step never
waits for a host-to-device copy. The iterator position saved in a checkpoint
must still be that of the last batch *consumed*, not of the last one
prefetched, or a resumed run would skip the prefetched batches: every
buffered batch carries the source iterator's state right after it.
"""
from __future__ import annotations

import collections
import json
from typing import Any, Callable, Iterator


class DevicePrefetch:
  """Wraps a grain iterator of host batches; yields placed batches.

  Args:
    iterator: a grain DatasetIterator (get_state() -> dict, set_state(dict)).
    place: host batch (dict of NumPy arrays) -> batch of jax.Arrays, e.g.
      train.shard_batch with the mesh's batch sharding.
    size: batches placed ahead, including the one handed out next (0 or 1:
      one at a time, read while the previous step runs).

  Checkpointing: `get_state`/`set_state` speak bytes (JSON), the protocol
  grain's orbax handler uses for iterators that are not DatasetIterators,
  and the file it writes holds the same JSON as for the bare iterator, so
  checkpoints written with and without prefetching restore either way.
  """

  def __init__(self, iterator, place: Callable[[Any], Any], size: int = 2):
    if size < 0:
      raise ValueError(f'config.input.device_prefetch must be >= 0, got '
                       f'{size}.')
    self.iterator, self.place, self.size = iterator, place, size
    self._buffer: collections.deque = collections.deque()
    self._consumed_state = iterator.get_state()

  def _fill(self, count: int) -> None:
    while len(self._buffer) < count:
      batch = self.place(next(self.iterator))
      self._buffer.append((batch, self.iterator.get_state()))

  def __iter__(self) -> Iterator[Any]:
    return self

  def __next__(self):
    # Called while the previous step still runs (dispatch is asynchronous):
    # the reads and copies of this top-up overlap with it.
    self._fill(max(self.size, 1))
    batch, self._consumed_state = self._buffer.popleft()
    return batch

  def get_state(self) -> bytes:
    return json.dumps(self._consumed_state, indent=4).encode()

  def set_state(self, state: bytes | dict) -> None:
    if isinstance(state, (bytes, str)):
      state = json.loads(state)
    self._buffer.clear()
    self.iterator.set_state(state)
    self._consumed_state = self.iterator.get_state()

  def start_prefetch(self) -> None:
    """Called by grain's checkpoint handler after a restore; nothing to do:
    the buffer refills on the next batch."""
