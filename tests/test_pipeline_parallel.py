"""Pipeline parallelism (multimodal/models/pipeline_parallel.py) on 8 fake devices.

Training the digits contrastive model with its image and text towers
pipelined over 2 and 4 stages, alone and times data parallelism, must give
the losses, gradients and parameters of the unpipelined model on one
device. The checks run in a subprocess with 8 fake CPU devices (this file
run as a script), since pytest workers have already initialised JAX with
one device. Per layout the subprocess runs 3 steps of the trainer's own
step (`train.make_trainer`) and, at the initial parameters, the gradient of
the same loss under the same mesh; it also checks a scanned decoder.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

LAYOUTS = {  # name: mesh
    'stage2': dict(stage=2, data=1),
    'stage4': dict(stage=4, data=1),
    'stage2_x_data4': dict(stage=2, data=4),
    'stage4_x_data2': dict(stage=4, data=2),
}
# One layout in the fast selection (a reference run and one pipelined run
# cost ~75 s of CPU); the other three are marked slow.
FAST = ('stage4_x_data2',)
STEPS, BATCH, MICROBATCHES, DEPTH = 3, 16, 4, 4
# A stacked kernel [layers, embed, mlp] of the pipelined image tower.
KERNEL = ('towers', 'image', 'core', 'encoder', 'blocks', 'mlp', 'fc1',
          'kernel')


def _config():
  # pylint: disable=g-import-not-at-top
  from projects.digits.configs import contrastive
  config = contrastive.get_config('tiny')
  image = config.model.towers.image  # pipelined; the others are not
  image.depth, image.scan_layers = DEPTH, True
  config.pipeline.microbatches = MICROBATCHES
  return config


def _batches(config, rng):
  inp = config.input

  def tokens():
    ids = rng.integers(4, 320, size=(BATCH, inp.max_text_len)).astype(np.int32)
    lengths = rng.integers(3, inp.max_text_len, size=BATCH)
    for row, n in zip(ids, lengths):
      row[n - 1], row[n:] = 3, 0  # eos, then padding
    return ids

  return [{
      'image': rng.uniform(-1, 1, (BATCH, inp.image_size, inp.image_size, 1)
                           ).astype(np.float32),
      'audio': rng.normal(size=(BATCH, inp.num_frames, inp.num_mels)
                          ).astype(np.float32),
      'image_text': tokens(), 'audio_text': tokens(),
      'label': rng.integers(0, 10, BATCH).astype(np.int32),
  } for _ in range(STEPS)]


def _run_layouts(names) -> dict:
  """Runs in the 8-device subprocess; returns the JSON report."""
  sys.path.insert(0, str(REPO))
  # pylint: disable=g-import-not-at-top
  import time
  import jax
  from absl import flags
  from flax import nnx
  flags.FLAGS.mark_as_parsed()
  from multimodal import mesh as mesh_lib
  from multimodal import train
  from multimodal.models import pipeline_parallel as pipeline

  config = _config()
  batches = _batches(config, np.random.default_rng(0))

  def run(mesh_cfg, devices):
    config.mesh = dict(mesh_cfg)
    mesh = mesh_lib.build_mesh(config.mesh, devices)
    task, ts, step = train.make_trainer(config, mesh)
    bs = mesh_lib.batch_sharding(mesh)

    def loss(params, batch):
      return task.loss(nnx.merge(ts.graphdef, params), batch)[0]

    grad_fn = jax.jit(jax.grad(loss), out_shardings=ts.shardings['params'])
    with jax.set_mesh(mesh):
      state = train.init_state(ts)
      with (nnx.logical_axis_rules(ts.rules),
            pipeline.microbatches(ts.microbatches)):
        grads = grad_fn(state['params'], train.shard_batch(batches[0], bs))
      losses = []
      for b in batches:
        state, metrics = step(state, train.shard_batch(b, bs))
        losses.append(float(metrics['loss']))
    return state, grads, losses, dict(mesh.shape)

  flat = lambda tree: {'/'.join(map(str, p)): np.asarray(x) for p, x in
                       jax.tree_util.tree_flatten_with_path(tree)[0]}
  start = time.perf_counter()
  ref_state, ref_grads, ref_losses, _ = run(dict(data=1), jax.devices()[:1])
  ref_params, ref_grads = flat(ref_state['params']), flat(ref_grads)
  report = {'reference': {'losses': ref_losses,
                          'seconds': time.perf_counter() - start}}
  if 'decoder' in names:
    report['decoder'] = _decoder_check()
    names = [n for n in names if n != 'decoder']
  for name in names:
    mesh_cfg = LAYOUTS[name]
    start = time.perf_counter()
    n = mesh_cfg['stage'] * mesh_cfg['data']
    state, grads, losses, shape = run(mesh_cfg, jax.devices()[:n])
    grads, params = flat(grads), flat(state['params'])
    kernel = state['params']
    for k in KERNEL:
      kernel = kernel[k]
    report[name] = {
        'losses': losses, 'mesh': shape,
        # |g - g_ref| / |g_ref| over all gradients, and the largest entry.
        'grad_rel_diff': float(np.sqrt(
            sum(np.sum((grads[k] - ref_grads[k]) ** 2) for k in ref_grads)
            / sum(np.sum(ref_grads[k] ** 2) for k in ref_grads))),
        'grad_abs_diff': max(float(np.max(np.abs(grads[k] - ref_grads[k])))
                             for k in ref_grads),
        'grad_max': max(float(np.max(np.abs(g))) for g in ref_grads.values()),
        'grad_arrays': len(grads),
        'max_param_diff': max(float(np.max(np.abs(params[k] - ref_params[k])))
                              for k in ref_params),
        'kernel_spec': [a if a is None or isinstance(a, str) else list(a)
                        for a in kernel.sharding.spec],
        'kernel_shard_shape': list(kernel.addressable_shards[0].data.shape),
        'seconds': time.perf_counter() - start,
    }
  return report


def _decoder_check() -> dict:
  """A scanned TextDecoder (cross-attention to a memory with a mask) on 2
  stages x 2-way data vs one device: loss and gradient differences."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from multimodal import mesh as mesh_lib
  from multimodal import sharding
  from multimodal.models import pipeline_parallel as pipeline
  from multimodal.models.decoder import TextDecoder

  dec = TextDecoder(vocab_size=32, max_len=8, width=16, depth=4, num_heads=2,
                    memory_width=16, scan_layers=True, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(dec)
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, 32, (8, 8)), jnp.int32)
  memory = jnp.asarray(rng.normal(size=(8, 5, 16)), jnp.float32)
  memory_mask = jnp.asarray(np.arange(5)[None] < rng.integers(1, 6, (8, 1)))
  weights = jnp.asarray(rng.normal(size=(32,)), jnp.float32)

  def loss(params, tokens, memory, memory_mask):
    logits = nnx.merge(graphdef, params)(tokens, memory, memory_mask)
    return jnp.sum(logits * weights)

  fn = jax.jit(jax.value_and_grad(loss))
  ref_loss, ref_grads = fn(params, tokens, memory, memory_mask)
  mesh = mesh_lib.build_mesh(dict(stage=2, data=2), jax.devices()[:4])
  with (jax.set_mesh(mesh),
        nnx.logical_axis_rules(sharding.get_rules('data_parallel')),
        pipeline.microbatches(2)):
    got_loss, grads = fn(params, tokens, memory, memory_mask)
  diffs = jax.tree.leaves(jax.tree.map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))), grads, ref_grads))
  return {'loss': float(got_loss), 'ref_loss': float(ref_loss),
          'grad_abs_diff': max(diffs),
          'grad_max': max(float(jnp.max(jnp.abs(g)))
                          for g in jax.tree.leaves(ref_grads))}


_REPORTS = {}


def _report(tmp_path_factory, names) -> dict:
  """The subprocess's report for the layouts `names` (run once)."""
  if names not in _REPORTS:
    out = tmp_path_factory.mktemp('pipeline') / 'report.json'
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS='--xla_force_host_platform_device_count=8')
    proc = subprocess.run([sys.executable, __file__, str(out), *names],
                          env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _REPORTS[names] = json.loads(out.read_text())
  return _REPORTS[names]


_SLOW = tuple(n for n in LAYOUTS if n not in FAST) + ('decoder',)


@pytest.mark.parametrize('layout', [
    pytest.param(n, marks=() if n in FAST else pytest.mark.slow)
    for n in LAYOUTS])
def test_pipelined_training_matches_one_device(tmp_path_factory, layout):
  report = _report(tmp_path_factory, FAST if layout in FAST else _SLOW)
  ref, got = report['reference']['losses'], report[layout]
  assert got['mesh']['stage'] == LAYOUTS[layout]['stage']
  assert len(got['losses']) == STEPS
  for a, b in zip(got['losses'], ref):
    assert abs(a - b) <= 1e-5 * abs(b), (got['losses'], ref)
  assert ref[-1] < ref[0]  # the steps really train
  # Every gradient (all of the model's arrays) to float32 rounding.
  assert got['grad_arrays'] > 50
  assert got['grad_rel_diff'] < 1e-5, got['grad_rel_diff']
  assert got['grad_abs_diff'] < 1e-5 * got['grad_max'], got
  assert got['max_param_diff'] < 1e-4, got['max_param_diff']
  # Each stage holds its DEPTH / stages layers of the stacked kernel.
  assert got['kernel_spec'][0] == 'stage'
  assert got['kernel_shard_shape'][0] == DEPTH // LAYOUTS[layout]['stage']




@pytest.mark.slow
def test_pipelined_decoder_matches_one_device(tmp_path_factory):
  got = _report(tmp_path_factory, _SLOW)['decoder']
  assert abs(got['loss'] - got['ref_loss']) <= 1e-5 * abs(got['ref_loss'])
  assert got['grad_abs_diff'] < 1e-5 * got['grad_max'], got


def test_bubble_and_microbatch_counts():
  from multimodal.models import pipeline_parallel as pipeline  # pylint: disable=g-import-not-at-top
  assert pipeline.bubble_fraction(4, 4) == pytest.approx(3 / 7)
  assert pipeline.bubble_fraction(2, 16) == pytest.approx(1 / 17)
  with pipeline.microbatches(8):
    assert pipeline.num_microbatches(32, 4) == 8
    assert pipeline.num_microbatches(20, 4) == 5  # an evaluator's prompts
  assert pipeline.num_microbatches(32, 4) == 4  # default: one per stage
  with pytest.raises(ValueError, match='microbatches must be >= 1'):
    with pipeline.microbatches(0):
      pass


def test_config_check_names_pipeline_problems():
  # pylint: disable=g-import-not-at-top
  import types
  from multimodal import config_checks
  config = _config()
  config.mesh.stage = 4
  config.model.towers.image.depth = 6
  found = ' '.join(config_checks.find_problems(config))
  assert 'towers/image/core/encoder/blocks has 6 layers' in found
  assert 'multiple of 4' in found
  config.model.towers.image.scan_layers = False
  found = ' '.join(config_checks.find_problems(config))
  assert 'no part of config.model stacks its layers' in found
  # Batches against microbatches x batch shards (a mesh of 8 devices).
  mesh = types.SimpleNamespace(shape=dict(stage=2, data=4, fsdp=1, tensor=1))
  config.batch_size, config.pipeline.microbatches = 16, 8
  found = ' '.join(config_checks.pipeline_problems(config, mesh))
  assert 'config.batch_size=16' in found and 'multiple of 32' in found
  config.pipeline.microbatches = 0
  found = ' '.join(config_checks.pipeline_problems(config, mesh))
  assert 'config.pipeline.microbatches=0' in found


def test_stage_axis_of_the_mesh():
  # pylint: disable=g-import-not-at-top
  import types
  from multimodal import mesh as mesh_lib
  assert mesh_lib.mesh_axes(dict(data=-1)) == ('data', 'fsdp', 'tensor')
  assert mesh_lib.axis_sizes(dict(stage=2, data=-1), 8) == (2, 4, 1, 1)
  assert mesh_lib.mesh_axes(dict(stage=2)) == ('stage', 'data', 'fsdp',
                                               'tensor')
  with pytest.raises(ValueError, match='number of pipeline stages'):
    mesh_lib.axis_sizes(dict(stage=-1, data=2), 8)
  # Across 2 slices (or hosts), one stage on each: only `stage` crosses.
  devices = [types.SimpleNamespace(id=i, process_index=i // 8,
                                   slice_index=i // 8, platform='cpu',
                                   device_kind='cpu') for i in range(16)]
  grid = mesh_lib.device_grid(dict(data=1, fsdp=-1, dcn_stage=2), devices)
  assert grid.shape == (2, 1, 8, 1)
  for i in range(2):
    assert {d.slice_index for d in grid[i].flat} == {i}


if __name__ == '__main__':
  pathlib.Path(sys.argv[1]).write_text(json.dumps(_run_layouts(sys.argv[2:])))
