"""The models' dense layers: low-precision inputs, float32 accumulation.

`Dense` and `DenseGeneral` are nnx.Linear and nnx.LinearGeneral (the same
parameters, paths and metadata) whose products go through `dot_general`
below and whose bias is added by `add_bias`; every dense layer of the
models is one of them. For float32 operands `dot_general` is one product
over the inputs with their leading axes flattened into one, the output
reshaped back, and a backward pass of matrix products (same values; faster
on XLA CPU, see _dense_bwd; the kernel keeps its shape in the forward pass,
where qwix's INT8 modules intercept the product); other and mixed dtypes
go to lax.dot_general. For bfloat16 or float16 operands (a model with
`dtype='bfloat16'`) each product, in the forward pass and in both products
of its backward pass, takes the low-precision operands and accumulates in
float32 (`preferred_element_type=float32`), then rounds the result to the
operands' dtype.

Why: XLA's CPU backend in jaxlib 0.10 sends a bfloat16 x bfloat16 -> float32
dot to its YNNPACK kernels, which use AVX512-BF16/AMX where the CPU has
them, but a bfloat16 -> bfloat16 dot to a generic kernel no faster than
float32 (benchmarks/README.md, "bf16 matmuls"). JAX's own transpose of a
float32-output dot would feed the float32 cotangent to the backward
products, which then run in float32; the custom VJP below keeps them in
bfloat16 with float32 accumulation. Accumulating in float32 is also the
numerically better choice on every backend (GPU/TPU matmul units accumulate
in float32 anyway), so the function is used everywhere, not only on CPU.

Shapes: the dense form of flax's layers, x [..., *K] . w [*K, *N] ->
[..., *N] (contracting x's trailing axes with w's leading ones, in order, no
batch dimensions). Any other dimension_numbers go to lax.dot_general
unchanged.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

_LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers,
                precision=None, preferred_element_type=None,
                out_sharding=None) -> jax.Array:
  """lax.dot_general's signature; see the module docstring."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  k = len(lhs_contract)
  dense = (not lhs_batch and not rhs_batch and
           tuple(lhs_contract) == tuple(range(lhs.ndim - k, lhs.ndim)) and
           tuple(rhs_contract) == tuple(range(k)))
  same = lhs.dtype == rhs.dtype
  low = same and jnp.dtype(lhs.dtype) in _LOW_PRECISION
  f32 = same and lhs.dtype == jnp.float32 and precision is None
  if not (dense and (low or f32) and preferred_element_type is None and
          out_sharding is None):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type,
                           out_sharding=out_sharding)
  if low:
    return _dense(lhs, rhs, k)
  # float32: the inputs' leading axes flattened into one (a free reshape),
  # and _dense's backward products taken over matrices (see _dense_bwd).
  lead = lhs.shape[:lhs.ndim - k]
  x = lhs.reshape(math.prod(lead), *lhs.shape[lhs.ndim - k:])
  return _dense(x, rhs, k).reshape(*lead, *rhs.shape[k:])


def _accumulate(a, b, a_axes, b_axes, dtype):
  out = lax.dot_general(a, b, ((a_axes, b_axes), ((), ())),
                        preferred_element_type=jnp.float32)
  return out.astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense(x: jax.Array, w: jax.Array, k: int) -> jax.Array:
  """x [..., *K] . w [*K, *N] -> [..., *N], float32 accumulation."""
  return _accumulate(x, w, tuple(range(x.ndim - k, x.ndim)), tuple(range(k)),
                     x.dtype)


def _dense_fwd(x, w, k):
  return _dense(x, w, k), (x, w)


def _dense_bwd(k, residuals, g):
  x, w = residuals
  g = g.astype(x.dtype)
  if jnp.dtype(x.dtype) not in _LOW_PRECISION:
    # float32 x [M, *K]: both products over matrices, [M, N] . [K, N]^T and
    # [M, K]^T . [M, N] (free reshapes). Over [B, T, K] activations and
    # multi-axis kernels XLA CPU took transposed copies of the activations
    # and of the gradients and slower kernels: ViT-B/32 SigLIP's step was
    # 7% slower (benchmarks/README.md, "Dense layers as matrix products").
    # bfloat16 measured 1.37x slower in this form and keeps the one below.
    x2 = x.reshape(x.shape[0], -1)
    g2 = g.reshape(x.shape[0], -1)
    w2 = w.reshape(x2.shape[1], g2.shape[1])
    dx = _accumulate(g2, w2, (1,), (1,), x.dtype).reshape(x.shape)
    dw = _accumulate(x2, g2, (0,), (0,), w.dtype).reshape(w.shape)
    return dx, dw
  # dx [..., *K]: g's output axes against w's output axes. This "NT" form and
  # dw's contraction over the leading (token) axes are the layouts XLA CPU's
  # fast bfloat16 kernels take without a transpose.
  n_out = w.ndim - k
  dx = _accumulate(g, w, tuple(range(g.ndim - n_out, g.ndim)),
                   tuple(range(k, w.ndim)), x.dtype)
  lead = tuple(range(x.ndim - k))
  dw = _accumulate(x, g, lead, lead, w.dtype)
  return dx, dw


_dense.defvjp(_dense_fwd, _dense_bwd)


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y [..., *F] + bias [*F] (cast to y's dtype).

  The bias gradient, the sum of y's cotangent over its leading axes, is
  taken over one flattened axis with float32 accumulation and returned in
  the bias's own dtype (float32 parameters keep a float32 gradient): XLA
  CPU turns the transposed broadcast of a bfloat16 add into a float32 copy
  of the cotangent and a reduce-window, a third of a bfloat16 MLP block's
  backward time (benchmarks/README.md).
  """
  return y + bias.astype(y.dtype)


def _add_bias_fwd(y, bias):
  return add_bias(y, bias), bias  # kept for its shape and dtype only


def _add_bias_bwd(bias, g):
  rows = g.reshape(-1, *bias.shape)
  return g, jnp.sum(rows, axis=0, dtype=jnp.float32).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Dense(nnx.Linear):
  """nnx.Linear with this module's dot_general and add_bias.

  inputs [..., in_features] -> [..., out_features] in `dtype`.
  """

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('dot_general', dot_general)
    super().__init__(*args, **kwargs)

  def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
    bias = self.bias[...] if self.bias is not None else None
    inputs, kernel = self.promote_dtype((inputs, self.kernel[...]),
                                        dtype=self.dtype)
    y = self.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)),
                                          ((), ())),
                         precision=self.precision, out_sharding=out_sharding)
    return y if bias is None else add_bias(y, bias)


class DenseGeneral(nnx.LinearGeneral):
  """nnx.LinearGeneral with this module's dot_general and add_bias, for
  the layout the models use: the trailing len(in_features) axes of the
  inputs contracted, no batch axes (any other layout: LinearGeneral's own
  computation). inputs [..., *in_features] -> [..., *out_features]."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('dot_general', dot_general)
    super().__init__(*args, **kwargs)

  def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
    n = len(self.in_features)
    axes = tuple(a % inputs.ndim for a in self.axis)
    if self.batch_axis or axes != tuple(range(inputs.ndim - n, inputs.ndim)):
      return super().__call__(inputs, out_sharding=out_sharding)
    bias = self.bias[...] if self.bias is not None else None
    inputs, kernel = self.promote_dtype((inputs, self.kernel[...]),
                                        dtype=self.dtype)
    y = self.dot_general(
        inputs, kernel, ((axes, tuple(range(n))), ((), ())),
        precision=self.precision, out_sharding=out_sharding)
    return y if bias is None else add_bias(y, bias)
