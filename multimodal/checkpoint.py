"""The one checkpoint module: orbax CheckpointManager over train state + data.

A checkpoint step holds two items:
  state  the train state pytree (params, optimizer state, step), saved with
         StandardSave and restored onto whatever shardings the caller's
         abstract tree carries (so a restore may use another mesh);
  data   the grain iterator position (one file per process), so a resumed run
         sees exactly the examples it would have seen.
Saves are asynchronous: training continues while the previous step's arrays
are written; `close()` waits for the last one.
"""
from __future__ import annotations

import os
import signal
import threading

from absl import logging
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, workdir: str, *, max_to_keep: int = 2,
               async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator=None, *, force=False) -> bool:
    items = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    saved = self.manager.save(step, args=ocp.args.Composite(**items),
                              force=force)
    if saved:
      logging.info('Saving checkpoint for step %d to %s', step, self.directory)
    return saved

  def restore(self, abstract_state, data_iterator=None, step=None):
    """Restores state (onto abstract_state's shardings) and the iterator.

    Returns (state, step). The iterator is restored in place.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    logging.info('Restored checkpoint of step %d from %s', step,
                 self.directory)
    return restored['state'], step

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree, shardings):
  """The restore target for `tree` (arrays or ShapeDtypeStructs): its
  ShapeDtypeStructs, each with its sharding from `shardings` (a matching
  tree), where `Checkpointer.restore` places the arrays."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)


class PreemptionGuard:
  """Turns SIGTERM (what TPU VMs, Slurm and Kubernetes send before eviction)
  and SIGINT (Ctrl-C) into a flag the trainer polls.

  The trainer installs it first thing, so a signal during start-up,
  training, evaluation or an asynchronous save is seen at the next poll
  (between steps, between evaluation batches, between start-up phases);
  it then saves what is needed, waits until the checkpoint is durable and
  exits with EXIT_PREEMPTED. Further signals while that save runs are
  logged and ignored, so a second SIGTERM cannot cut a checkpoint in half;
  a third SIGINT exits at once (status 130): the interrupted save is then
  never finalised, and restore uses the previous complete step.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}
    self._interrupts = 0
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      self._interrupts += 1
      if self._interrupts >= 3:
        logging.warning('Third interrupt: exiting without waiting for the '
                        'checkpoint.')
        os._exit(130)  # pylint: disable=protected-access
    if self._event.is_set():
      logging.warning('Signal %d again: still saving; exiting once the '
                      'checkpoint is durable.', signum)
      return
    logging.warning('Received signal %d: will checkpoint and stop.', signum)
    self._event.set()

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def agreed(self) -> bool:
    """True once any process has been signalled; the same on every process.

    Saving is collective, so processes must stop at the same step even when
    the signal reaches them at different times. Costs one tiny host
    all-gather per call when there are several processes.
    """
    if jax.process_count() == 1:
      return self.requested
    # pylint: disable-next=g-import-not-at-top
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.array(self.requested))
    return bool(np.any(flags))

  def restore_handler(self):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}
