"""Sharded contrastive losses equal the single-device references.

Multi-device checks run in a subprocess with 8 fake CPU devices (this file,
run as a script), because the pytest workers have already initialised JAX
with one device and other test files rely on that. Every check compares
values and gradients w.r.t. a, b, scale (and bias) against both
`multimodal.losses` and a float64 NumPy reference written out here.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import jax
import jax.numpy as jnp

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # when run as a script from the subprocess
  sys.path.insert(0, str(REPO))

from multimodal import losses  # pylint: disable=g-import-not-at-top
from multimodal import sharded_losses  # pylint: disable=g-import-not-at-top

NUM_FAKE_DEVICES = 8
# Global batch divisible by every shard count tested (1, 2, 4, 8): one shape,
# so each loss compiles once per mesh and the reference once in all.
GLOBAL_N, EMBED = 24, 8
# sharded vs reference, both float32: only the summation order differs.
RTOL = 1e-5
# float32 JAX vs float64 NumPy.
RTOL_NUMPY = 1e-4

# ---------------------------------------------------------------------------
# NumPy float64 references (values and analytic gradients).
# ---------------------------------------------------------------------------


def _np_sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def np_sigmoid_loss_and_grads(a, b, scale, bias):
  """SigLIP loss in float64. a, b: [N, E]. Returns (loss, (da, db, ds, dt))."""
  a, b = np.float64(a), np.float64(b)
  n = a.shape[0]
  sims = a @ b.T
  z = scale * sims + bias
  y = 2.0 * np.eye(n) - 1.0
  loss = np.sum(np.logaddexp(0.0, -y * z)) / n
  g = -y * _np_sigmoid(-y * z) / n  # dL/dz
  return loss, (scale * g @ b, scale * g.T @ a, np.sum(g * sims), np.sum(g))


def _np_log_softmax(z, axis):
  z = z - z.max(axis=axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_softmax_loss_and_grads(a, b, scale):
  """CLIP loss in float64. a, b: [N, E]. Returns (loss, (da, db, ds))."""
  a, b = np.float64(a), np.float64(b)
  n = a.shape[0]
  sims = a @ b.T
  z = scale * sims
  rows, cols = _np_log_softmax(z, 1), _np_log_softmax(z, 0)
  loss = -0.5 * (np.mean(np.diag(rows)) + np.mean(np.diag(cols)))
  eye = np.eye(n)
  g = ((np.exp(rows) - eye) + (np.exp(cols) - eye)) / (2 * n)  # dL/dz
  return loss, (scale * g @ b, scale * g.T @ a, np.sum(g * sims))


# ---------------------------------------------------------------------------
# Shared checking code (runs in the subprocess and in-process).
# ---------------------------------------------------------------------------


def _inputs(seed, normalise, n=GLOBAL_N, e=EMBED):
  """a, b: [n, e] float32; unnormalised ones have norms far from 1."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, e)).astype(np.float32)
  b = (0.5 * a + rng.normal(size=(n, e))).astype(np.float32)  # some signal
  if normalise:
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
  else:
    a *= 1.5
  # SigLIP-like init for the normalised case, milder for the unnormalised one
  # so that float32 log-sigmoids are not all saturated.
  scale, bias = (10.0, -10.0) if normalise else (0.7, -2.0)
  return a, b, np.float32(scale), np.float32(bias)


def _assert_tree_close(got, want, rtol, what):
  for i, (g, w) in enumerate(zip(jax.tree.leaves(got), jax.tree.leaves(want))):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    # Gradient entries near zero get an absolute slack relative to the
    # array's largest entry; rtol alone would ask for more than float32 has.
    atol = rtol * max(np.max(np.abs(w)), 1e-30)
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol,
                               err_msg=f'{what}: leaf {i} (0=value)')


def check_mesh(data, fsdp, seeds=(0, 1)):
  """Compares both sharded losses with the references on a data x fsdp mesh."""
  from multimodal.mesh import build_mesh  # pylint: disable=g-import-not-at-top
  devices = jax.devices()[:data * fsdp]
  mesh = build_mesh(dict(data=data, fsdp=fsdp, tensor=1), devices)
  sig = jax.jit(jax.value_and_grad(
      lambda a, b, s, t: sharded_losses.sigmoid_loss_sharded(
          a, b, s, t, mesh=mesh), argnums=(0, 1, 2, 3)))
  soft = jax.jit(jax.value_and_grad(
      lambda a, b, s: sharded_losses.softmax_loss_sharded(a, b, s, mesh=mesh),
      argnums=(0, 1, 2)))
  sig_ref = jax.jit(jax.value_and_grad(losses.sigmoid_contrastive_loss,
                                       argnums=(0, 1, 2, 3)))
  soft_ref = jax.jit(jax.value_and_grad(losses.softmax_contrastive_loss,
                                        argnums=(0, 1, 2)))
  for seed in seeds:
    for normalise in (True, False):
      a, b, s, t = _inputs(seed, normalise)
      what = f'mesh data={data} fsdp={fsdp} seed={seed} normalise={normalise}'
      got = sig(a, b, s, t)
      _assert_tree_close(got, sig_ref(a, b, s, t), RTOL, 'sigmoid ' + what)
      _assert_tree_close(got, np_sigmoid_loss_and_grads(a, b, s, t),
                         RTOL_NUMPY, 'sigmoid vs numpy ' + what)
      got = soft(a, b, s)
      _assert_tree_close(got, soft_ref(a, b, s), RTOL, 'softmax ' + what)
      _assert_tree_close(got, np_softmax_loss_and_grads(a, b, s),
                         RTOL_NUMPY, 'softmax vs numpy ' + what)

  shards = data * fsdp
  if shards > 1:
    a, b, s, t = _inputs(0, True, n=GLOBAL_N + 1)
    for fn, args in ((sharded_losses.sigmoid_loss_sharded, (s, t)),
                     (sharded_losses.softmax_loss_sharded, (s,))):
      with pytest.raises(ValueError, match=rf'does not divide over the '
                         rf'{shards} batch shards.*multiple of {shards}'):
        fn(a, b, *args, mesh=mesh)


# ---------------------------------------------------------------------------
# Tests.
# ---------------------------------------------------------------------------

# (data, fsdp) meshes, in two groups of similar cost: one subprocess each, so
# that pytest-xdist can run them side by side.
MESH_GROUPS = (
    ((1, 1), (2, 1), (8, 1), (1, 8)),
    ((4, 1), (2, 2), (1, 4)),
)


@pytest.mark.parametrize('meshes', MESH_GROUPS,
                         ids=lambda g: '_'.join(f'{d}x{f}' for d, f in g))
def test_sharded_losses_match_reference_on_fake_devices(meshes):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  # The child sets its own device count; drop any inherited forced count.
  env['XLA_FLAGS'] = ' '.join(
      f for f in env.get('XLA_FLAGS', '').split()
      if 'xla_force_host_platform_device_count' not in f)
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (str(REPO), env.get('PYTHONPATH')) if p)
  proc = subprocess.run(
      [sys.executable, __file__, json.dumps(meshes)], env=env, cwd=REPO,
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.count('ok ') == len(meshes), proc.stdout


def test_numpy_references_match_multimodal_losses():
  sig = jax.jit(jax.value_and_grad(losses.sigmoid_contrastive_loss,
                                   argnums=(0, 1, 2, 3)))
  soft = jax.jit(jax.value_and_grad(losses.softmax_contrastive_loss,
                                    argnums=(0, 1, 2)))
  for normalise in (True, False):
    a, b, s, t = _inputs(3, normalise)
    _assert_tree_close(sig(a, b, s, t), np_sigmoid_loss_and_grads(a, b, s, t),
                       RTOL_NUMPY, 'sigmoid')
    _assert_tree_close(soft(a, b, s), np_softmax_loss_and_grads(a, b, s),
                       RTOL_NUMPY, 'softmax')


def _one_device_mesh():
  from multimodal.mesh import build_mesh  # pylint: disable=g-import-not-at-top
  return build_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])


def test_bfloat16_inputs_computed_in_float32():
  mesh = _one_device_mesh()
  a, b, s, t = _inputs(4, True, n=8)
  a, b = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
  value, grads = jax.jit(jax.value_and_grad(
      lambda a, b: sharded_losses.sigmoid_loss_sharded(a, b, s, t, mesh=mesh),
      argnums=(0, 1)))(a, b)
  assert value.dtype == jnp.float32
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  # Same bf16 inputs, upcast by the reference: equal up to float32 rounding.
  np.testing.assert_allclose(value, losses.sigmoid_contrastive_loss(a, b, s, t),
                             rtol=RTOL)
  value = jax.jit(lambda a, b: sharded_losses.softmax_loss_sharded(
      a, b, s, mesh=mesh))(a, b)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, losses.softmax_contrastive_loss(a, b, s),
                             rtol=RTOL)


def test_bad_arguments_raise_clear_errors():
  mesh = _one_device_mesh()
  a, b, s, t = _inputs(0, True, n=8)
  with pytest.raises(ValueError, match='same shape'):
    sharded_losses.sigmoid_loss_sharded(a, b[:4], s, t, mesh=mesh)
  with pytest.raises(ValueError, match='does not have'):
    sharded_losses.softmax_loss_sharded(a, b, s, mesh=mesh,
                                        batch_axes=('data', 'batch'))


if __name__ == '__main__':
  # Subprocess mode: argv[1] is a JSON list of [data, fsdp] meshes.
  jax.config.update('jax_num_cpu_devices', NUM_FAKE_DEVICES)
  for data_size, fsdp_size in json.loads(sys.argv[1]):
    check_mesh(data_size, fsdp_size)
    print(f'ok data={data_size} fsdp={fsdp_size}', flush=True)
