r"""Train and evaluate a model from an experiment config.

  python -m multimodal.train --config experiments/contrastive_digits.py:sigmoid \
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

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from multimodal import checkpoint as ckpt_lib
from multimodal import config as config_lib
from multimodal import mesh as mesh_lib
from multimodal import metrics_writer
from multimodal import optimizer as optim_lib
from multimodal import registry
from multimodal.data import pipeline
from multimodal.models import build_model

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, optionally with :VARIANT.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where to write everything.')


def log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def make_train_state(config, tx):
  """Builds the train state directly with its final shardings.

  Returns (graphdef, state, state_shardings). The model is built inside a
  jitted init, so parameters are never materialised on one device first.
  """
  abstract_model = nnx.eval_shape(
      lambda: build_model(config.model, rngs=nnx.Rngs(config.seed)))
  graphdef, _ = nnx.split(abstract_model)

  def init():
    model = build_model(config.model, rngs=nnx.Rngs(config.seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {'params': params, 'opt_state': tx.init(params),
            'step': jnp.zeros((), jnp.int32)}

  return graphdef, init


def merge(graphdef, params):
  return nnx.merge(graphdef, params)


def shard_batch(batch: dict, sharding) -> dict:
  """Per-process NumPy batch -> global jax.Arrays split over the batch axes."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


def pad_batch(batch: dict, size: int) -> dict:
  """Pads a final partial eval batch to `size` rows; `mask` marks real rows."""
  n = len(batch['label'])
  out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)])
         for k, v in batch.items()}
  out['mask'] = np.arange(size) < n
  return out


def evaluate(config, task, graphdef, params, mesh, source) -> dict:
  per_process = config.eval_batch_size // jax.process_count()
  it, preprocess, _ = pipeline.make_iterator(
      config, config.eval_split, train=False, fields=task.fields,
      batch_size=per_process, process_index=jax.process_index(),
      process_count=jax.process_count(), source=source)
  model = merge(graphdef, params)
  batches = (pad_batch(b, per_process) for b in it)
  with jax.set_mesh(mesh):
    return task.evaluate(model, batches, preprocess.tokenizer,
                         prefix=config.eval_split)


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) training; returns the final evaluation metrics."""
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))

  mesh = mesh_lib.build_mesh(config.mesh)
  mesh_lib.check_batch_size(config.batch_size, mesh)
  mesh_lib.check_batch_size(config.eval_batch_size, mesh)
  task = registry.get('task', config.task)(config)
  log(f'Devices: {jax.device_count()} ({jax.devices()[0].platform}), '
      f'processes: {jax.process_count()}, mesh: {dict(mesh.shape)}')

  tx = optim_lib.make_optimizer(config.optimizer, config.total_steps)
  lr_schedule = optim_lib.schedule(config.optimizer, config.total_steps)
  graphdef, init = make_train_state(config, tx)
  repl = mesh_lib.replicated(mesh)
  abstract_state = jax.eval_shape(init)
  state_shardings = jax.tree.map(lambda _: repl, abstract_state)
  batch_sharding = mesh_lib.batch_sharding(mesh)

  def train_step(state, batch):
    def loss_fn(params):
      return task.loss(merge(graphdef, params), batch)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'])
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                   lr=lr_schedule(state['step']))
    return ({'params': params, 'opt_state': opt_state,
             'step': state['step'] + 1}, metrics)

  train_step = jax.jit(train_step, donate_argnums=0,
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, repl))

  per_process = config.batch_size // jax.process_count()
  train_iter, preprocess, num_train = pipeline.make_iterator(
      config, config.train_split, train=True, fields=task.fields,
      batch_size=per_process, process_index=jax.process_index(),
      process_count=jax.process_count())
  eval_source = pipeline.open_source(config.dataset, config.eval_split)

  checkpointer = ckpt_lib.Checkpointer(workdir,
                                       max_to_keep=config.checkpoint_keep)
  with jax.set_mesh(mesh):
    if checkpointer.latest_step() is not None:
      abstract = jax.tree.map(
          lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
          abstract_state, state_shardings)
      state, start = checkpointer.restore(abstract, train_iter)
      log(f'Resumed from step {start} in {workdir}')
    else:
      state = jax.jit(init, out_shardings=state_shardings)()
      start = 0
  num_params = sum(x.size for x in jax.tree.leaves(state['params']))
  log(f'Model: {config.model.name}, {num_params / 1e6:.2f}M parameters; '
      f'{num_train} training records in this process; '
      f'{config.total_steps} steps of batch {config.batch_size}.')

  writer = metrics_writer.MetricsWriter(workdir)
  guard = ckpt_lib.PreemptionGuard()
  final = {}
  step = start
  t_last, step_last = time.perf_counter(), start
  t_start = None
  try:
    while step < config.total_steps:
      batch = shard_batch(next(train_iter), batch_sharding)
      with jax.set_mesh(mesh):
        state, metrics = train_step(state, batch)
      step += 1
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
        metrics['train/skipped_records'] = preprocess.skipped.count
        writer.write(step, metrics)
        log(f'step {step:5d}/{config.total_steps}  loss {metrics["train/loss"]:.4f}  '
            f'{rate:7.1f} ex/s  ETA {eta / 60:5.1f} min')
        if not np.isfinite(metrics['train/loss']):
          raise FloatingPointError(
              f'Loss is {metrics["train/loss"]} at step {step}; lower '
              'config.optimizer.lr or check the inputs.')
        t_last, step_last = now, step
      if step % config.checkpoint_every == 0 or guard.requested:
        checkpointer.save(step, state, train_iter, force=guard.requested)
      if guard.requested:
        log(f'Preempted at step {step}: checkpoint saved, exiting.')
        return {}
      if config.eval_every and step % config.eval_every == 0 and step < config.total_steps:
        ev = evaluate(config, task, graphdef, state['params'], mesh, eval_source)
        writer.write(step, ev)
        log(f'step {step:5d}  ' + task.summary(ev, config.eval_split))
    if checkpointer.latest_step() != step:
      checkpointer.save(step, state, train_iter, force=True)
    final = evaluate(config, task, graphdef, state['params'], mesh, eval_source)
    writer.write(step, final)
    if jax.process_index() == 0:
      with open(os.path.join(workdir, f'final_{config.eval_split}.json'), 'w') as f:
        json.dump(final, f, indent=2, sort_keys=True)
    log(f'Final ({config.eval_split} split, step {step}): '
        + task.summary(final, config.eval_split))
    for k in sorted(final):
      log(f'  {k}: {final[k]:.4f}')
  finally:
    checkpointer.close()
    writer.close()
    guard.restore_handler()
  return final


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError('Both --config and --workdir are required.')
  logging.set_verbosity(logging.WARNING)
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main, flags_parser=config_lib.parse_flags)
