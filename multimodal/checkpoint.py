"""The one checkpoint module: orbax CheckpointManager over train state + data.

A checkpoint step holds two items:
  state  the train state pytree (params, optimizer state, step), saved with
         StandardSave and restored onto whatever shardings the caller's
         abstract tree carries (so a restore may use another mesh);
  data   the grain iterator position, one file per process
         (`data/process_{i}-of-{n}.json`), so a resumed run sees exactly the
         examples it would have seen.
Saves are asynchronous: training continues while the previous step's arrays
are written; `close()` waits for the last one.

Which step a resume restores (`Checkpointer.restore`):
  * Only finalised steps count: orbax writes a step into
    `<step>.orbax-checkpoint-tmp` and renames it when complete, so a save
    cut short by a kill leaves a tmp directory that is never chosen (it is
    logged as ignored).
  * Each candidate, newest first, is checked before anything is read onto a
    device (`Checkpointer.check`): the metadata files parse, every file the
    state's OCDBT index refers to exists and is long enough, and every
    process's data file is there and parses. A damaged newest step is
    skipped in favour of the newest complete one, with a warning naming
    each file at fault, and is moved aside to `<step>.damaged` (kept for
    inspection; orbax would otherwise refuse to save that step number
    again). Nothing is skipped silently; if no step is usable, restore
    raises CheckpointError naming the files and the fix.
  * `restore_step` (config.restore_step) restores that step instead: it
    must exist and be complete (no fallback), and the newer steps are moved
    aside to `<step>.rolled-back`, since the run will write those step
    numbers again. `checkpoints/restore_step.json` records the rollback, so
    rerunning the same command later (after a preemption) resumes from the
    newest step rather than rolling back again.
  * A file damaged in a way only reading it shows (e.g. garbled bytes in an
    array file) fails the restore itself: one process falls back as above;
    several processes stop with the message, since they cannot agree on a
    fallback once a collective restore has failed on some of them.

Elastic resume: the training order does not depend on the process count
(multimodal/data/pipeline.make_iterator deals the global stream out
round-robin, process i reading global positions i, i + P, ...), and each
process's file holds its `next_index` in its share. A checkpoint written
by P processes restores onto M != P by rebuilding the global position from
all P files (`remap_data_state`): exact (nothing skipped or repeated) when
the positions consumed form a prefix of the global stream, which they do
unless records were skipped (input.on_error='skip') in the last batches;
see remap_data_state for what happens then. The train state restores onto
any mesh. With the same process count each process takes its own file
verbatim, as before.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import signal
import threading
from typing import Any

from absl import logging
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from multimodal import distributed

# orbax's mark of a step directory still being written (atomicity_types.
# TMP_DIR_SUFFIX, private); such a directory is renamed to `<step>` when the
# save completes.
_UNFINISHED = '.orbax-checkpoint-tmp'
_DATA_FILE = re.compile(r'^process_(\d+)-of-(\d+)\.json$')
# In the checkpoints directory: which restore_step was applied (see restore).
ROLLBACK_FILE = 'restore_step.json'


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored; the message names the step, the
  files at fault and the fix."""


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

  def all_steps(self) -> list[int]:
    """The finalised steps, oldest first (damaged ones included)."""
    return sorted(self.manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def unfinished(self) -> list[str]:
    """Directories of saves that never completed (a kill during an async
    write); orbax never lists them as steps."""
    if not os.path.isdir(self.directory):
      return []
    return sorted(os.path.join(self.directory, n)
                  for n in os.listdir(self.directory) if _UNFINISHED in n)

  def save(self, step: int, state, data_iterator=None, *, force=False) -> bool:
    items = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    saved = self.manager.save(step, args=ocp.args.Composite(**items),
                              force=force)
    if saved:
      logging.info('Saving checkpoint for step %d to %s', step, self.directory)
    return saved

  def check(self, step: int, data: bool = True) -> list[str]:
    """What is wrong with checkpoint `step`: one line per problem, each
    naming the file at fault ([] for a complete step). Reads metadata and
    index files only, never the arrays, and gives the same answer on every
    process (all read the same files).

    data: whether the data item (every process's file) is needed.
    """
    root = self.step_dir(step)
    state = os.path.join(root, 'state')
    if not os.path.isdir(state):
      return [f'{state} is missing (the train state)']
    problems = _json_problems(os.path.join(state, '_METADATA'), True)
    problems += _json_problems(os.path.join(state, '_sharding'), False)
    arrays = os.path.join(state, 'array_metadatas')
    for name in sorted(os.listdir(arrays)) if os.path.isdir(arrays) else ():
      problems += _json_problems(os.path.join(arrays, name), True)
    if os.path.exists(os.path.join(state, 'manifest.ocdbt')):
      problems += _ocdbt_problems(state)
    if data:
      problems += read_data_states(os.path.join(root, 'data'))[1]
    return problems

  def restore(self, abstract_state, data_iterator=None, step=None):
    """Restores state (onto abstract_state's shardings) and the iterator.

    step: None restores the newest complete step, skipping (and moving
    aside) damaged newer ones with a warning; a step number restores that
    step (config.restore_step) and moves the newer steps aside, unless
    checkpoints/restore_step.json shows that this rollback was already done
    (a rerun of the same command), when the newest step is restored.
    A checkpoint written by another number of processes restores too; see
    the module docstring for what is exact.

    Returns (state, step). The iterator is restored in place.
    Raises FileNotFoundError when there is no checkpoint, CheckpointError
    when `step` does not exist or is damaged, when no step is complete, or
    when the data position cannot be remapped onto this process count.
    """
    steps = self.all_steps()
    for path in self.unfinished():
      logging.warning('Ignoring %s: a save that never completed (the run '
                      'stopped while writing it); it is never restored.', path)
    if not steps:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    need_data = data_iterator is not None
    step = self._pending_restore_step(step, steps)
    if step is not None and step not in steps:
      raise CheckpointError(f'config.restore_step={step}: '
                            f'{missing_step(self.directory, step, steps)}.')
    candidates = [step] if step is not None else steps[::-1]
    damaged = {}  # step -> its problems
    for candidate in candidates:
      problems = self.check(candidate, need_data)
      if not problems:
        # Computed before any array is read: a position that cannot be
        # remapped is no reason to fall back to an older step.
        data_state = self._data_state(candidate) if need_data else None
        try:
          restored = self.manager.restore(candidate, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state)))
          break
        except Exception as e:  # pylint: disable=broad-exception-caught
          # What check() cannot see (e.g. garbled bytes inside an array
          # file) shows here, as orbax's long traceback; the first line
          # names the array.
          problems = [f'reading {self.step_dir(candidate)} failed: '
                      f'{_first_line(e)}']
          if step is not None or jax.process_count() > 1:
            raise CheckpointError(self._damaged_message(
                candidate, problems, steps, need_data)) from None
      if step is not None:
        raise CheckpointError(self._damaged_message(candidate, problems,
                                                    steps, need_data))
      logging.warning(
          'Checkpoint step %d is damaged and is NOT restored: %s. Trying the '
          'step before it; once one restores, this one is moved to '
          '%s.damaged.',
          candidate, '; '.join(problems), self.step_dir(candidate))
      damaged[candidate] = problems
    else:
      raise CheckpointError(
          f'No complete checkpoint in {self.directory}: '
          + ' '.join(f'step {s}: {"; ".join(p)}.' for s, p in damaged.items())
          + ' Delete the damaged step directories (or the whole '
          'checkpoints directory to start afresh).')
    chosen = candidate  # pylint: disable=undefined-loop-variable
    if need_data:
      data_iterator.set_state(data_state)
      getattr(data_iterator, 'start_prefetch', lambda: None)()
    aside = {s: 'damaged' for s in damaged}
    if step is not None:
      aside.update({s: 'rolled-back' for s in steps if s > step})
    self._set_aside(aside, rollback_to=step)
    if damaged:
      logging.warning('Restored checkpoint step %d (the newest complete one) '
                      'instead of damaged step(s) %s.', chosen,
                      ', '.join(map(str, damaged)))
    if step is not None:
      logging.warning('Restored checkpoint step %d (config.restore_step).',
                      chosen)
    logging.info('Restored checkpoint of step %d from %s', chosen,
                 self.directory)
    return restored['state'], chosen

  def _pending_restore_step(self, step, steps):
    """`step`, or None when checkpoints/restore_step.json shows it has been
    restored before: a rerun of the command that rolled back must resume
    from the newest step, not roll back again."""
    if step is None:
      return None
    done = read_rollback(self.directory)
    if done is None or done.get('restore_step') != step:
      return step
    if steps[-1] != step:
      logging.warning(
          'config.restore_step=%d was applied on %s (see %s); resuming from '
          'the newest step, %d. Remove --config.restore_step (or delete that '
          'file to roll back to step %d again).', step, done.get('time'),
          os.path.join(self.directory, ROLLBACK_FILE), steps[-1], step)
    return None

  def _data_state(self, step: int) -> dict:
    """This process's iterator state in checkpoint `step`, remapped when the
    checkpoint was written by another number of processes."""
    states, _ = read_data_states(os.path.join(self.step_dir(step), 'data'))
    count, index = jax.process_count(), jax.process_index()
    if len(states) == count:
      return states[index]
    try:
      state, position, repeated = remap_data_state(states, index, count)
    except ValueError as e:
      raise CheckpointError(
          f'Checkpoint step {step} was written by {_processes(len(states))} '
          f'and this run has {count}: {e} Resume with '
          f'{_processes(len(states))}.') from None
    logging.warning(
        'Elastic resume: checkpoint step %d was written by %s, this run has '
        '%d. The global data position is %d examples; process %d continues '
        'from its share of it (next_index %d).', step,
        _processes(len(states)), count, position, index, state['next_index'])
    if repeated:
      logging.warning(
          'Elastic resume: %d examples past global position %d had already '
          'been read by some of the %d processes (records skipped with '
          "input.on_error='skip' made their positions drift apart); they "
          'are read again.', repeated, position, len(states))
    return state

  def _damaged_message(self, step, problems, steps, need_data) -> str:
    fix = f'Delete (or move away) {self.step_dir(step)}'
    older = next((s for s in reversed(steps)
                  if s < step and not self.check(s, need_data)), None)
    if older is not None:
      fix += (f', or pass --config.restore_step={older} (the newest complete '
              'step before it)')
    return (f'Checkpoint step {step} is damaged: {"; ".join(problems)}. '
            f'{fix}.')

  def _set_aside(self, aside: dict[int, str], rollback_to) -> None:
    """Renames steps to `<step>.<why>`: orbax would otherwise refuse to save
    these step numbers again (a newer step exists) and keep restoring them.
    Renamed by process 0 once every process has restored."""
    if not aside and rollback_to is None:
      return
    if distributed.is_coordinator():
      moved = []
      for s, why in sorted(aside.items()):
        target = f'{self.step_dir(s)}.{why}'
        n = 1
        while os.path.exists(target):
          n, target = n + 1, f'{self.step_dir(s)}.{why}-{n + 1}'
        os.rename(self.step_dir(s), target)
        moved.append(target)
        logging.warning('Moved checkpoint step %d to %s.', s, target)
      if rollback_to is not None:
        with open(os.path.join(self.directory, ROLLBACK_FILE), 'w') as f:
          json.dump({'restore_step': rollback_to, 'set_aside': moved,
                     'time': datetime.datetime.now().isoformat(
                         timespec='seconds')}, f, indent=2)
    distributed.sync('checkpoints_set_aside')
    self.manager.reload()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def read_rollback(directory: str) -> dict | None:
  """checkpoints/restore_step.json ({'restore_step', 'set_aside', 'time'}),
  or None."""
  try:
    with open(os.path.join(directory, ROLLBACK_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def finalised_steps(directory: str) -> list[int]:
  """The steps orbax would list in `directory`, without opening a manager."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if re.fullmatch(r'0|[1-9]\d*', n)
                and os.path.isdir(os.path.join(directory, n)))


def missing_step(directory: str, step, steps) -> str:
  have = ', '.join(map(str, steps)) if steps else 'none'
  return (f'there is no checkpoint of step {step} in {directory} (steps '
          f'there: {have})')


def restore_step_problem(workdir: str, step) -> str | None:
  """Why config.restore_step=`step` cannot be restored in `workdir`, or None
  (also None when this rollback was already applied: see restore)."""
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  steps = finalised_steps(directory)
  if step in steps:
    return None
  done = read_rollback(directory)
  if done is not None and done.get('restore_step') == step and steps:
    return None
  return missing_step(directory, step, steps)


def read_data_states(data_dir: str) -> tuple[list[Any], list[str]]:
  """Every process's iterator state in a checkpoint's data directory, in
  process order, and the problems found (each naming its file)."""
  if not os.path.isdir(data_dir):
    return [], [f'{data_dir} is missing (the data iterator positions)']
  files = {}
  for name in os.listdir(data_dir):
    m = _DATA_FILE.match(name)
    if m:
      files[(int(m.group(1)), int(m.group(2)))] = os.path.join(data_dir, name)
  counts = sorted({n for _, n in files})
  if len(counts) > 1:
    return [], [f'{data_dir} holds files of {counts} processes; expected '
                'one process count']
  count = counts[0] if counts else jax.process_count()
  states, problems = [], []
  for i in range(count):
    path = files.get((i, count), os.path.join(data_dir,
                                              f'process_{i}-of-{count}.json'))
    if not os.path.exists(path):
      problems.append(f'{path} is missing (the data iterator position of '
                      f'process {i})')
      continue
    try:
      with open(path) as f:
        states.append(json.load(f))
    except ValueError as e:
      problems.append(f'{path} is not valid JSON ({e}): truncated or garbled')
  return states, problems


def remap_data_state(states: list[Any], index: int,
                     count: int) -> tuple[dict, int, int]:
  """Process `index` of `count`'s iterator state, from the states of the
  P processes that wrote a checkpoint (states[i] of process i).

  Process i of P reads global positions i, i + P, i + 2P, ... of the
  training stream (pipeline.make_iterator), and its state {'next_index': n}
  counts the positions of its share it has passed, records skipped by
  input.on_error='skip' included. Its consumed positions are
  {i + P k : k < n_i}. The new processes resume at the first global
  position not consumed, F = min_i (i + P n_i): process j of M gets
  next_index = ceil((F - j) / M), the count of positions j, j + M, ... below
  F. This is exact when the consumed positions are exactly [0, F), i.e.
  sum_i n_i == F: always without skipped records (every n_i is then
  steps * batch / P). Skipped records let the processes' positions drift
  apart; the sum_i n_i - F positions past F that some process had consumed
  are then read again (none skipped, a few repeated).

  Returns (state, F, the number of positions read again).
  Raises ValueError for a state that is not a plain position (e.g. that of
  config.input.num_workers > 0, one position per worker).
  """
  writers = len(states)
  for i, state in enumerate(states):
    if not (isinstance(state, dict) and set(state) == {'next_index'}
            and isinstance(state['next_index'], int)):
      raise ValueError(
          f'process {i}\'s data position is {json.dumps(state)[:200]}, not '
          "a plain {'next_index': n} (what the pipeline writes with "
          'config.input.num_workers=0), so it cannot be remapped.')
  passed = [s['next_index'] for s in states]
  position = min(i + writers * n for i, n in enumerate(passed))
  next_index = max(0, -(-(position - index) // count))
  return {'next_index': next_index}, position, sum(passed) - position


def _processes(n: int) -> str:
  return f'{n} process' + ('' if n == 1 else 'es')


def _first_line(e: BaseException) -> str:
  """'Type: first line' of `e` and of its cause (orbax wraps tensorstore's
  error, which names the file, in a message that dumps a whole spec)."""
  parts = []
  while e is not None and len(parts) < 2:
    line = (str(e).strip().splitlines() or [''])[0]
    line = line.split(' See full TensorStore details')[0]
    parts.append(f'{type(e).__name__}: {line}'[:300])
    e = e.__cause__ or e.__context__
  return ' <- '.join(parts)


def _json_problems(path: str, required: bool) -> list[str]:
  if not os.path.exists(path):
    return [f'{path} is missing'] if required else []
  try:
    with open(path, 'rb') as f:
      json.loads(f.read())
  except ValueError as e:
    return [f'{path} is not valid JSON ({e}): truncated or garbled']
  except OSError as e:
    return [f'{path} cannot be read ({e})']
  return []


def _locations(tree) -> list[str]:
  """The OCDBT references ('btreenode:...', 'value:...') in a dump."""
  if isinstance(tree, str):
    return [tree] if tree.startswith(('btreenode:', 'value:')) else []
  if isinstance(tree, dict):
    tree = list(tree.values())
  if isinstance(tree, (list, tuple)):
    return [loc for t in tree for loc in _locations(t)]
  return []


def _ocdbt_problems(state_dir: str) -> list[str]:
  """Files the state's OCDBT index (manifest.ocdbt, its b-tree nodes)
  refers to that are missing or shorter than the bytes referred to.

  A reference reads 'KIND:BASE:RELATIVE_PATH:OFFSET:LENGTH' (tensorstore's
  ocdbt dump); only the b-tree nodes are read, never the array values.
  """
  # pylint: disable-next=g-import-not-at-top
  import tensorstore as ts
  if not hasattr(ts, 'ocdbt') or not hasattr(ts.ocdbt, 'dump'):
    return []  # an older tensorstore: leave it to the restore
  manifest = os.path.join(state_dir, 'manifest.ocdbt')
  try:
    kv = ts.KvStore.open({'driver': 'file',
                          'path': state_dir.rstrip('/') + '/'}).result()
    top = ts.ocdbt.dump(kv).result()
  except Exception as e:  # pylint: disable=broad-exception-caught
    return [f'{manifest} cannot be read ({_first_line(e)})']
  versions = top.get('versions') or []
  if not versions:
    return []
  todo = _locations(versions[-1].get('root', {}))
  ends: dict[str, int] = {}
  problems = []
  while todo:
    location = todo.pop()
    try:
      kind, rest = location.split(':', 1)
      rest, offset, length = rest.rsplit(':', 2)
      base, relative = rest.split(':', 1)
      end = int(offset) + int(length)
    except ValueError:
      continue  # a form this reader does not know: leave it to the restore
    path = os.path.normpath(os.path.join(state_dir, base, relative))
    ends[path] = max(ends.get(path, 0), end)
    if kind != 'btreenode' or not os.path.exists(path) or (
        os.path.getsize(path) < end):
      continue
    try:
      todo += _locations(ts.ocdbt.dump(kv, location).result())
    except Exception as e:  # pylint: disable=broad-exception-caught
      problems.append(f'{path} cannot be read ({_first_line(e)})')
  for path, end in sorted(ends.items()):
    if not os.path.exists(path):
      problems.append(f'{path} is missing (an array file the state index '
                      'refers to)')
    elif os.path.getsize(path) < end:
      problems.append(f'{path} is truncated ({os.path.getsize(path)} bytes; '
                      f'the state index refers to bytes up to {end})')
  return problems


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

  def agreed(self, step: int | None = None) -> bool:
    """True once any process has been signalled; the same on every process.

    Saving is collective, so processes must stop at the same step even when
    the signal reaches them at different times. Costs one tiny host
    all-gather per call when there are several processes.

    step: given by the training loop at every step (the same steps on every
    process): JAX's own preemption service (multi-process runs; on Cloud
    TPU it hears of maintenance events) is asked too, whether all
    processes reached its sync point.
    """
    if jax.process_count() == 1:
      return self.requested
    # pylint: disable-next=g-import-not-at-top
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.array(self.requested))
    if bool(np.any(flags)):
      return True
    return step is not None and _jax_preemption_sync_point(step)

  def restore_handler(self):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}


def _jax_preemption_sync_point(step: int) -> bool:
  """multihost_utils.reached_preemption_sync_point(step), False where JAX's
  preemption service is off (jax_enable_preemption_service) or not started.
  Its answer is the same on every process."""
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental import multihost_utils
  try:
    return bool(multihost_utils.reached_preemption_sync_point(step))
  except RuntimeError:  # the service was not initialised
    return False
