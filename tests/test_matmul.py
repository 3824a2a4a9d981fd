"""multimodal/models/matmul.py: the dense layers' dot_general."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from multimodal.models import matmul
from multimodal.testing import jaxprs


def _dims(x, k):
  return ((tuple(range(x.ndim - k, x.ndim)), tuple(range(k))), ((), ()))


@pytest.mark.parametrize('x_shape,w_shape,k', [
    ((2, 5, 8), (8, 3), 1), ((2, 5, 2, 4), (2, 4, 6), 2),
    ((2, 5, 8), (8, 2, 3), 1)])
def test_float32_flattens_the_leading_axes(x_shape, w_shape, k):
  """lax.dot_general's values, the inputs' leading axes flattened into one
  and the backward products over matrices: the weight gradient contracts
  one axis (XLA CPU's fast form)."""
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(*x_shape), jnp.float32)
  w = jnp.asarray(rng.randn(*w_shape), jnp.float32)
  dims = _dims(x, k)
  np.testing.assert_allclose(matmul.dot_general(x, w, dims),
                             lax.dot_general(x, w, dims), rtol=1e-6)

  def loss(fn):
    return lambda a, b: jnp.sum(jnp.sin(fn(a, b, dims)))

  for ours, ref in zip(jax.grad(loss(matmul.dot_general), (0, 1))(x, w),
                       jax.grad(loss(lax.dot_general), (0, 1))(x, w)):
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
  jaxpr = jax.make_jaxpr(jax.grad(loss(matmul.dot_general), (0, 1)))(x, w)
  dots = [e for e in jaxprs.equations(jaxpr.jaxpr)
          if e.primitive.name == 'dot_general']
  assert len(dots) == 3
  m = x_shape[0] * x_shape[1]  # the flattened tokens
  assert all(e.invars[0].aval.shape[0] == m for e in dots)
  weight_grad = [e for e in dots
                 if all(v.aval.shape[0] == m for v in e.invars)]
  assert [e.params['dimension_numbers'] for e in weight_grad] == [
      (((0,), (0,)), ((), ()))]
  # Both backward products are products of matrices.
  assert sum(all(v.aval.ndim == 2 for v in e.invars) for e in dots) >= 2


@pytest.mark.parametrize('x_shape,w_shape,k', [
    ((4, 6, 16), (16, 12), 1),        # Linear / MLP
    ((4, 6, 16), (16, 2, 8), 1),      # LinearGeneral: q/k/v projections
    ((4, 6, 2, 8), (2, 8, 16), 2),    # LinearGeneral: attention output
    ((5, 16), (16, 3), 1),            # a head on pooled features
])
def test_bfloat16_accumulates_in_float32_forward_and_backward(x_shape,
                                                              w_shape, k):
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(*x_shape), jnp.bfloat16)
  w = jnp.asarray(rng.randn(*w_shape), jnp.bfloat16)
  cot = jnp.asarray(rng.randn(*x_shape[:-k], *w_shape[k:]), jnp.bfloat16)
  dims = _dims(x, k)

  def ours(a, b):
    y = matmul.dot_general(a, b, dims).astype(jnp.float32)
    return jnp.sum(y * cot.astype(jnp.float32))

  def reference(a, b):  # the same products in float32
    y = lax.dot_general(a.astype(jnp.float32), b.astype(jnp.float32), dims)
    return jnp.vdot(y, cot.astype(jnp.float32))

  y = matmul.dot_general(x, w, dims)
  assert y.dtype == jnp.bfloat16 and y.shape == cot.shape
  y_ref = lax.dot_general(x.astype(jnp.float32), w.astype(jnp.float32), dims)
  # One rounding of a float32 sum: within half a bfloat16 ulp (2^-8 rel.).
  np.testing.assert_allclose(np.asarray(y, np.float32), y_ref,
                             rtol=2 ** -8, atol=1e-6)
  grads = jax.grad(ours, argnums=(0, 1))(x, w)
  grads_ref = jax.grad(reference, argnums=(0, 1))(x, w)
  for g, g_ref, primal in zip(grads, grads_ref, (x, w)):
    assert g.dtype == primal.dtype and g.shape == primal.shape
    np.testing.assert_allclose(np.asarray(g, np.float32), g_ref,
                               rtol=2 ** -8, atol=1e-6)
  # Each of the three products takes bfloat16 operands and accumulates in
  # float32: the form XLA CPU sends to its AMX/AVX512-BF16 kernels.
  dots = jaxprs.dots(jax.grad(ours, argnums=(0, 1)), x, w)
  assert len(dots) >= 3, dots  # forward (maybe listed twice), dx, dw
  assert all(d == (('bfloat16', 'bfloat16'), 'float32') for d in dots), dots


def test_other_dimension_numbers_fall_back():
  x = jnp.ones((3, 4, 8), jnp.bfloat16)
  w = jnp.ones((3, 8, 5), jnp.bfloat16)
  batched = (((2,), (1,)), ((0,), (0,)))
  out = matmul.dot_general(x, w, batched)
  np.testing.assert_array_equal(out, lax.dot_general(x, w, batched))
  assert jaxprs.dots(lambda a, b: matmul.dot_general(a, b, batched),
                     x, w) == [(('bfloat16', 'bfloat16'), 'None')]


def test_bfloat16_model_layers_use_it():
  """A bfloat16 Linear of the models (here the transformer MLP) multiplies
  through matmul.dot_general: every product of its gradient accumulates in
  float32."""
  from multimodal.models.transformer import Mlp  # pylint: disable=g-import-not-at-top
  mlp = Mlp(16, 32, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  x = jnp.ones((2, 3, 16), jnp.float32)

  def loss(model, inputs):
    return jnp.sum(model(inputs).astype(jnp.float32) ** 2)

  graphdef, params = nnx.split(mlp)
  dots = jaxprs.dots(lambda p, a: jax.grad(
      lambda q: loss(nnx.merge(graphdef, q), a))(p), params, x)
  assert len(dots) >= 6, dots  # 2 layers x (forward, dx, dw)
  assert all(d == (('bfloat16', 'bfloat16'), 'float32') for d in dots), dots


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_dense_layers_match_flax_and_keep_a_float32_bias_gradient(dtype):
  """Dense / DenseGeneral: nnx.Linear / nnx.LinearGeneral's parameters and
  outputs; the bias gradient is the cotangent's sum in the bias's dtype."""
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(3, 5, 2, 8), jnp.float32)
  pairs = [
      (matmul.Dense(8, 6, dtype=dtype, rngs=nnx.Rngs(1)),
       nnx.Linear(8, 6, dtype=dtype, rngs=nnx.Rngs(1))),
      (matmul.DenseGeneral((2, 8), 6, axis=(-2, -1), dtype=dtype,
                           rngs=nnx.Rngs(2)),
       nnx.LinearGeneral((2, 8), 6, axis=(-2, -1), dtype=dtype,
                         rngs=nnx.Rngs(2))),
      (matmul.DenseGeneral(8, (2, 4), dtype=dtype, rngs=nnx.Rngs(3)),
       nnx.LinearGeneral(8, (2, 4), dtype=dtype, rngs=nnx.Rngs(3))),
  ]
  for ours, flax_layer in pairs:
    for layer in (ours, flax_layer):
      layer.bias.set_value(jnp.asarray(rng.randn(*layer.bias.shape),
                                       jnp.float32))
    flax_layer.bias.set_value(ours.bias.get_value())
    flax_layer.kernel.set_value(ours.kernel.get_value())
    y, want = ours(x), flax_layer(x)
    assert y.dtype == want.dtype == dtype and y.shape == want.shape
    tol = 1e-6 if dtype == jnp.float32 else 2 ** -7
    np.testing.assert_allclose(np.asarray(y, np.float32),
                               np.asarray(want, np.float32), rtol=tol,
                               atol=tol)
    cot = jnp.asarray(rng.randn(*y.shape), jnp.float32)
    bias_grad = jax.grad(lambda b, shape=y.shape: jnp.sum(matmul.add_bias(
        jnp.zeros(shape, dtype), b).astype(jnp.float32) * cot))(
            ours.bias.get_value())
    assert bias_grad.dtype == jnp.float32
    lead = tuple(range(cot.ndim - ours.bias.ndim))
    np.testing.assert_allclose(
        bias_grad, np.asarray(cot.astype(dtype), np.float32).sum(lead),
        rtol=1e-5, atol=1e-5)
