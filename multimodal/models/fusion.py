"""Cross-modal fusion: the 'fusion' contract, its fusions, and media layers.

The fusion contract (registry kind 'fusion'; encoder_decoder's `fusion`
config names one, and a module outside this package adds one with
`@registry.register('fusion', 'my_fusion')`):

  built as   cls(*, modalities: tuple[str, ...], width: int, dtype,
                 param_dtype, rngs: nnx.Rngs, **its config arguments)
  called as  fusion(tokens: dict[str, [B, N_m, width]],
                    masks: dict[str, bool [B, N_m]], *, deterministic)
             -> (memory [B, M, width], memory_mask bool [B, M])

`modalities` are the model's towers, in order; `tokens` and `masks` hold a
non-empty subset of them (those given to encode), in that order. Masks are
True for a real token; the tokens of an example lacking a modality are
already zeroed and all masked out, so a fusion must give outputs that do
not depend on masked tokens. A fusion's own config may set dtype and
param_dtype; the rest of the contract's arguments are the model's.

Fusions:
  concat               ConcatFusion: the tokens side by side, M = sum N_m.
  perceiver_resampler  ResamplerFusion: all tokens -> `num_latents` latents.
  bottleneck           BottleneckFusion (MBT): the streams exchange
                       information through shared latents; memory = the
                       streams, then the latents.

Layers (registry kind 'layer': building blocks with their own call
signatures, not fusions):
  gated_xattn          GatedCrossAttentionBlock (Flamingo): a text stream
                       attends to media tokens through tanh gates that
                       start closed.
  perceiver_resampler  PerceiverResampler (Flamingo): media tokens of any
                       width -> a fixed number of latent tokens.

Masked tokens never change any output (they are masked out of every
attention, and zeroed where returned).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal import registry
from multimodal.models import matmul
from multimodal.models.attention import MultiHeadAttention
from multimodal.models.partitioning import axes, constrain, param
from multimodal.models.transformer import (EncoderBlock, Mlp, layer_norm,
                                           make_dropout)


def media_projection(media_width: int | None, width: int, *, dtype,
                     param_dtype, rngs: nnx.Rngs) -> nnx.Linear | None:
  """Linear [media_width, width] ('media', 'embed'), or None if not needed."""
  if media_width is None or media_width == width:
    return None
  return matmul.Dense(media_width, width, dtype=dtype, param_dtype=param_dtype,
                    rngs=rngs, kernel_metadata=axes('media', 'embed'),
                    bias_metadata=axes('embed'))


def key_mask(valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """An attention mask from key validity, safe for queries with no keys.

  Args:
    valid: bool [B, S] (every query sees the same keys) or [B, L, S] (per
      query, e.g. each text token sees only its own image).

  Returns:
    (mask broadcastable to [B, heads, L, S], has_keys [B, 1, 1] or
    [B, L, 1]). Rows without any valid key attend everywhere instead, which
    keeps softmax and its gradient finite whatever the attention kernel;
    callers zero those rows' outputs with `has_keys`.
  """
  mask = valid[:, None, None, :] if valid.ndim == 2 else valid[:, None]
  has_keys = jnp.any(valid, axis=-1, keepdims=True)  # [B, 1] or [B, L, 1]
  if valid.ndim == 2:
    has_keys = has_keys[:, None]
  return mask | ~has_keys[:, None], has_keys


def any_token(masks: Sequence[jax.Array]) -> jax.Array:
  """bool [B]: whether an example has any real token in bool [B, N_m]s."""
  return jnp.any(jnp.concatenate(list(masks), axis=1), axis=1)


def _gate(value: float, param_dtype, rngs: nnx.Rngs) -> nnx.Param:
  return param(rngs, nnx.initializers.constant(value), (), (), param_dtype)


@registry.register('layer', 'gated_xattn')
class GatedCrossAttentionBlock(nnx.Module):
  """x + tanh(a) * XAttn(LN(x), media), then x + tanh(b) * Mlp(LN(x)).

  Flamingo's GATED XATTN-DENSE block, inserted before a (frozen) language
  model layer. The gates a and b are scalars initialised to `gate_init`
  (default 0), so at initialisation the block is exactly the identity and
  the language model's behaviour is untouched.

  Media tokens [B, M, media_width] are projected to `width` first when the
  widths differ. A query with no valid media gets zero cross-attention
  output; the gated MLP branch still applies to it.
  """

  def __init__(self, *, width: int, num_heads: int,
               media_width: int | None = None, mlp_ratio: float = 4,
               activation: str = 'gelu', dropout: float = 0.0,
               layernorm_epsilon: float = 1e-6, gate_init: float = 0.0,
               dtype=jnp.float32, param_dtype=jnp.float32,
               attention_impl: str | None = None, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.width = width
    self.dtype = dtype
    self.media_proj = media_projection(media_width, width, **kw)
    self.attn_norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.attn = MultiHeadAttention(width, num_heads,
                                   attention_impl=attention_impl, **kw)
    self.attn_gate = _gate(gate_init, param_dtype, rngs)
    self.mlp_norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.mlp = Mlp(width, int(width * mlp_ratio), activation=activation,
                   dropout_rate=dropout, **kw)
    self.mlp_gate = _gate(gate_init, param_dtype, rngs)
    self.drop = make_dropout(dropout, rngs)

  def __call__(self, x: jax.Array, media: jax.Array,
               media_mask: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    """Lets the text stream x attend to the media tokens.

    Args:
      x: text stream [B, L, width].
      media: media tokens [B, M, media_width].
      media_mask: bool [B, M] or per query [B, L, M], True for media a query
        may see; None means all.
      deterministic: disables dropout when True.

    Returns:
      [B, L, width] in the compute dtype.
    """
    x = constrain(x.astype(self.dtype), ('act_batch', 'act_length',
                                         'act_embed'))
    if self.media_proj is not None:
      media = self.media_proj(media)
    if media_mask is None:
      media_mask = jnp.ones(media.shape[:2], bool)
    mask, has_media = key_mask(media_mask)
    y = self.attn(self.attn_norm(x), context=media, mask=mask)
    y = jnp.where(has_media, y, 0)
    gate = jnp.tanh(self.attn_gate[...]).astype(self.dtype)
    x = x + gate * self.drop(y, deterministic=deterministic)
    y = self.mlp(self.mlp_norm(x), deterministic=deterministic)
    gate = jnp.tanh(self.mlp_gate[...]).astype(self.dtype)
    return x + gate * self.drop(y, deterministic=deterministic)


def _latents(rngs: nnx.Rngs, num: int, width: int, param_dtype) -> nnx.Param:
  return param(rngs, nnx.initializers.normal(0.02), (num, width),
               ('latent', 'embed'), param_dtype)


@registry.register('fusion', 'bottleneck')
class BottleneckFusion(nnx.Module):
  """Multimodal bottleneck transformer (MBT) fusion layers.

  `num_latents` learned latent tokens are shared by all streams. In each
  layer, every modality's stream runs its own pre-LN EncoderBlock over
  [its tokens, latents]; the streams' updated latents are then averaged
  over the streams present, and that average enters the next layer. Streams
  thus exchange information only through the latents.

  A modality is missing for an example when all its tokens are masked (or
  for the whole batch when its key is absent from the inputs): it then adds
  nothing to the latents' average. Latents [num_latents, width] are named
  ('latent', 'embed').
  """

  def __init__(self, *, modalities: Sequence[str], width: int,
               depth: int = 2, num_heads: int = 4, num_latents: int = 4,
               mlp_ratio: float = 4, activation: str = 'gelu',
               dropout: float = 0.0, layernorm_epsilon: float = 1e-6,
               dtype=jnp.float32, param_dtype=jnp.float32,
               attention_impl: str | None = None, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.modalities = tuple(modalities)
    self.width = width
    self.dtype = dtype
    self.latents = _latents(rngs, num_latents, width, param_dtype)
    self.layers = nnx.List([
        nnx.Dict({m: EncoderBlock(width, num_heads, mlp_ratio,
                                  activation=activation, dropout=dropout,
                                  layernorm_epsilon=layernorm_epsilon,
                                  attention_impl=attention_impl, **kw)
                  for m in self.modalities})
        for _ in range(depth)])
    self.norms = nnx.Dict({m: layer_norm(width, epsilon=layernorm_epsilon,
                                         **kw) for m in self.modalities})
    self.latent_norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)

  def __call__(self, tokens: Mapping[str, jax.Array],
               masks: Mapping[str, jax.Array], *,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """The fusion contract: memory = [streams in `modalities` order, latents].

    Returns:
      (memory [B, sum N_m + num_latents, width] in the compute dtype,
       memory_mask bool [B, M]: the streams' masks, then the latents valid
       for every example with any real token).
    """
    streams, latents = self.fuse(tokens, masks, deterministic=deterministic)
    names = list(streams)
    valid = [masks[m] for m in names]
    latent_mask = jnp.broadcast_to(any_token(valid)[:, None],
                                   latents.shape[:2])
    return (jnp.concatenate([streams[m] for m in names] + [latents], 1),
            jnp.concatenate(valid + [latent_mask], 1))

  def fuse(self, tokens: Mapping[str, jax.Array],
           masks: Mapping[str, jax.Array] | None = None, *,
           deterministic: bool = True
           ) -> tuple[dict[str, jax.Array], jax.Array]:
    """Fuses the streams.

    Args:
      tokens: modality -> [B, N_m, width]; any subset of `modalities`, at
        least one.
      masks: modality -> bool [B, N_m], True for real tokens; a modality
        without an entry has all tokens real.
      deterministic: disables dropout when True.

    Returns:
      (modality -> [B, N_m, width] final-normed tokens, zero where masked;
       latents [B, num_latents, width] final-normed), compute dtype.
    """
    unknown = sorted(set(tokens) - set(self.modalities))
    if unknown or not tokens:
      raise ValueError(f'BottleneckFusion over {self.modalities} got '
                       f'streams {sorted(tokens)}.')
    masks = dict(masks or {})
    names = [m for m in self.modalities if m in tokens]
    streams = {m: tokens[m].astype(self.dtype) for m in names}
    valid = {m: masks.get(m, jnp.ones(streams[m].shape[:2], bool))
             for m in names}
    present = {m: jnp.any(valid[m], axis=1)[:, None, None] for m in names}
    batch = streams[names[0]].shape[0]
    num = self.latents.shape[0]
    latents = jnp.broadcast_to(self.latents[...].astype(self.dtype),
                               (batch, num, self.width))
    for blocks in self.layers:
      total = jnp.zeros(latents.shape, jnp.float32)
      count = jnp.zeros((batch, 1, 1), jnp.float32)
      for m in names:
        n = streams[m].shape[1]
        z = jnp.concatenate([streams[m], latents], axis=1)
        keys = jnp.concatenate([valid[m], jnp.ones((batch, num), bool)], 1)
        z = blocks[m](z, keys[:, None, None, :], deterministic=deterministic)
        streams[m] = z[:, :n]
        total += jnp.where(present[m], z[:, n:].astype(jnp.float32), 0)
        count += present[m]
      # With no stream present the latents have nothing to average: keep.
      mean = (total / jnp.maximum(count, 1.0)).astype(self.dtype)
      latents = jnp.where(count > 0, mean, latents)
    out = {m: jnp.where(valid[m][..., None], self.norms[m](streams[m]), 0)
           for m in names}
    return out, self.latent_norm(latents)


class _ResamplerLayer(nnx.Module):
  """Latents attend to [media, latents], then a pre-LN MLP; both residual."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: float, *,
               activation: str, dropout: float, layernorm_epsilon: float,
               dtype, param_dtype, attention_impl: str | None,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.media_norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.latent_norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.attn = MultiHeadAttention(width, num_heads,
                                   attention_impl=attention_impl, **kw)
    self.mlp_norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.mlp = Mlp(width, int(width * mlp_ratio), activation=activation,
                   dropout_rate=dropout, **kw)
    self.drop = make_dropout(dropout, rngs)

  def __call__(self, latents, media, mask, *, deterministic):
    latents = constrain(latents, ('act_batch', 'act_length', 'act_embed'))
    q = self.latent_norm(latents)
    context = jnp.concatenate([self.media_norm(media), q], axis=1)
    y = self.attn(q, context=context, mask=mask)
    latents = latents + self.drop(y, deterministic=deterministic)
    y = self.mlp(self.mlp_norm(latents), deterministic=deterministic)
    return latents + self.drop(y, deterministic=deterministic)


@registry.register('layer', 'perceiver_resampler')
class PerceiverResampler(nnx.Module):
  """Flamingo's Perceiver resampler: M media tokens -> K latent tokens.

  Learned latents [num_latents, width] ('latent', 'embed') cross-attend to
  the media tokens (and, as in Flamingo, to themselves: keys and values are
  [media, latents]) for `depth` layers, then a final LayerNorm. The latents
  are always valid keys, so even an example with every media token masked
  gets finite outputs (that depend on no media).
  """

  def __init__(self, *, width: int, depth: int = 2, num_heads: int = 4,
               num_latents: int = 8, media_width: int | None = None,
               mlp_ratio: float = 4, activation: str = 'gelu',
               dropout: float = 0.0, layernorm_epsilon: float = 1e-6,
               dtype=jnp.float32, param_dtype=jnp.float32,
               attention_impl: str | None = None, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.width = width
    self.dtype = dtype
    self.media_proj = media_projection(media_width, width, **kw)
    self.latents = _latents(rngs, num_latents, width, param_dtype)
    self.layers = nnx.List([
        _ResamplerLayer(width, num_heads, mlp_ratio, activation=activation,
                        dropout=dropout, layernorm_epsilon=layernorm_epsilon,
                        attention_impl=attention_impl, **kw)
        for _ in range(depth)])
    self.norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)

  def __call__(self, media: jax.Array, media_mask: jax.Array | None = None,
               *, deterministic: bool = True) -> jax.Array:
    """media [B, M, media_width], mask bool [B, M] or None -> [B, K, width].

    Output in the compute dtype; K = num_latents.
    """
    media = media.astype(self.dtype)
    if self.media_proj is not None:
      media = self.media_proj(media)
    batch, num = media.shape[0], self.latents.shape[0]
    if media_mask is None:
      media_mask = jnp.ones(media.shape[:2], bool)
    keys = jnp.concatenate([media_mask, jnp.ones((batch, num), bool)], 1)
    mask = keys[:, None, None, :]
    latents = jnp.broadcast_to(self.latents[...].astype(self.dtype),
                               (batch, num, self.width))
    for layer in self.layers:
      latents = layer(latents, media, mask, deterministic=deterministic)
    return self.norm(latents)


@registry.register('fusion', 'perceiver_resampler')
class ResamplerFusion(PerceiverResampler):
  """PerceiverResampler over every modality's tokens, as a fusion.

  Takes PerceiverResampler's arguments (OPTIONS), but for media_width: the
  tokens are already `width` wide. Memory = the latents [B, num_latents,
  width], valid for every example with any real token. A subclass, so the
  parameters keep PerceiverResampler's paths.
  """
  OPTIONS = PerceiverResampler

  def __init__(self, *, modalities: Sequence[str], rngs: nnx.Rngs,
               **options):
    if options.get('media_width') is not None:
      raise ValueError('perceiver_resampler fusion: drop media_width, its '
                       'tokens are already `width` wide.')
    super().__init__(rngs=rngs, **options)
    self.modalities = tuple(modalities)

  def __call__(self, tokens: Mapping[str, jax.Array],
               masks: Mapping[str, jax.Array], *,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """The fusion contract; see the module docstring."""
    names = list(tokens)
    valid = [masks[m] for m in names]
    memory = super().__call__(
        jnp.concatenate([tokens[m] for m in names], axis=1),
        jnp.concatenate(valid, axis=1), deterministic=deterministic)
    return memory, jnp.broadcast_to(any_token(valid)[:, None],
                                    memory.shape[:2])


@registry.register('fusion', 'concat')
class ConcatFusion(nnx.Module):
  """The modalities' tokens side by side: memory [B, sum N_m, width].

  No parameters; dtype and the other contract arguments are unused.
  """

  def __init__(self, *, modalities: Sequence[str], width: int,
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    del dtype, param_dtype, rngs  # in the contract, not needed here
    self.modalities = tuple(modalities)
    self.width = width

  def __call__(self, tokens: Mapping[str, jax.Array],
               masks: Mapping[str, jax.Array], *,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """The fusion contract; see the module docstring."""
    del deterministic  # nothing random
    return (jnp.concatenate(list(tokens.values()), axis=1),
            jnp.concatenate([masks[m] for m in tokens], axis=1))
