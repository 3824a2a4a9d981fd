"""Training on 8 devices under every sharding layout equals one device.

The checks run in a subprocess with 8 fake CPU devices (this file run as a
script), since pytest workers have already initialised JAX with one device.
For each (mesh, rules) layout the subprocess builds the train state sharded,
runs 3 real train steps (trainer's own `make_train_step`) on fixed batches,
and reports the losses, the largest parameter difference from the
single-device run, and the shardings the state actually has.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

LAYOUTS = {
    # name: (mesh, rules preset)
    'data': (dict(data=8, fsdp=1, tensor=1), 'data_parallel'),
    'fsdp': (dict(data=1, fsdp=8, tensor=1), 'fsdp'),
    'data_x_fsdp': (dict(data=2, fsdp=4, tensor=1), 'fsdp'),
    'fsdp_x_tensor': (dict(data=1, fsdp=2, tensor=4), 'fsdp_tensor'),
}
STEPS, BATCH = 3, 16
# A kernel named ('embed', 'mlp'), its Adam moment, and a ('vocab', 'embed')
# table: where the rules say they go.
MLP_KERNEL = ('towers', 'text', 'encoder', 'blocks', 0, 'mlp', 'fc1',
              'kernel')
VOCAB_TABLE = ('towers', 'text', 'embed', 'embedding')


def _run_layouts() -> dict:
  """Runs in the 8-device subprocess; returns the JSON report."""
  sys.path.insert(0, str(REPO))
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  from projects.digits.configs import contrastive
  from multimodal import mesh as mesh_lib
  from multimodal import optimizer as optim_lib
  from multimodal import registry
  from multimodal import train

  config = contrastive.get_config('tiny')
  rng = np.random.default_rng(0)
  inp = config.input

  def tokens():
    ids = rng.integers(4, 320, size=(BATCH, inp.max_text_len)).astype(np.int32)
    lengths = rng.integers(3, inp.max_text_len, size=BATCH)
    for row, n in zip(ids, lengths):
      row[n - 1], row[n:] = 3, 0  # eos, then padding
    return ids

  batches = [{
      'image': rng.uniform(-1, 1, (BATCH, inp.image_size, inp.image_size, 1)
                           ).astype(np.float32),
      'audio': rng.normal(size=(BATCH, inp.num_frames, inp.num_mels)
                          ).astype(np.float32),
      'image_text': tokens(), 'audio_text': tokens(),
      'label': rng.integers(0, 10, BATCH).astype(np.int32),
  } for _ in range(STEPS)]

  def run(mesh_cfg, rules, devices):
    config.sharding.rules = rules
    mesh = mesh_lib.build_mesh(mesh_cfg, devices)
    task = registry.get('task', config.task)(config)
    tx = optim_lib.make_optimizer(config.optimizer, config.total_steps)
    lr = optim_lib.schedule(config.optimizer, config.total_steps)
    ts = train.make_train_state(config, tx, mesh)
    step = train.make_train_step(task, tx, lr, ts, mesh)
    with jax.set_mesh(mesh):
      state = train.init_state(ts)
      losses = []
      for b in batches:
        state, metrics = step(state, train.shard_batch(
            b, mesh_lib.batch_sharding(mesh)))
        losses.append(float(metrics['loss']))
    return state, losses

  def at(tree, path):
    for k in path:
      tree = tree[k]
    return tree

  def spec(x):
    return [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec]

  ref_state, ref_losses = run(dict(data=1), 'data_parallel',
                              jax.devices()[:1])
  ref_params = jax.tree.map(np.asarray, ref_state['params'])
  report = {'reference': ref_losses}
  for name, (mesh_cfg, rules) in LAYOUTS.items():
    state, losses = run(mesh_cfg, rules, jax.devices())
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - b))),
                         state['params'], ref_params)
    kernel = at(state['params'], MLP_KERNEL)
    adam = state['opt_state']
    mu = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(adam)[0]
          if tuple(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))
                   for k in path[-len(MLP_KERNEL):]) == MLP_KERNEL]
    report[name] = {
        'losses': losses,
        'max_param_diff': max(jax.tree.leaves(diffs)),
        'kernel_spec': spec(kernel),
        'kernel_shard_shape': list(kernel.addressable_shards[0].data.shape),
        'kernel_shape': list(kernel.shape),
        'moment_specs': [spec(m) for m in mu],
        'vocab_spec': spec(at(state['params'], VOCAB_TABLE)),
    }
  return report


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp('sharded') / 'report.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = subprocess.run([sys.executable, __file__, str(out)], env=env,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return json.loads(out.read_text())


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_three_steps_match_one_device(report, layout):
  ref, got = report['reference'], report[layout]
  assert len(got['losses']) == STEPS
  for a, b in zip(got['losses'], ref):
    assert abs(a - b) <= 1e-5 * abs(b), (got['losses'], ref)
  assert ref[-1] < ref[0]  # the steps really train
  # Losses agree to float32 rounding; parameters to 1e-4 (they move by ~1e-3
  # per step), because Adam's g / sqrt(v) turns the rounding differences of
  # near-zero gradients into differences of up to a fraction of the step.
  assert got['max_param_diff'] < 1e-4, got['max_param_diff']


EXPECTED_KERNEL_SPEC = {  # ('embed', 'mlp') under each layout's rules
    'data': [None, None],
    'fsdp': ['fsdp', None],
    'data_x_fsdp': ['fsdp', None],
    'fsdp_x_tensor': ['fsdp', 'tensor'],
}


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_state_is_sharded_as_the_rules_say(report, layout):
  got = report[layout]
  want = EXPECTED_KERNEL_SPEC[layout]
  assert got['kernel_spec'][:len(want)] == want
  assert all(a is None for a in got['kernel_spec'][len(want):])
  mesh = LAYOUTS[layout][0]
  shard = [d // (mesh[a] if a else 1)
           for d, a in zip(got['kernel_shape'], want)]
  assert got['kernel_shard_shape'] == shard
  # Adam's two moments live exactly where their parameter does.
  assert len(got['moment_specs']) == 2
  assert all(m == got['kernel_spec'] for m in got['moment_specs'])
  vocab = ['tensor', 'fsdp'] if layout == 'fsdp_x_tensor' else (
      [None, 'fsdp'] if layout != 'data' else [None, None])
  assert got['vocab_spec'][:2] == vocab


if __name__ == '__main__':
  pathlib.Path(sys.argv[1]).write_text(json.dumps(_run_layouts()))
