"""softmax(q k^T / sqrt(d)) v with its own backward pass, for XLA's CPU
backend.

`dot_product_attention` is the models' one entry point to the attention
core (the encoders' MultiHeadAttention and the decoder's cached generation
both call it). Implementations (a tower's `attention_impl`):

  None      'einsum' on CPU; elsewhere jax.nn.dot_product_attention's own
            choice (cuDNN's fused kernel where it applies on GPU)
  'einsum'  the core below
  'xla'     jax.nn.dot_product_attention(implementation='xla')
  'cudnn'   jax.nn.dot_product_attention(implementation='cudnn')

The 'einsum' core: q, k, v [B, L|S, H, K] are laid out head-major
[B, H, L|S, K] once, the logits and the output are batched products with
float32 accumulation, the softmax is float32, and the backward pass is
written out (dv = p^T do, dp = do v^T, ds = p * (dp - rowsum(p * dp)),
dq = ds k, dk = ds^T q) with every product taking operands in the inputs'
dtype and accumulating in float32: the probabilities are kept in float32
for ds and rounded once for the products. Autodiff of jax's XLA path runs
the backward products of bfloat16 attention in float32 and transposes
between the [B, L, H, K] and head-major layouts at every product; on this
project's CPUs the core's forward + backward is ~20% faster in either
precision (benchmarks/README.md, "Attention core"). Values match jax's
path to float32 rounding (float32 inputs) or one bfloat16 rounding.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = (None, 'einsum', 'xla', 'cudnn')
_F32 = jnp.float32


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                          mask: jax.Array | None = None,
                          implementation: str | None = None) -> jax.Array:
  """Scaled dot-product attention, jax.nn.dot_product_attention's layout.

  Args:
    q: [B, L, H, K] queries; k, v: [B, S, H, K]; one float dtype.
    mask: bool, True where a query may attend to a key, broadcastable to
      [B, H, L, S]; a query with no key allowed attends uniformly (as jax's).
    implementation: see the module docstring.

  Returns:
    [B, L, H, K] in q's dtype.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'attention implementation must be one of '
                     f'{IMPLEMENTATIONS}, got {implementation!r}.')
  if implementation is None:
    implementation = 'einsum' if jax.default_backend() == 'cpu' else None
  if implementation != 'einsum':
    return jax.nn.dot_product_attention(q, k, v, mask=mask,
                                        implementation=implementation)
  if mask is not None:
    mask = jnp.broadcast_to(mask, (q.shape[0], q.shape[2], q.shape[1],
                                   k.shape[1]))
  return _attention(q, k, v, mask)


def _product(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.einsum(spec, a, b, preferred_element_type=_F32)


def _heads_first(t: jax.Array) -> jax.Array:
  return t.transpose(0, 2, 1, 3)  # [B, L, H, K] <-> [B, H, L, K]


def _probabilities(q, k, mask):
  """Float32 softmax of the masked logits, [B, H, L, S]; q, k head-major."""
  logits = _product('bhlk,bhsk->bhls', q, k) * (q.shape[-1] ** -0.5)
  if mask is not None:
    logits = jnp.where(mask, logits, -0.7 * jnp.finfo(_F32).max)
  return jax.nn.softmax(logits, axis=-1)


@jax.custom_vjp
def _attention(q, k, v, mask):
  return _forward(q, k, v, mask)[0]


def _forward(q, k, v, mask):
  qh, kh, vh = (_heads_first(t) for t in (q, k, v))
  p = _probabilities(qh, kh, mask)
  out = _product('bhls,bhsk->bhlk', p.astype(v.dtype), vh).astype(q.dtype)
  return _heads_first(out), (qh, kh, vh, p, mask)


def _backward(residuals, g):
  qh, kh, vh, p, mask = residuals
  dtype = qh.dtype
  gh = _heads_first(g.astype(dtype))
  dv = _product('bhls,bhlk->bhsk', p.astype(dtype), gh)
  dp = _product('bhlk,bhsk->bhls', gh, vh)
  ds = p * (dp - jnp.sum(p * dp, axis=-1, keepdims=True))
  if mask is not None:  # masked logits are constants: no gradient there
    ds = jnp.where(mask, ds, 0.0)
  ds = (ds * (qh.shape[-1] ** -0.5)).astype(dtype)
  dq = _product('bhls,bhsk->bhlk', ds, kh)
  dk = _product('bhls,bhlk->bhsk', ds, qh)
  grads = (_heads_first(t.astype(dtype)) for t in (dq, dk, dv))
  return (*grads, None)


_attention.defvjp(_forward, _backward)
