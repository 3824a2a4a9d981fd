"""Divergence: a non-finite loss never reaches the parameters, the optimizer
state or a checkpoint; config.on_nonfinite picks 'stop' or 'skip'."""
from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from multimodal import mesh as mesh_lib
from multimodal import train
from multimodal.data import pipeline
from multimodal.testing import jaxprs

pytestmark = pytest.mark.usefixtures('fast_compiles')

POISONED = (3, 4)  # 1-based steps whose batch holds a NaN image


def _run(config, policy, steps=6):
  """Runs `steps` train steps of the tiny digits model, poisoning POISONED;
  returns the state after every step."""
  config.on_nonfinite = policy
  mesh = mesh_lib.build_mesh(config.mesh)
  task, ts, step_fn = train.make_trainer(config, mesh)
  it, _, _ = pipeline.make_iterator(config, 'train', train=True,
                                    fields=task.fields, batch_size=8)
  states = []
  with jax.set_mesh(mesh):
    state = train.init_state(ts)
    for step in range(1, steps + 1):
      batch = next(it)
      if step in POISONED:
        batch['image'][0, 0, 0] = np.nan
      state, _ = step_fn(state, train.shard_batch(
          batch, mesh_lib.batch_sharding(mesh)))
      states.append(jax.tree.map(np.asarray, state))
  return states


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_skip_policy_drops_only_the_poisoned_updates(tiny_config):
  states = _run(tiny_config, 'skip')
  for step in POISONED:  # params and Adam moments as before the bad step
    before, after = states[step - 2], states[step - 1]
    assert _same(after['params'], before['params'])
    assert _same(after['opt_state'], before['opt_state'])
  assert not _same(states[4]['params'], states[3]['params'])  # step 5 trains
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(states[-1]))
  health = states[-1]['health']
  assert (int(health['skipped']), int(health['in_a_row']),
          int(health['worst_run']), int(health['first_bad'])) == (2, 0, 2, 3)
  train.check_health(health, tiny_config, 6)  # 2 in a row < 10: carry on
  tiny_config.max_nonfinite_in_a_row = 2
  with pytest.raises(train.NonFiniteError, match='2 steps in a row'):
    train.check_health(health, tiny_config, 6)


def test_stop_policy_freezes_the_state_at_the_first_bad_step(tiny_config):
  states = _run(tiny_config, 'stop')
  for later in states[POISONED[0] - 1:]:  # nothing moves after step 2
    assert _same(later['params'], states[1]['params'])
  with pytest.raises(train.NonFiniteError,
                     match='not finite at step 3.*on_nonfinite=skip'):
    train.check_health(states[-1]['health'], tiny_config, 6)
  train.check_health(states[1]['health'], tiny_config, 2)  # before: fine


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(
    tiny_config, tmp_path):
  cfg = tiny_config
  cfg.total_steps = 8
  cfg.log_every = 4
  cfg.checkpoint_every = 1
  cfg.optimizer.lr = 1e30  # finite updates that blow the activations up
  cfg.optimizer.warmup_steps = 0
  cfg.optimizer.clip_norm = 0.0
  with pytest.raises(train.NonFiniteError, match='not finite at step') as e:
    train.train_and_evaluate(cfg, str(tmp_path))
  first_bad = int(str(e.value).split('not finite at step ')[1].split()[0])
  mngr = ocp.CheckpointManager(os.path.join(tmp_path, 'checkpoints'))
  last = mngr.latest_step()
  assert last == first_bad - 1, (last, first_bad)
  params = mngr.restore(last, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))['state']['params']
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def _step_and_batch(config):
  """(mesh, train state spec, jitted step, one sharded batch of 8) of
  the tiny digits model."""
  mesh = mesh_lib.build_mesh(config.mesh)
  task, ts, step_fn = train.make_trainer(config, mesh)
  it, _, _ = pipeline.make_iterator(config, 'train', train=True,
                                    fields=task.fields, batch_size=8)
  return (mesh, ts, step_fn,
          train.shard_batch(next(it), mesh_lib.batch_sharding(mesh)))


def test_the_guarded_update_needs_no_second_copy_of_the_state(
    tiny_config, monkeypatch):
  """The update runs under a conditional: the step's temporaries are fewer
  than with the update computed and then a select of every value (the
  former form, which kept the updated state beside the old one)."""

  def temp_bytes():
    mesh, ts, step_fn, batch = _step_and_batch(tiny_config)
    with jax.set_mesh(mesh):
      compiled = step_fn.lower(train.init_state(ts), batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  guarded = temp_bytes()

  def select_every_value(pred, update, keep, *operands):
    return jax.tree.map(lambda n, o: jax.numpy.where(pred, n, o),
                        update(*operands), keep(*operands))

  monkeypatch.setattr(jax.lax, 'cond', select_every_value)
  assert guarded < temp_bytes()


def test_an_optimizer_that_changes_its_state_types_is_named(tiny_config):
  """The guarded update needs the state's types unchanged; a registered
  optimizer that breaks this gets an error naming it."""
  import optax  # pylint: disable=g-import-not-at-top
  from multimodal import registry  # pylint: disable=g-import-not-at-top

  @registry.register('optimizer', 'widening_test_opt')
  def widening(learning_rate, *, weight_decay, decay_mask):
    del learning_rate, weight_decay, decay_mask
    return optax.GradientTransformation(
        lambda params: {'n': jax.numpy.zeros((), jax.numpy.int32)},
        lambda updates, state, params=None: (
            updates, {'n': state['n'].astype(jax.numpy.float32)}))

  tiny_config.optimizer.name = 'widening_test_opt'
  for key in ('b1', 'b2', 'eps', 'mu_dtype'):
    if key in tiny_config.optimizer:
      tiny_config.optimizer[key] = None
  with pytest.raises(TypeError, match="'widening_test_opt'.*shapes and dtypes"):
    _run(tiny_config, 'skip', steps=1)


def _primitives(jaxpr) -> list[str]:
  return [eqn.primitive.name for eqn in jaxprs.equations(jaxpr)]


def test_the_guarded_update_does_not_reduce_the_gradients_again(
    tiny_config):
  """The clipping inside the conditional update takes the gradient norm
  the step has already computed (and logs): the update's branch holds no
  reduction, only elementwise work."""
  assert tiny_config.optimizer.clip_norm > 0
  mesh, ts, step_fn, batch = _step_and_batch(tiny_config)
  with jax.set_mesh(mesh):
    jaxpr = jax.make_jaxpr(step_fn)(train.init_state(ts), batch).jaxpr
  conds = [eqn for eqn in jaxprs.equations(jaxpr)
           if eqn.primitive.name == 'cond']
  assert len(conds) == 1
  branches = conds[0].params['branches']
  assert 'reduce_sum' in _primitives(jaxpr)  # the step's own norm
  assert not [name for branch in branches
              for name in _primitives(branch.jaxpr)
              if name.startswith('reduce_')]
