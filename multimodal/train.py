r"""Train and evaluate a model from an experiment config.

  python -m multimodal.train \
      --config projects/digits/configs/contrastive.py:sigmoid \
      --workdir workdirs/run1 [--config.total_steps=100 ...]

Writes to the workdir: config.json, metrics.jsonl, tensorboard/ event files,
checkpoints/ (orbax, async, with the data iterator position). Rerunning with
the same workdir resumes from the latest checkpoint; SIGTERM (preemption)
checkpoints and exits cleanly.

The step is flat and functional (big_vision style): the train state is a
pytree {params, opt_state, step} of plain dicts; the NNX model is re-merged
from its graphdef inside the jitted step.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import threading
import time
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from multimodal import base_config
from multimodal import checkpoint as ckpt_lib
from multimodal import config as config_lib
from multimodal import config_checks
from multimodal import distributed
from multimodal import mesh as mesh_lib
from multimodal import metrics_writer
from multimodal import optimizer as optim_lib
from multimodal import pretrained
from multimodal import registry
from multimodal import runtime
from multimodal import sharding
from multimodal import tree as tree_lib
from multimodal.data import pipeline
from multimodal.data import prefetch
from multimodal.data import sources
from multimodal.data import text as text_lib
from multimodal.models import build_model
from multimodal.models import pipeline_parallel
from multimodal.models import rng

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, optionally with :VARIANT.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where to write everything.')


def log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


@dataclasses.dataclass(frozen=True)
class TrainState:
  """How to build the train state pytree {params, opt_state, step}.

  graphdef: the model's static structure (re-merged with params in a step).
  init: () -> state; `init_state` runs it.
  abstract: the state's jax.ShapeDtypeStructs.
  shardings: the state's NamedShardings under the configured rules.
  rules: the logical axis rules (multimodal.sharding).
  microbatches: config.pipeline.microbatches (used on a mesh with stages).
  """
  graphdef: Any
  init: Callable[[], dict]
  abstract: Any
  shardings: Any
  rules: sharding.Rules
  microbatches: int = 4


def make_train_state(config, tx, mesh) -> TrainState:
  rules = sharding.get_rules(config.sharding.rules,
                             config.sharding.get('overrides', ()))
  abstract_model = nnx.eval_shape(
      lambda: build_model(config.model, rngs=rng.Rngs(config.seed)))
  graphdef, _ = nnx.split(abstract_model)
  param_shardings = sharding.param_shardings(
      nnx.state(abstract_model, nnx.Param), mesh, rules)

  def state(params):
    return {'params': params, 'opt_state': tx.init(params),
            'step': jnp.zeros((), jnp.int32), 'health': initial_health()}

  def init():
    model = build_model(config.model, rngs=rng.Rngs(config.seed))
    return state(nnx.to_pure_dict(nnx.state(model, nnx.Param)))

  # The shapes from the model already traced (tracing init would build it
  # again).
  abstract = jax.eval_shape(state, nnx.to_pure_dict(
      nnx.state(abstract_model, nnx.Param)))
  shardings = sharding.state_shardings(abstract, param_shardings, mesh)
  return TrainState(graphdef, init, abstract, shardings, rules,
                    microbatches(config))


def init_state(ts: TrainState, mode: str = 'jit') -> dict:
  """A fresh train state, placed as `ts.shardings` say (call under the mesh).

  mode 'jit': `ts.init` compiled with out_shardings, so each array is created
  where it lives, never on one device first. 'eager': `ts.init` run op by op
  (no program to compile, which on CPU is most of jit's time for a large
  model), the whole state on the default device, then placed: for one
  process and a state that fits one device. The two agree to float32
  rounding (XLA fuses some initializers' arithmetic differently).
  """
  if mode == 'jit':
    return jax.jit(ts.init, out_shardings=ts.shardings)()
  if mode != 'eager':
    choices = ' or '.join(repr(m) for m in base_config.INIT_MODES)
    raise ValueError(f'init mode must be {choices}, got {mode!r}.')
  if jax.process_count() > 1:
    raise ValueError("init_mode='eager' needs one process (this run has "
                     f"{jax.process_count()}); use init_mode='jit'.")
  # Under jit every output is its own buffer; eagerly one array can fill
  # several leaves (a shared zero), which the step's donation rejects.
  seen = set()

  def own_buffer(x):
    if id(x) in seen:
      return jnp.copy(x)
    seen.add(id(x))
    return x

  return jax.device_put(jax.tree.map(own_buffer, ts.init()), ts.shardings)


def compile_during(step_fn, ts: TrainState, batch: dict, make_state
                   ) -> tuple[dict, Any, dict]:
  """Compiles the step for `batch` while `make_state()` creates the state.

  The step is lowered against the state's shapes and shardings (no state
  needed), then XLA compiles it in a thread, which releases the GIL, while
  `make_state` runs here (the init: its own compile or op-by-op work). On
  two CPU cores this took ViT-B/32 SigLIP's start from 38.8 s to 24.6 s
  with the jitted init (benchmarks/README.md). Call under the mesh.

  Returns:
    (state, the compiled step (state, batch) -> (state, metrics) for
    batches shaped like `batch`, {'lower_s', 'compile_s', 'init_s'}).
  """
  t = time.perf_counter()
  lowered = step_fn.lower(ckpt_lib.abstract_like(ts.abstract, ts.shardings),
                          batch)
  times = {'lower_s': time.perf_counter() - t}
  result = {}

  def compile_step():
    t = time.perf_counter()
    try:
      result['compiled'] = lowered.compile()
    except Exception as e:  # pylint: disable=broad-except
      result['error'] = e  # raised in the caller's thread below
    times['compile_s'] = time.perf_counter() - t

  thread = threading.Thread(target=compile_step, name='compile_step')
  thread.start()
  try:
    t = time.perf_counter()
    state = make_state()
    times['init_s'] = time.perf_counter() - t
  finally:
    thread.join()
  if 'error' in result:
    raise result['error']
  return state, result['compiled'], times


def same_shapes_or(compiled, batch: dict, step_fn):
  """The step: `compiled` for batches shaped like `batch`, `step_fn` (the
  jitted step, which compiles for new shapes) for any other."""
  def shapes(b):
    return jax.tree.map(lambda x: (x.shape, x.dtype), b)

  expected = shapes(batch)

  def run(state, batch):
    if shapes(batch) == expected:
      return compiled(state, batch)
    return step_fn(state, batch)

  return run


def microbatches(config) -> int:
  """config.pipeline.microbatches (4 where a recorded config lacks it)."""
  return int(config.get('pipeline', {}).get('microbatches', 4))


def initial_health() -> dict:
  """The train state's record of non-finite steps (int32 scalars).

  skipped: steps whose loss or gradient norm was not finite (their update
    was not applied); in_a_row: how many of the latest steps were such;
  worst_run: the longest such run so far; first_bad: the first such step
    (1-based), -1 while there is none.
  """
  zero = jnp.zeros((), jnp.int32)
  return {'skipped': zero, 'in_a_row': zero, 'worst_run': zero,
          'first_bad': zero - 1}


def make_train_step(task, tx, lr_schedule, ts: TrainState, mesh,
                    config_opt=None, on_nonfinite: str = 'stop'):
  """The jitted step: (state, global batch) -> (new state, metrics).

  The state is donated (updated in place) and keeps `ts.shardings`; metrics
  are replicated float32 scalars. `config_opt` (config.optimizer) names the
  frozen parameters, if any.

  A step whose loss or gradient norm is not finite never changes the
  parameters or the optimizer state; `state['health']` counts it (see
  initial_health). on_nonfinite='stop' also freezes every later update, so
  the state the host finds when it checks (check_health) is the one before
  the first bad step; 'skip' carries on with the next batch.
  """
  if on_nonfinite not in base_config.NONFINITE_POLICIES:
    raise ValueError(f'config.on_nonfinite={on_nonfinite!r}: use one of '
                     f'{base_config.NONFINITE_POLICIES}.')
  config_opt = config_opt or {}
  tx = optax.with_extra_args_support(tx)  # a plain optax transformation too

  frozen = optim_lib.frozen_mask(config_opt, ts.abstract['params'])

  def train_step(state, batch):
    def loss_fn(params):
      # No backward pass through frozen parameters (e.g. a locked tower).
      params = jax.tree.map(
          lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
      return task.loss(nnx.merge(ts.graphdef, params), batch)

    # The rules are read while tracing: activation constraints and the
    # sharded loss follow the configured layout (and pipelined stacks the
    # microbatch count).
    with (nnx.logical_axis_rules(ts.rules),
          pipeline_parallel.microbatches(ts.microbatches)):
      (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state['params'])
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    health = state['health']
    apply = finite
    if on_nonfinite == 'stop':
      apply = apply & (health['first_bad'] < 0)

    def update(grads, opt_state, params):
      # Frozen parameters' gradients are zero (stop_gradient above), so
      # grad_norm is the norm the clipping would compute.
      updates, opt_state = tx.update(grads, opt_state, params,
                                     grad_norm=grad_norm)
      return optax.apply_updates(params, updates), opt_state

    # A conditional, not the update followed by a select of every value:
    # the selects kept the updated state beside the old one (ViT-B/32
    # SigLIP: 345 MiB more temporary memory; tests/test_nonfinite.py).
    try:
      params, opt_state = jax.lax.cond(
          apply, update, lambda grads, opt_state, params: (params, opt_state),
          grads, state['opt_state'], state['params'])
    except TypeError as e:  # the two branches' types differ
      raise TypeError(
          f'config.optimizer {config_opt.get("name")!r}: an update must '
          'return parameters and optimizer state of the shapes and dtypes '
          f'it was given (the next step takes them back): {e}') from e
    bad = (~finite).astype(jnp.int32)
    in_a_row = (health['in_a_row'] + 1) * bad
    health = {'skipped': health['skipped'] + bad, 'in_a_row': in_a_row,
              'worst_run': jnp.maximum(health['worst_run'], in_a_row),
              'first_bad': jnp.where((health['first_bad'] < 0) & (bad > 0),
                                     state['step'] + 1, health['first_bad'])}
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   lr=lr_schedule(state['step']))
    return ({'params': params, 'opt_state': opt_state,
             'step': state['step'] + 1, 'health': health}, metrics)

  return jax.jit(train_step, donate_argnums=0,
                 in_shardings=(ts.shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=(ts.shardings, mesh_lib.replicated(mesh)))


class NonFiniteError(FloatingPointError):
  """Training stopped on non-finite losses (config.on_nonfinite)."""


# Exit status of `python -m multimodal.train` (0: finished). main() reports
# the errors of EXIT_STATUS in one line: a config mistake (2, as for bad
# flags: config.parse_flags), non-finite losses (config.on_nonfinite), no
# usable checkpoint to resume from.
EXIT_CONFIG = 2
EXIT_NONFINITE = 3
EXIT_CHECKPOINT = 4
EXIT_STATUS = {config_checks.ConfigError: EXIT_CONFIG,
               NonFiniteError: EXIT_NONFINITE,
               ckpt_lib.CheckpointError: EXIT_CHECKPOINT}
# Preempted (SIGTERM/SIGINT) with a durable checkpoint: rerun to resume.
# EX_TEMPFAIL, "try again", and non-zero so that schedulers retry the job.
EXIT_PREEMPTED = 75


def check_health(health, config, step: int) -> dict:
  """Reads state['health'] (a host sync) and raises NonFiniteError when the
  run must stop: with on_nonfinite='stop' at the first non-finite step, with
  'skip' after config.max_nonfinite_in_a_row of them in a row. Returns the
  counts as ints."""
  h = {k: int(v) for k, v in jax.device_get(health).items()}
  fix = ('Lower config.optimizer.lr, raise config.optimizer.warmup_steps, or '
         'check the inputs')
  if config.get('on_nonfinite', 'stop') == 'stop' and h['first_bad'] >= 0:
    raise NonFiniteError(
        f'The loss or gradient norm was not finite at step {h["first_bad"]} '
        f'(noticed at step {step}); no update was applied from then on and no '
        f'checkpoint was written after step {h["first_bad"] - 1}. {fix}, or '
        'set config.on_nonfinite=skip to skip such steps.')
  limit = config.get('max_nonfinite_in_a_row', 10)
  if h['worst_run'] >= limit:
    raise NonFiniteError(
        f'{h["worst_run"]} steps in a row had a non-finite loss or gradient '
        f'norm (config.max_nonfinite_in_a_row={limit}; {h["skipped"]} skipped '
        f'in all, the first at step {h["first_bad"]}). {fix}.')
  return h


def make_trainer(config, mesh):
  """(task, TrainState, jitted train step) of an experiment config on
  `mesh`: what train_and_evaluate runs (benchmarks and tests build it the
  same way)."""
  task = registry.get('task', config.task)(config)
  tx = optim_lib.make_optimizer(config.optimizer, config.total_steps)
  lr_schedule = optim_lib.schedule(config.optimizer, config.total_steps)
  ts = make_train_state(config, tx, mesh)
  step = make_train_step(task, tx, lr_schedule, ts, mesh, config.optimizer,
                         config.get('on_nonfinite', 'stop'))
  return task, ts, step


def read_init_from(config, ts: TrainState) -> dict:
  """{param path: NumPy array} that config.init_from selects (logged)."""
  arrays, notes = pretrained.init_from(config.init_from, config.model,
                                       ts.abstract['params'])
  flat = tree_lib.flatten(ts.abstract['params'])
  loaded = sum(v.size for v in arrays.values())
  total = sum(v.size for v in flat.values())
  log(f'init_from {config.init_from.path}: {len(arrays)} of {len(flat)} '
      f'parameter arrays ({loaded / 1e6:.2f}M of {total / 1e6:.2f}M values)'
      + ''.join(f'; {n}' for n in notes))
  return arrays


def place_init_from(arrays: dict, ts: TrainState, state: dict) -> dict:
  """`state` with `arrays` (read_init_from) as its parameters, placed on
  their shardings. The optimizer state stays as initialised (Adam's moments
  start at zero whatever the parameters)."""
  flat = tree_lib.flatten(state['params'])
  flat_shardings = tree_lib.flatten(ts.shardings['params'])
  for key, value in arrays.items():
    flat[key] = jax.device_put(value.astype(flat[key].dtype),
                               flat_shardings[key])
  return dict(state, params=tree_lib.unflatten_like(flat, state['params']))


def shard_batch(batch: dict, sharding) -> dict:
  """Per-process NumPy batch -> global jax.Arrays split over the batch axes."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


def pad_batch(batch: dict, size: int) -> dict:
  """Pads a final partial eval batch to `size` rows; `mask` marks real rows."""
  n = len(next(iter(batch.values())))
  out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)])
         for k, v in batch.items()}
  out['mask'] = np.arange(size) < n
  return out


class Preempted(Exception):
  """A preemption signal arrived (PreemptionGuard); the message says where
  it was noticed."""


def evaluate(config, task, ts: TrainState, params, mesh, source,
             should_stop: Callable[[], bool] | None = None) -> dict:
  """One pass over the eval split; the same metrics on every process.

  should_stop: polled before every batch (on every process alike); True
  raises Preempted.
  """
  return evaluate_model(config, task, nnx.merge(ts.graphdef, params),
                        ts.rules, mesh, source, should_stop)


def evaluate_model(config, task, model, rules, mesh, source,
                   should_stop: Callable[[], bool] | None = None) -> dict:
  """evaluate() for a built model (e.g. an export's, multimodal.evaluate):
  config.eval_split read from `source` in batches of
  config.eval_batch_size, the task's evaluators run on the outputs, under
  the logical axis `rules`."""
  pc, pi = jax.process_count(), jax.process_index()
  per_process = config.eval_batch_size // pc
  it, preprocess, num_records = pipeline.make_iterator(
      config, config.eval_split, train=False, fields=task.eval_fields,
      batch_size=per_process, process_index=pi, process_count=pc,
      source=source)
  # Every process must take part in every (collective) step, even when its
  # share of the split runs out first: it then feeds fully masked batches.
  num_batches = math.ceil(math.ceil(num_records / pc) / per_process)
  batch_sharding = mesh_lib.batch_sharding(mesh)

  def batches():
    done = 0
    for batch in it:
      if should_stop is not None and should_stop():
        raise Preempted('during evaluation')
      done += 1
      yield shard_batch(pad_batch(batch, per_process), batch_sharding)
    for _ in range(num_batches - done):
      if should_stop is not None and should_stop():
        raise Preempted('during evaluation')
      empty = {k: v[:0] for k, v in batch.items()}  # pylint: disable=undefined-loop-variable
      yield shard_batch(pad_batch(empty, per_process), batch_sharding)

  with (jax.set_mesh(mesh), nnx.logical_axis_rules(rules),
        pipeline_parallel.microbatches(microbatches(config))):
    return task.evaluate(model, batches(), preprocess.tokenizer, mesh,
                         prefix=config.eval_split)


class StepProfiler:
  """Traces steps `first`..`last` (config.profile_steps) with the JAX
  profiler into `logdir` (TensorBoard's profile plugin or Perfetto read it).
  """

  def __init__(self, steps, logdir: str):
    steps = tuple(steps or ())
    if steps and (len(steps) != 2 or not 1 <= steps[0] <= steps[1]):
      raise ValueError(f'config.profile_steps={steps}: give (first, last) '
                       'steps with 1 <= first <= last, e.g. (10, 12).')
    self.steps, self.logdir, self.active = steps, logdir, False

  def before_step(self, step: int) -> None:
    if self.steps and step == self.steps[0]:
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def after_step(self, step: int, metrics) -> None:
    if self.active and step == self.steps[1]:
      jax.block_until_ready(metrics)  # the traced steps' work, whole
      self.stop()
      log(f'Profiled steps {self.steps[0]}-{step} into {self.logdir}')

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


def validate_data(config, preprocess, source) -> None:
  """Checks the training split's records (`source`) before any step
  (config.input.validate_records of them) and logs the problems found per
  reason.

  A key no checked record has is a config mistake and always raises; other
  problems raise with on_error='raise' and, with 'skip', when they exceed
  max_skip_fraction of the records checked.
  """
  limit = config.input.get('validate_records', -1)
  if not limit:
    return
  text_keys = [k for f, k in preprocess.keys().items()
               if preprocess.kinds[f].text]
  report = sources.validate(source, list(preprocess.keys().values()),
                            text_keys=text_keys,
                            max_records=None if limit < 0 else limit)
  log(report.summary())
  missing = report.counts.get('missing_key', 0)
  if missing and missing == report.num_checked:
    raise ValueError(f'No record has the keys config.input.fields names: '
                     f'{report.examples["missing_key"][0]}. Fix '
                     'config.input.fields (output field -> record key).')
  bad = len(report.bad)
  if bad and config.input.on_error == 'raise':
    reason = sorted(report.counts)[0]
    raise ValueError(f'{bad} of {report.num_checked} training records cannot '
                     f'be used, e.g. {report.examples[reason][0]}. Fix them or '
                     "set config.input.on_error='skip' to skip and count them.")
  if bad > config.input.max_skip_fraction * report.num_checked:
    raise ValueError(f'{bad} of {report.num_checked} training records cannot '
                     'be used, more than config.input.max_skip_fraction='
                     f'{config.input.max_skip_fraction}:\n{report.summary()}')


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) training; returns the final evaluation metrics, or {}
  when a preemption signal (SIGTERM, SIGINT) stopped it.

  A signal is acted on at the next poll, in start-up, between steps or
  between evaluation batches: the state of the last completed step is
  checkpointed (unless it already is), the save is waited for, and the run
  returns; rerunning the same command resumes, and reruns an evaluation
  that the signal interrupted.
  """
  guard = ckpt_lib.PreemptionGuard()
  try:
    return _train_and_evaluate(config, workdir, guard)
  except Preempted as e:
    log(f'Preempted {e}: the checkpoint is durable; rerun the same command '
        'to resume.')
    return {}
  finally:
    guard.restore_handler()


def _train_and_evaluate(config, workdir: str, guard) -> dict:
  def poll():
    if guard.agreed():
      raise Preempted('during start-up')

  registry.import_modules(config.get('imports', ()))
  config_checks.check(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))

  mesh = mesh_lib.build_mesh(config.mesh)
  mesh_lib.check_batch_size(config.batch_size, mesh)
  mesh_lib.check_batch_size(config.eval_batch_size, mesh)
  task, ts, train_step = make_trainer(config, mesh)
  log(f'Devices: {jax.device_count()} ({jax.devices()[0].platform}), '
      f'processes: {jax.process_count()}, mesh: {dict(mesh.shape)}, '
      f'allocator: {runtime.allocator()}, compilation cache: '
      f'{jax.config.jax_compilation_cache_dir or "off"}')

  log(sharding.describe(ts.shardings, ts.abstract) +
      f' (rules: {config.sharding.rules})')
  groups = optim_lib.group_sizes(config.optimizer, ts.abstract['params'])
  if len(groups) > 1:
    log('Parameter groups (values): ' + ', '.join(
        f'{k} {v / 1e6:.2f}M' for k, v in sorted(groups.items())))
  batch_sharding = mesh_lib.batch_sharding(mesh)

  # Process 0 opens the training split first: that builds the built-in data
  # if it is missing, or a webdataset index (concurrent builds into one
  # directory would collide); the others wait for it.
  train_source = None
  if distributed.is_coordinator():
    train_source = pipeline.open_source(config.dataset, config.train_split)
  distributed.sync('dataset_ready')
  if train_source is None:
    train_source = pipeline.open_source(config.dataset, config.train_split)
  per_process = config.batch_size // jax.process_count()
  host_iter, preprocess, num_train = pipeline.make_iterator(
      config, config.train_split, train=True, fields=task.fields,
      batch_size=per_process, process_index=jax.process_index(),
      process_count=jax.process_count(), source=train_source)
  train_iter = prefetch.DevicePrefetch(
      host_iter, lambda b: shard_batch(b, batch_sharding),
      config.input.get('device_prefetch', 2))
  eval_source = pipeline.open_source(config.dataset, config.eval_split)
  for note in text_lib.check_vocab(config.model, preprocess.tokenizer):
    log(note)
  if distributed.is_coordinator():
    validate_data(config, preprocess, train_source)
  poll()

  checkpointer = ckpt_lib.Checkpointer(workdir,
                                       max_to_keep=config.checkpoint_keep)
  fresh = checkpointer.latest_step() is None
  init_arrays = None
  if fresh and config.get('init_from') and config.init_from.get('path'):
    # Read on the host, outside the mesh context (the source model is built
    # abstractly to find its position grids).
    init_arrays = read_init_from(config, ts)
  first_batch, run_step = None, train_step
  with jax.set_mesh(mesh):
    if not fresh:
      state, start = checkpointer.restore(
          ckpt_lib.abstract_like(ts.abstract, ts.shardings), train_iter,
          step=config.get('restore_step'))
      log(f'Resumed from step {start} in {workdir}')
    else:
      def make_state():
        state = init_state(ts, config.get('init_mode', 'jit'))
        if init_arrays is not None:
          state = place_init_from(init_arrays, ts, state)
        return state

      # A fresh run reads its first batch now (the data position is
      # restored nowhere), so that the step compiles while the state is
      # created.
      first_batch = next(train_iter)
      state, compiled, _ = compile_during(train_step, ts, first_batch,
                                          make_state)
      run_step = same_shapes_or(compiled, first_batch, train_step)
      start = 0
  num_params = sum(x.size for x in jax.tree.leaves(state['params']))
  log(f'Model: {config.model.name}, {num_params / 1e6:.2f}M parameters; '
      f'{num_train} training records; '
      f'{config.total_steps} steps of batch {config.batch_size}.')

  writer = metrics_writer.MetricsWriter(workdir)
  profiler = StepProfiler(config.get('profile_steps', ()),
                          os.path.join(workdir, 'profile'))
  final = {}
  step = start
  t_last, step_last = time.perf_counter(), start
  t_start = None

  def periodic_eval():
    try:
      ev = evaluate(config, task, ts, state['params'], mesh, eval_source,
                    guard.agreed)
    except Preempted as e:
      if checkpointer.latest_step() != step:
        checkpointer.save(step, state, train_iter, force=True)
      raise Preempted(f'{e} at step {step}') from None
    writer.write(step, ev)
    log(f'step {step:5d}  ' + task.summary(ev, config.eval_split))

  try:
    poll()
    # A preemption between a step and its evaluation (or during it) left
    # this evaluation undone: the checkpoint was saved first.
    if (not fresh and config.eval_every and step % config.eval_every == 0
        and step < config.total_steps):
      periodic_eval()
    while step < config.total_steps:
      profiler.before_step(step + 1)
      if first_batch is not None:  # read before the init (compile_during)
        batch, first_batch = first_batch, None
      else:
        batch = next(train_iter)
      # The step reads only device arrays: an implicit transfer (a host
      # value passed in, or a host sync inside) is an error, not a stall.
      with jax.set_mesh(mesh), jax.transfer_guard('disallow'):
        state, metrics = run_step(state, batch)
      step += 1
      profiler.after_step(step, metrics)
      if t_start is None:  # exclude compilation from the ETA
        jax.block_until_ready(metrics)
        t_start, t_last, step_last = time.perf_counter(), time.perf_counter(), step
      if step % config.log_every == 0 or step == config.total_steps:
        metrics = jax.device_get(metrics)
        now = time.perf_counter()
        rate = (step - step_last) * config.batch_size / max(now - t_last, 1e-9)
        eta = (config.total_steps - step) * (now - t_start) / max(step - start - 1, 1)
        metrics = {f'train/{k}': float(v) for k, v in metrics.items()}
        metrics['train/examples_per_sec'] = rate
        metrics.update(preprocess.skipped.metrics())
        health = check_health(state['health'], config, step)
        metrics['train/nonfinite_skipped'] = health['skipped']
        writer.write(step, metrics)
        log(f'step {step:5d}/{config.total_steps}  loss {metrics["train/loss"]:.4f}  '
            f'{rate:7.1f} ex/s  ETA {eta / 60:5.1f} min'
            + (f'  ({health["skipped"]} non-finite steps skipped)'
               if health['skipped'] else ''))
        t_last, step_last = now, step
        preprocess.skipped.check(config.input.max_skip_fraction)
      stop = guard.agreed(step)
      if step % config.checkpoint_every == 0 or stop:
        check_health(state['health'], config, step)  # never save a bad state
        checkpointer.save(step, state, train_iter, force=stop)
      if stop:
        raise Preempted(f'after step {step}')
      if config.eval_every and step % config.eval_every == 0 and step < config.total_steps:
        periodic_eval()
    check_health(state['health'], config, step)
    if checkpointer.latest_step() != step:
      checkpointer.save(step, state, train_iter, force=True)
    final = evaluate(config, task, ts, state['params'], mesh, eval_source,
                     guard.agreed)
    writer.write(step, final)
    if jax.process_index() == 0:
      with open(os.path.join(workdir, f'final_{config.eval_split}.json'), 'w') as f:
        json.dump(final, f, indent=2, sort_keys=True)
    log(f'Final ({config.eval_split} split, step {step}): '
        + task.summary(final, config.eval_split))
    for k in sorted(final):
      log(f'  {k}: {final[k]:.4f}')
  finally:
    profiler.stop()
    checkpointer.close()  # waits until the last save is durable
    writer.close()
  return final


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError('Both --config and --workdir are required.')
  logging.set_verbosity(logging.WARNING)
  # Before anything touches a device: the allocator, XLA flags and the
  # compilation cache are read when JAX starts, and JAX cannot join a
  # multi-process job afterwards.
  runtime.prepare(_CONFIG.value)
  distributed.initialize(_CONFIG.value.get('distributed'))
  try:
    if not train_and_evaluate(_CONFIG.value, _WORKDIR.value):
      sys.exit(EXIT_PREEMPTED)
  except tuple(EXIT_STATUS) as e:
    if os.environ.get('MULTIMODAL_TRACEBACK', '0') not in ('', '0'):
      raise
    # A config mistake, a diverged run or unusable checkpoints need their one
    # line, not a traceback; the exit status says which.
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(next(code for error, code in EXIT_STATUS.items()
                  if isinstance(e, error)))


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
