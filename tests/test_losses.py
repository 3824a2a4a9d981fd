"""multimodal.losses against NumPy references, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal import losses


pytestmark = pytest.mark.usefixtures('fast_compiles')


def _np_log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def np_softmax_loss(a, b, scale):
  logits = scale * a @ b.T
  a_to_b = -np.mean(np.diag(_np_log_softmax(logits, axis=1)))
  b_to_a = -np.mean(np.diag(_np_log_softmax(logits, axis=0)))
  return (a_to_b + b_to_a) / 2


def np_sigmoid_loss(a, b, scale, bias):
  n = len(a)
  logits = scale * a @ b.T + bias
  labels = 2 * np.eye(n) - 1
  # log_sigmoid(z) = -log(1 + exp(-z)), written stably.
  return np.sum(np.logaddexp(0.0, -labels * logits)) / n


def _unit_rows(rng, n, e):
  x = rng.normal(size=(n, e))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize('n,e,scale', [(1, 3, 1.0), (4, 8, 10.0),
                                       (7, 5, 100.0)])
def test_softmax_loss_matches_numpy(n, e, scale):
  rng = np.random.default_rng(n)
  a, b = _unit_rows(rng, n, e), _unit_rows(rng, n, e)
  got = losses.softmax_contrastive_loss(jnp.asarray(a, jnp.float32),
                                        jnp.asarray(b, jnp.float32), scale)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, np_softmax_loss(a, b, scale), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize('n,e,scale,bias', [(1, 3, 1.0, 0.0),
                                            (4, 8, 10.0, -10.0),
                                            (7, 5, 3.0, 2.0)])
def test_sigmoid_loss_matches_numpy(n, e, scale, bias):
  rng = np.random.default_rng(n)
  a, b = _unit_rows(rng, n, e), _unit_rows(rng, n, e)
  got = losses.sigmoid_contrastive_loss(jnp.asarray(a, jnp.float32),
                                        jnp.asarray(b, jnp.float32),
                                        scale, bias)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, np_sigmoid_loss(a, b, scale, bias),
                             rtol=1e-5, atol=1e-6)


def test_bfloat16_inputs_are_computed_in_float32():
  rng = np.random.default_rng(0)
  a, b = _unit_rows(rng, 4, 8), _unit_rows(rng, 4, 8)
  a16, b16 = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
  got = losses.sigmoid_contrastive_loss(a16, b16, 10.0, -10.0)
  assert got.dtype == jnp.float32
  want = np_sigmoid_loss(np.asarray(a16, np.float64),
                         np.asarray(b16, np.float64), 10.0, -10.0)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_perfect_alignment_gives_low_softmax_loss():
  a = np.eye(4)
  assert losses.softmax_contrastive_loss(a, a, 100.0) < 1e-6
  assert losses.softmax_contrastive_loss(a, a[::-1], 100.0) > 10.0


def _central_difference(f, x, eps=1e-5):
  grad = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    hi, lo = x.copy(), x.copy()
    hi[idx] += eps
    lo[idx] -= eps
    grad[idx] = (f(hi) - f(lo)) / (2 * eps)
  return grad


def test_softmax_grad_matches_numerical_and_analytic():
  rng = np.random.default_rng(1)
  a, b, scale = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), 2.0
  grad_a, grad_scale = jax.grad(losses.softmax_contrastive_loss,
                                argnums=(0, 2))(
                                    jnp.asarray(a, jnp.float32),
                                    jnp.asarray(b, jnp.float32),
                                    jnp.float32(scale))
  assert np.all(np.isfinite(grad_a))
  numerical = _central_difference(lambda x: np_softmax_loss(x, b, scale), a)
  np.testing.assert_allclose(grad_a, numerical, rtol=1e-4, atol=1e-6)
  # Analytic: dL/dlogits = (softmax_rows + softmax_cols - 2 I) / (2 N).
  logits = scale * a @ b.T
  n = len(a)
  dlogits = (np.exp(_np_log_softmax(logits, 1)) +
             np.exp(_np_log_softmax(logits, 0)) - 2 * np.eye(n)) / (2 * n)
  np.testing.assert_allclose(grad_a, scale * dlogits @ b, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(grad_scale, np.sum(dlogits * (a @ b.T)),
                             rtol=1e-5, atol=1e-6)


def test_sigmoid_grad_matches_numerical():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
  scale, bias = 3.0, -1.5
  grads = jax.grad(losses.sigmoid_contrastive_loss, argnums=(0, 1, 2, 3))(
      jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
      jnp.float32(scale), jnp.float32(bias))
  for g in grads:
    assert np.all(np.isfinite(g))
  np.testing.assert_allclose(
      grads[0], _central_difference(
          lambda x: np_sigmoid_loss(x, b, scale, bias), a),
      rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(
      grads[1], _central_difference(
          lambda x: np_sigmoid_loss(a, x, scale, bias), b),
      rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(
      grads[3], _central_difference(
          lambda x: np_sigmoid_loss(a, b, scale, x[0]), np.array([bias])),
      rtol=1e-4, atol=1e-6)
