"""Turning a token sequence [B, L, D] into one vector [B, D]."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal.models.attention import MultiHeadAttention
from multimodal.models.partitioning import param
from multimodal.models.transformer import Mlp, layer_norm, mlp_hidden


def masked_mean(x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Mean over axis 1 of x [B, L, D], counting only `valid` [B, L] (bool).

  The sum is taken in float32 so bfloat16 tokens do not lose precision;
  the result is cast back to x.dtype.
  """
  if valid is None:
    return jnp.mean(x.astype(jnp.float32), axis=1).astype(x.dtype)
  w = valid.astype(jnp.float32)[..., None]
  total = jnp.sum(x.astype(jnp.float32) * w, axis=1)
  return (total / jnp.maximum(jnp.sum(w, axis=1), 1.0)).astype(x.dtype)


def last_valid_index(valid: jax.Array) -> jax.Array:
  """Index of the last True in each row of `valid` [B, L] -> int32 [B].

  Rows with no True give 0.
  """
  length = valid.shape[1]
  positions = jnp.arange(length, dtype=jnp.int32)
  return jnp.max(jnp.where(valid, positions, 0), axis=1)


def first_index_of(tokens: jax.Array, token_id: int) -> jax.Array:
  """Index of the first `token_id` in each row of int `tokens` [B, L] -> [B].

  Rows without it give 0 (as torch's argmax over an all-zero row does, which
  is what HuggingFace CLIP uses to find the EOS token).
  """
  return jnp.argmax(tokens == token_id, axis=1).astype(jnp.int32)


def gather_tokens(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, L, D], index int [B] -> x[b, index[b]]: [B, D]."""
  return jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]


class MAPHead(nnx.Module):
  """Multihead attention pooling: a learned probe attends to the tokens.

  As big_vision's MAPHead: probe -> cross-attention over tokens -> plus a
  pre-LN MLP residual. The probe [D] is named ('embed',). This is also the
  computation of HuggingFace's SiglipMultiheadAttentionPoolingHead (its
  torch MultiheadAttention packs q/k/v into one in_proj; the importer splits
  it). mlp_dim: MLP hidden size; None means int(width * mlp_ratio).
  """

  def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4, *,
               activation: str = 'gelu', layernorm_epsilon: float = 1e-6,
               dtype=jnp.float32, param_dtype=jnp.float32,
               attention_impl: str | None = None, mlp_dim: int | None = None,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.dtype = dtype
    self.probe = param(rngs, nnx.initializers.normal(0.02), (width,),
                       ('embed',), param_dtype)
    self.attn = MultiHeadAttention(width, num_heads,
                                   attention_impl=attention_impl, **kw)
    self.norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.mlp = Mlp(width, mlp_hidden(width, mlp_ratio, mlp_dim),
                   activation=activation, **kw)

  def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """x [B, L, D], valid bool [B, L] or None -> pooled [B, D] in `dtype`."""
    probe = jnp.broadcast_to(self.probe[...].astype(self.dtype),
                             (x.shape[0], 1, x.shape[-1]))  # [B, 1, D]
    mask = None if valid is None else valid[:, None, None, :]
    y = self.attn(probe, context=x, mask=mask)
    y = y + self.mlp(self.norm(y))
    return y[:, 0]
