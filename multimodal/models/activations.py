"""The MLPs' activations, a registry kind ('activation').

  'gelu'        exact GELU, x * Phi(x) with Phi the normal CDF (erf)
  'gelu_tanh'   GELU's tanh approximation
  'quick_gelu'  x * sigmoid(1.702 x), OpenAI CLIP's approximation

A model names its activation in config (e.g.
`config.model.towers.image.activation`); a function of your own registers
with `@registry.register('activation', NAME)` from a module listed in
`config.imports`. Every activation maps an array to one of the same shape
and dtype.

The exact GELU has its own forward and backward (a custom VJP): both are
computed in float32 from the input alone (Phi by lax.erf, its derivative
phi = exp(-x^2 / 2) / sqrt(2 pi)) and rounded to the input's dtype once.
`jax.nn.gelu(approximate=False)` differentiated by autodiff computes
lax.erfc (whose XLA expansion evaluates two approximations and selects)
and, for bfloat16 inputs, converts between bfloat16 and float32 at every
intermediate of the backward pass: on CPU it was ~10% of a bfloat16
training step (benchmarks/README.md, "GELU"). Values agree with jax.nn.gelu
to float32 rounding (|error| < 1e-6 for |x| < 10).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from multimodal import registry

_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _cdf(x: jax.Array) -> jax.Array:
  """Phi(x), float32 x."""
  return 0.5 + 0.5 * lax.erf(x * _SQRT_HALF)


@registry.register('activation', 'gelu')
@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x * Phi(x): any float dtype in, the same dtype out."""
  xf = x.astype(jnp.float32)
  return (xf * _cdf(xf)).astype(x.dtype)


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, g):
  xf = x.astype(jnp.float32)
  slope = _cdf(xf) + xf * jnp.exp(-0.5 * xf * xf) * _INV_SQRT_2PI
  return ((g.astype(jnp.float32) * slope).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


@registry.register('activation', 'gelu_tanh')
def gelu_tanh(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=True)


@registry.register('activation', 'quick_gelu')
def quick_gelu(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(1.702 * x)


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The registered activation `name`; a ValueError names the known ones."""
  try:
    return registry.get('activation', name)
  except KeyError as e:
    raise ValueError(e.args[0]) from None
