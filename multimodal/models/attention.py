"""Multi-head self- or cross-attention (the core: models/attention_core.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal.models import attention_core
from multimodal.models import matmul
from multimodal.models.partitioning import axes, constrain


class MultiHeadAttention(nnx.Module):
  """Multi-head dot-product attention.

  Layout is [batch, length, heads, head_dim] throughout, the layout
  `jax.nn.dot_product_attention` (and its cuDNN flash kernel) expects;
  `attention_impl` picks the core (attention_core.IMPLEMENTATIONS).

  Parameters (stored in `param_dtype`): query/key/value kernels
  [D, heads, head_dim] named ('embed', 'heads', 'kv'), output kernel
  [heads, head_dim, D] named ('heads', 'kv', 'embed'), plus biases.
  """

  def __init__(self, in_features: int, num_heads: int, *,
               head_dim: int | None = None, use_bias: bool = True,
               dtype=jnp.float32, param_dtype=jnp.float32,
               attention_impl: str | None = None, rngs: nnx.Rngs):
    if attention_impl not in attention_core.IMPLEMENTATIONS:
      raise ValueError('attention_impl must be one of '
                       f'{attention_core.IMPLEMENTATIONS}, got '
                       f'{attention_impl!r}.')
    if head_dim is None:
      if in_features % num_heads:
        raise ValueError(f'in_features={in_features} is not divisible by '
                         f'num_heads={num_heads}; pass head_dim explicitly.')
      head_dim = in_features // num_heads
    self.num_heads = num_heads
    self.head_dim = head_dim
    self.dtype = dtype
    self.attention_impl = attention_impl

    def qkv():
      return matmul.DenseGeneral(
          in_features, (num_heads, head_dim), use_bias=use_bias, dtype=dtype,
          param_dtype=param_dtype, rngs=rngs,
          kernel_metadata=axes('embed', 'heads', 'kv'),
          bias_metadata=axes('heads', 'kv'))

    self.query = qkv()
    self.key = qkv()
    self.value = qkv()
    self.out = matmul.DenseGeneral(
        (num_heads, head_dim), in_features, axis=(-2, -1), use_bias=use_bias,
        dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        kernel_metadata=axes('heads', 'kv', 'embed'),
        bias_metadata=axes('embed'))

  def __call__(self, x: jax.Array, context: jax.Array | None = None,
               mask: jax.Array | None = None) -> jax.Array:
    """Attends from `x` to `context` (to `x` itself when context is None).

    Args:
      x: queries' source, [B, L, D], any float dtype (cast to `dtype`).
      context: keys'/values' source, [B, S, D]; None means self-attention.
      mask: bool, True where a query may attend to a key; broadcastable to
        [B, heads, L, S] (e.g. [B, 1, 1, S] for key padding).

    Returns:
      [B, L, D] in `dtype`.
    """
    context = x if context is None else context
    q = self.query(x)  # [B, L, H, K]
    k = self.key(context)  # [B, S, H, K]
    v = self.value(context)
    names = ('act_batch', 'act_length', 'act_heads', 'act_kv')
    q, k, v = (constrain(t, names) for t in (q, k, v))
    out = attention_core.dot_product_attention(
        q, k, v, mask=mask, implementation=self.attention_impl)
    return self.out(out)
