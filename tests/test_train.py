"""End-to-end: training lowers the loss; checkpoints restore and resume exactly."""
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import conftest

from multimodal import mesh as mesh_lib
from multimodal import metrics_writer
from multimodal import registry
from multimodal import train
from multimodal.data import pipeline


def test_short_training_run_lowers_the_loss(tiny_config, tmp_path):
  cfg = tiny_config
  # Created op by op (the other runs of this suite use the default, jit).
  cfg.init_mode = 'eager'
  cfg.total_steps = 30
  cfg.log_every = 1
  cfg.checkpoint_every = 1000
  cfg.optimizer.lr = 3e-3
  final = train.train_and_evaluate(cfg, str(tmp_path))
  losses = [m['train/loss'] for m in metrics_writer.read_metrics(str(tmp_path))
            if 'train/loss' in m]
  assert len(losses) == 30
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
  for key in ('test/zeroshot/image', 'test/zeroshot/audio',
              'test/zeroshot/image~audio', 'test/retrieval/image->audio@5'):
    assert 0.0 <= final[key] <= 1.0
  assert os.path.exists(tmp_path / 'config.json')
  assert json.load(open(tmp_path / 'final_test.json')) == final
  assert any(n.startswith('events') for n in os.listdir(tmp_path / 'tensorboard'))


def test_eager_init_matches_jit_init(tiny_config):
  mesh = mesh_lib.build_mesh(tiny_config.mesh)
  _, ts, _ = train.make_trainer(tiny_config, mesh)
  with jax.set_mesh(mesh):
    jitted = train.init_state(ts, 'jit')
    eager = train.init_state(ts, 'eager')
    with pytest.raises(ValueError, match="'jit' or 'eager'"):
      train.init_state(ts, 'lazy')
  assert jax.tree.structure(eager) == jax.tree.structure(jitted)
  leaves = jax.tree.leaves(jitted)
  assert len(leaves) > 100
  same = 0
  for a, b, want in zip(jax.tree.leaves(eager), leaves,
                        jax.tree.leaves(ts.shardings)):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.sharding.is_equivalent_to(want, a.ndim)
    # XLA fuses some initializers' arithmetic differently: float32 rounding.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                               atol=1e-7)
    same += np.array_equal(np.asarray(a), np.asarray(b))
  assert same >= 0.9 * len(leaves), (same, len(leaves))
  # Each leaf its own buffer, as the step's donation needs.
  buffers = {x.unsafe_buffer_pointer() for x in jax.tree.leaves(eager)}
  assert len(buffers) == len(leaves)


def _params(workdir):
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  step = mngr.latest_step()
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  return step, restored['state']['params']


# CI's selection leaves it to `make test-all`: tests/test_preemption.py
# signals real training processes at every phase and checks the resumed
# runs bitwise, which covers this in-process case.
@pytest.mark.slow
def test_preempted_run_resumes_to_the_same_result(tiny_config, tmp_path,
                                                 monkeypatch):
  cfg = tiny_config  # 6 steps
  cfg.log_every = 1
  cfg.checkpoint_every = 1000
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(cfg, straight)

  # SIGTERM (what a scheduler sends before eviction) arrives after step 3.
  write = metrics_writer.MetricsWriter.write

  def write_then_preempt(self, step, metrics):
    write(self, step, metrics)
    if step == 3 and 'train/loss' in metrics:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(metrics_writer.MetricsWriter, 'write', write_then_preempt)
  resumed = str(tmp_path / 'resumed')
  assert train.train_and_evaluate(cfg, resumed) == {}
  assert _params(resumed)[0] == 3
  monkeypatch.setattr(metrics_writer.MetricsWriter, 'write', write)
  train.train_and_evaluate(cfg, resumed)

  step_a, a = _params(straight)
  step_b, b = _params(resumed)
  assert step_a == step_b == 6
  # Same data order after resume (iterator state) and same optimizer state:
  # the parameters agree to float rounding.
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a, b)


def test_evaluation_functions_are_traced_once_per_run(tiny_config):
  """Evaluating twice (as eval_every does) reuses the jitted functions the
  task built once: no retracing per evaluation."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from multimodal.models import build_model  # pylint: disable=g-import-not-at-top
  cfg = tiny_config
  task = registry.get('task', cfg.task)(cfg)
  ts = train.make_train_state(cfg, train.optim_lib.make_optimizer(
      cfg.optimizer, cfg.total_steps), mesh_lib.build_mesh(cfg.mesh))
  params = nnx.state(build_model(cfg.model, rngs=nnx.Rngs(0)), nnx.Param)
  mesh = mesh_lib.build_mesh(cfg.mesh)
  source = train.pipeline.open_source(cfg.dataset, 'validation')
  sizes = []
  for _ in range(2):
    metrics = train.evaluate(cfg, task, ts, nnx.to_pure_dict(params), mesh,
                             source)
    sizes.append((task.outputs_fn._cache_size(),  # pylint: disable=protected-access
                  task.embed_fn._cache_size()))  # pylint: disable=protected-access
  assert metrics['test/num_examples'] == 179
  # outputs: one shape (padded batches); embed: the prompts of 2 text fields.
  assert sizes == [(1, 2), (1, 2)], sizes


def test_profile_steps_write_a_trace(tiny_config, tmp_path):
  cfg = tiny_config
  cfg.total_steps = 4
  cfg.profile_steps = (2, 3)
  train.train_and_evaluate(cfg, str(tmp_path))
  traces = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / 'profile')
            for f in files if f.endswith('.xplane.pb')]
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


# ------------------------------------------------------- mixed precision ---


def _one_step(config, batch):
  """(state after one train step, its metrics) for `config` on `batch`."""
  mesh = mesh_lib.build_mesh(config.mesh)
  _, ts, step = train.make_trainer(config, mesh)
  with jax.set_mesh(mesh):
    state = train.init_state(ts)
    return step(state, train.shard_batch(batch,
                                         mesh_lib.batch_sharding(mesh)))


@pytest.mark.usefixtures('fast_compiles')
def test_the_step_compiled_during_init_is_the_jitted_step(tiny_config):
  """train.compile_during: the state make_state returns, and a compiled step
  whose result equals the jitted step's; a batch of other shapes goes to
  the jitted step; make_state's error reaches the caller."""
  config = tiny_config
  task = registry.get('task', config.task)(config)
  it, _, _ = pipeline.make_iterator(config, 'train', train=True,
                                    fields=task.fields,
                                    batch_size=config.batch_size)
  mesh = mesh_lib.build_mesh(config.mesh)
  _, ts, step = train.make_trainer(config, mesh)
  batch = train.shard_batch(next(it), mesh_lib.batch_sharding(mesh))
  with jax.set_mesh(mesh):
    made = []
    state, compiled, times = train.compile_during(
        step, ts, batch, lambda: made.append(1) or train.init_state(ts))
    assert made == [1] and set(times) == {'lower_s', 'compile_s', 'init_s'}
    want_state, want = step(train.init_state(ts), batch)
    got_state, got = compiled(state, batch)
    for a, b in zip(jax.tree.leaves((got_state, got)),
                    jax.tree.leaves((want_state, want))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    calls = []
    run = train.same_shapes_or(
        lambda s, b: calls.append('compiled') or (s, {}), batch,
        lambda s, b: calls.append('jit') or (s, {}))
    half = jax.tree.map(lambda x: x[:x.shape[0] // 2], batch)
    run(None, batch)
    run(None, half)
    assert calls == ['compiled', 'jit']

    def broken():
      raise RuntimeError('no state')
    with pytest.raises(RuntimeError, match='no state'):
      train.compile_during(step, ts, batch, broken)


# Both model families; vqa's model is captioning's (~40 s each on 2 cores).
@pytest.mark.usefixtures('fast_compiles')
@pytest.mark.parametrize('experiment', ['contrastive', 'captioning'])
def test_bfloat16_compute_keeps_float32_state_and_loss(experiment,
                                                       digits_data_dir):
  """--config.model.dtype=bfloat16: parameters and optimizer state stay
  float32, the loss is float32 and close to the float32 model's (same
  initial parameters, same batch)."""
  config = conftest._tiny(experiment, digits_data_dir)  # pylint: disable=protected-access
  task = registry.get('task', config.task)(config)
  it, _, _ = pipeline.make_iterator(config, 'train', train=True,
                                    fields=task.fields,
                                    batch_size=config.batch_size)
  batch = next(it)
  results = {}
  for dtype in ('float32', 'bfloat16'):
    config.model.dtype = dtype
    state, metrics = _one_step(config, batch)
    floats = {x.dtype for x in jax.tree.leaves(state)
              if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats == {jnp.dtype('float32')}, (dtype, floats)
    assert metrics['loss'].dtype == jnp.float32
    results[dtype] = float(metrics['loss'])
  assert np.isfinite(results['bfloat16']), results
  # Not bit-equal: the switch did reach the computation.
  assert results['bfloat16'] != results['float32']
  # Measured: relative differences 8e-4 (contrastive), 6e-6 (captioning).
  np.testing.assert_allclose(results['bfloat16'], results['float32'],
                             rtol=5e-3)
