"""Causal text decoder with cross-attention to encoder tokens, and its cache.

Training runs `TextDecoder.__call__` on whole sequences. Generation (see
multimodal/models/generate.py) runs `init_cache` once and then `decode` on
one token (or a prompt chunk) at a time, reusing the keys and values of
earlier positions from a preallocated, fixed-shape `KVCache`.

Like the encoders (transformer.Encoder), the decoder can rematerialise its
blocks in training (`remat`, a REMAT_POLICIES name) and store them stacked,
run by `nnx.scan` (`scan_layers`), so that compile time does not grow with
depth; cached decoding then scans over the layers too. Under a mesh with a
`stage` axis, training's stacked blocks run as a pipeline over it
(models/pipeline_parallel.py); cached decoding stays one scan (XLA gathers each
stage's layers where they are needed).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal import registry
from multimodal.models import attention_core
from multimodal.models import matmul
from multimodal.models import pipeline_parallel as pipeline
from multimodal.models import posemb as posemb_lib
from multimodal.models import sizes
from multimodal.models.attention import MultiHeadAttention
from multimodal.models.fusion import key_mask, media_projection
from multimodal.models.partitioning import axes, constrain
from multimodal.models.transformer import (REMAT_POLICIES, Mlp, layer_norm,
                                           make_blocks, make_dropout,
                                           mlp_hidden)


class KVCache(NamedTuple):
  """Decoding state of a TextDecoder; every leaf is batch-major.

  Batch-major leaves let beam search reorder the whole cache with one
  gather along axis 0, whichever layout the decoder uses.

  keys, values: self-attention keys and values of positions 0..T-1 (filled
    in as decoding proceeds; positions not yet written are never attended
    to), in the compute dtype. A decoder with unrolled layers holds a tuple
    of per-layer arrays [B, T, heads, head_dim]; one with `scan_layers`
    holds a single array [B, depth, T, heads, head_dim] (the layer axis
    second, so that the scan updates it in place and the batch stays
    first).
  memory_keys, memory_values: the memory's cross-attention keys and values,
    per layer [B, M, heads, head_dim] (unrolled) or one array
    [B, depth, M, heads, head_dim] (scan_layers); () without memory.
  memory_mask: bool [B, M], True for valid memory tokens; None without
    memory.
  """
  keys: tuple[jax.Array, ...] | jax.Array
  values: tuple[jax.Array, ...] | jax.Array
  memory_keys: tuple[jax.Array, ...] | jax.Array
  memory_values: tuple[jax.Array, ...] | jax.Array
  memory_mask: jax.Array | None


def _attend(attn: MultiHeadAttention, x: jax.Array, keys: jax.Array,
            values: jax.Array, mask: jax.Array) -> jax.Array:
  """attn's query/output projections around precomputed keys/values."""
  names = ('act_batch', 'act_length', 'act_heads', 'act_kv')
  q, keys, values = (constrain(t, names) for t in (attn.query(x), keys, values))
  out = attention_core.dot_product_attention(
      q, keys, values, mask=mask, implementation=attn.attention_impl)
  return attn.out(out)


class DecoderBlock(nnx.Module):
  """Pre-LN: x + SelfAttn(LN(x)) [causal], x + XAttn(LN(x), memory),
  x + Mlp(LN(x)); dropout on every residual branch."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4, *,
               cross_attention: bool = True, activation: str = 'gelu',
               dropout: float = 0.0, layernorm_epsilon: float = 1e-6,
               dtype=jnp.float32, param_dtype=jnp.float32,
               attention_impl: str | None = None, mlp_dim: int | None = None,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.self_norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.self_attn = MultiHeadAttention(width, num_heads,
                                        attention_impl=attention_impl, **kw)
    if cross_attention:
      self.cross_norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
      self.cross_attn = MultiHeadAttention(
          width, num_heads, attention_impl=attention_impl, **kw)
    else:
      self.cross_attn = None
    self.mlp_norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.mlp = Mlp(width, mlp_hidden(width, mlp_ratio, mlp_dim),
                   activation=activation, dropout_rate=dropout, **kw)
    self.drop = make_dropout(dropout, rngs)

  def memory_kv(self, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
    """memory [B, M, width] -> cross-attention (keys, values) [B, M, H, K]."""
    return self.cross_attn.key(memory), self.cross_attn.value(memory)

  def __call__(self, x: jax.Array, self_mask: jax.Array, *,
               cache: tuple[jax.Array, jax.Array] | None = None,
               position: jax.Array | int = 0,
               layer: jax.Array | None = None,
               memory_kv: tuple[jax.Array, jax.Array] | None = None,
               memory_mask: jax.Array | None = None,
               deterministic: bool = True):
    """One block over x [B, T, width] at positions position..position+T-1.

    Args:
      x: [B, T, width].
      self_mask: bool, broadcastable to [B, heads, T, S]: S = T without a
        cache, the cache length with one.
      cache: (keys, values): this layer's [B, S, H, K], or with `layer` every
        layer's [B, depth, S, H, K]. x's keys and values are written at
        `position` (of layer `layer`) and attention reads the whole cache.
      position: int32 scalar, the position of x's first token.
      layer: int32 scalar (may be traced): this block's index into a stacked
        cache; None for a per-layer cache.
      memory_kv: (keys, values) [B, M, H, K] of the memory, or None to skip
        cross-attention (as if every memory token were masked).
      memory_mask: bool [B, M] or None (all valid).
      deterministic: disables dropout when True.

    Returns:
      (x [B, T, width], the updated cache (as given) or None).
    """
    x = constrain(x, ('act_batch', 'act_length', 'act_embed'))
    h = self.self_norm(x)
    keys, values = self.self_attn.key(h), self.self_attn.value(h)
    if cache is not None and layer is None:
      keys, values = (
          jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype),
                                              position, axis=1)
          for c, new in zip(cache, (keys, values)))
      cache = (keys, values)
    elif cache is not None:
      # Only the new positions are written into the stacked cache (in place
      # inside the scan's carry); attention then reads this layer's slice.
      zero = jnp.zeros((), jnp.int32)
      start = (zero, jnp.asarray(layer, jnp.int32),
               jnp.asarray(position, jnp.int32), zero, zero)
      cache = tuple(
          jax.lax.dynamic_update_slice(c, new.astype(c.dtype)[:, None], start)
          for c, new in zip(cache, (keys, values)))
      keys, values = (jax.lax.dynamic_index_in_dim(c, layer, axis=1,
                                                   keepdims=False)
                      for c in cache)
    y = _attend(self.self_attn, h, keys, values, self_mask)
    x = x + self.drop(y, deterministic=deterministic)
    if memory_kv is not None:
      if memory_mask is None:
        memory_mask = jnp.ones(memory_kv[0].shape[:2], bool)
      mask, has_memory = key_mask(memory_mask)
      y = _attend(self.cross_attn, self.cross_norm(x), *memory_kv, mask)
      y = jnp.where(has_memory, y, 0)
      x = x + self.drop(y, deterministic=deterministic)
    y = self.mlp(self.mlp_norm(x), deterministic=deterministic)
    return x + self.drop(y, deterministic=deterministic), cache


# Also a whole model on its own (a language model without memory).
@registry.register('model', 'text_decoder')
@registry.register('decoder', 'text_decoder')
class TextDecoder(nnx.Module):
  """Token + learned position embedding, DecoderBlocks, LayerNorm, logits.

  Causal self-attention only, so right padding never changes the logits at
  earlier positions. Cross-attention reads `memory` (encoder tokens
  [B, M, memory_width], projected to `width` when the widths differ).
  Output logits use the token table transposed (`tie_embeddings`) or a
  separate [width, vocab] kernel ('embed', 'vocab').

  Sizes: `variant` names one ('B'; see sizes.py) and explicit width, depth,
  num_heads, mlp_ratio, mlp_dim override it. Without either: width 128,
  depth 2, 4 heads, MLP hidden int(width * mlp_ratio) with mlp_ratio 4
  (mlp_dim, when given, is the hidden size).

  remat: a transformer.REMAT_POLICIES name, applied per block in training
    (`__call__`); cached decoding keeps no activations for a backward pass,
    so it never rematerialises.
  scan_layers: store the blocks stacked (leading axis named 'layers') and
    run them with `nnx.scan`, in training and in cached decoding, so
    compile time does not grow with depth. The parameters then have a
    different layout from the unrolled stack ('blocks/attn/...' [depth, ...]
    instead of 'blocks/0/attn/...'), and so has the KVCache (see KVCache).
  """

  def __init__(self, *, vocab_size: int, max_len: int = 32,
               width: int | None = None, depth: int | None = None,
               num_heads: int | None = None, mlp_ratio: float | None = None,
               mlp_dim: int | None = None, variant: str | None = None,
               memory_width: int | None = None,
               cross_attention: bool = True, tie_embeddings: bool = True,
               dropout: float = 0.0, activation: str = 'gelu',
               layernorm_epsilon: float = 1e-6, dtype=jnp.float32,
               param_dtype=jnp.float32, attention_impl: str | None = None,
               remat: str = 'none', scan_layers: bool = False,
               rngs: nnx.Rngs):
    if remat not in REMAT_POLICIES:
      raise ValueError(f'remat must be one of {sorted(REMAT_POLICIES)}, got '
                       f'{remat!r}.')
    given = {k: v for k, v in (('width', width), ('depth', depth),
                               ('num_heads', num_heads),
                               ('mlp_ratio', mlp_ratio), ('mlp_dim', mlp_dim))
             if v is not None}
    size, _ = sizes.resolve(variant, given, patches=False)
    width, depth, num_heads = size['width'], size['depth'], size['num_heads']
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.vocab_size = vocab_size
    self.max_len = max_len
    self.width = width
    self.depth = depth
    self.dtype = dtype
    self.cross_attention = cross_attention
    self.remat = remat
    self.scan_layers = scan_layers
    self.embed = nnx.Embed(vocab_size, width, **kw,
                           embedding_init=nnx.initializers.normal(0.02),
                           embedding_metadata=axes('vocab', 'embed'))
    self.posemb = posemb_lib.LearnedPosEmb(max_len, width,
                                           param_dtype=param_dtype, rngs=rngs)
    self.memory_proj = (media_projection(memory_width, width, **kw)
                        if cross_attention else None)
    self.drop = make_dropout(dropout, rngs)

    def block(rngs):
      return DecoderBlock(width, num_heads, size['mlp_ratio'],
                          cross_attention=cross_attention,
                          activation=activation, dropout=dropout,
                          layernorm_epsilon=layernorm_epsilon,
                          attention_impl=attention_impl,
                          mlp_dim=size['mlp_dim'], dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)

    self.blocks = make_blocks(block, depth, scan_layers, rngs)
    self.norm = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    if tie_embeddings:
      self.head = None
    else:
      self.head = matmul.Dense(width, vocab_size, **kw,
                             kernel_metadata=axes('embed', 'vocab'),
                             bias_metadata=axes('vocab'))

  def _embed(self, tokens: jax.Array, position) -> jax.Array:
    table = self.posemb.embedding[...]
    pos = jax.lax.dynamic_slice_in_dim(table, position, tokens.shape[1])
    return self.embed(tokens) + pos.astype(self.dtype)[None]

  def _logits(self, x: jax.Array) -> jax.Array:
    x = self.norm(x)
    logits = self.embed.attend(x) if self.head is None else self.head(x)
    return logits.astype(jnp.float32)

  def _memory(self, memory: jax.Array | None) -> jax.Array | None:
    """memory [B, M, memory_width] -> [B, M, width] in the compute dtype."""
    if memory is None:
      return None
    if not self.cross_attention:
      raise ValueError('This TextDecoder has cross_attention=False but was '
                       'given memory.')
    memory = memory.astype(self.dtype)
    if self.memory_proj is not None:
      memory = self.memory_proj(memory)
    return memory

  def __call__(self, tokens: jax.Array, memory: jax.Array | None = None,
               memory_mask: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    """Next-token logits for every position (teacher forcing).

    Args:
      tokens: int [B, L], L <= max_len (e.g. BOS + caption, right-padded).
      memory: encoder tokens [B, M, memory_width], or None for no
        cross-attention.
      memory_mask: bool [B, M], True for valid memory tokens; None = all.
        An example with no valid memory gets no cross-attention input.
      deterministic: disables dropout when True.

    Returns:
      float32 logits [B, L, vocab_size]; position i predicts token i + 1.
    """
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f'Text of length {length} exceeds max_len='
                       f'{self.max_len}.')
    x = self.drop(self._embed(tokens, 0), deterministic=deterministic)
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]

    # Each layer's memory keys/values are made inside the (rematerialised)
    # layer, so remat recomputes them instead of keeping depth copies; the
    # memory itself goes to every layer (scan broadcasts it: in_axes None).
    def apply(x, block, memory, memory_mask):
      mkv = None if memory is None else block.memory_kv(memory)
      x, _ = block(x, causal, memory_kv=mkv, memory_mask=memory_mask,
                   deterministic=deterministic)
      return x

    if self.remat != 'none':
      apply = nnx.remat(apply, policy=REMAT_POLICIES[self.remat])
    memory = self._memory(memory)
    if self.scan_layers and pipeline.num_stages() > 1:
      x = pipeline.run(apply, self.blocks, x, memory, memory_mask)
    elif self.scan_layers:
      x = nnx.scan(apply, in_axes=(nnx.Carry, 0, None, None),
                   out_axes=nnx.Carry)(x, self.blocks, memory, memory_mask)
    else:
      for block in self.blocks:
        x = apply(x, block, memory, memory_mask)
    return self._logits(x)

  def init_cache(self, batch_size: int, length: int,
                 memory: jax.Array | None = None,
                 memory_mask: jax.Array | None = None) -> KVCache:
    """An empty cache for `length` positions, with the memory's keys/values.

    Args:
      batch_size: B.
      length: positions to hold, <= max_len.
      memory: [B, M, memory_width] or None.
      memory_mask: bool [B, M] or None (all valid).

    Returns:
      KVCache with zero self-attention keys/values in the compute dtype,
      laid out for this decoder (per-layer tuples, or stacked arrays with
      scan_layers; see KVCache).
    """
    if length > self.max_len:
      raise ValueError(f'Cache of length {length} exceeds max_len='
                       f'{self.max_len}.')
    attn = self.blocks.self_attn if self.scan_layers else (
        self.blocks[0].self_attn)
    shape = (batch_size, length, attn.num_heads, attn.head_dim)
    if self.scan_layers:
      zeros = jnp.zeros(shape[:1] + (self.depth,) + shape[1:], self.dtype)
    else:
      zeros = tuple(jnp.zeros(shape, self.dtype) for _ in self.blocks)
    memory = self._memory(memory)
    if memory is None:
      return KVCache(zeros, zeros, (), (), None)
    if memory_mask is None:
      memory_mask = jnp.ones(memory.shape[:2], bool)
    if self.scan_layers:
      mkeys, mvalues = nnx.vmap(
          lambda block, memory: block.memory_kv(memory), in_axes=(0, None),
          out_axes=1)(self.blocks, memory)
    else:
      mkvs = [block.memory_kv(memory) for block in self.blocks]
      mkeys, mvalues = (tuple(kv[i] for kv in mkvs) for i in (0, 1))
    return KVCache(zeros, zeros, mkeys, mvalues, memory_mask)

  def decode(self, tokens: jax.Array, cache: KVCache,
             position: jax.Array | int) -> tuple[jax.Array, KVCache]:
    """Logits for `tokens` at positions position.. given the cached past.

    Args:
      tokens: int [B, T]: one new token per example (T = 1), or a prompt
        chunk (T > 1, causal within the chunk).
      cache: from this decoder's `init_cache` or an earlier `decode`;
        positions before `position` must hold the keys/values of the same
        tokens' prefix.
      position: int32 scalar (may be traced); position + T <= cache length
        (not checked: a dynamic slice clamps instead).

    Returns:
      (float32 logits [B, T, vocab_size], cache with positions
      position..position+T-1 written).
    """
    stacked = not isinstance(cache.keys, tuple)
    if stacked != self.scan_layers:
      raise ValueError(
          f'This KVCache holds {"stacked" if stacked else "per-layer"} '
          f'keys/values but the decoder has scan_layers={self.scan_layers}: '
          'make the cache with the same decoder\'s init_cache.')
    num = tokens.shape[1]
    length = cache.keys.shape[2] if stacked else cache.keys[0].shape[1]
    x = self._embed(tokens, position)
    query_pos = position + jnp.arange(num)
    mask = (jnp.arange(length)[None, :] <= query_pos[:, None])[None, None]
    has_memory = cache.memory_mask is not None
    if self.scan_layers:
      def layer(carry, block, index):
        x, keys, values = carry
        mkv = None
        if has_memory:
          mkv = tuple(jax.lax.dynamic_index_in_dim(m, index, axis=1,
                                                   keepdims=False)
                      for m in (cache.memory_keys, cache.memory_values))
        x, (keys, values) = block(x, mask, cache=(keys, values),
                                  position=position, layer=index,
                                  memory_kv=mkv,
                                  memory_mask=cache.memory_mask)
        return x, keys, values

      x, keys, values = nnx.scan(
          layer, in_axes=(nnx.Carry, 0, 0), out_axes=nnx.Carry)(
              (x, cache.keys, cache.values), self.blocks,
              jnp.arange(self.depth, dtype=jnp.int32))
      return self._logits(x), cache._replace(keys=keys, values=values)
    keys, values = [], []
    mkvs = (zip(cache.memory_keys, cache.memory_values) if has_memory
            else [None] * len(self.blocks))
    for i, (block, mkv) in enumerate(zip(self.blocks, mkvs)):
      x, (k, v) = block(x, mask, cache=(cache.keys[i], cache.values[i]),
                        position=position, memory_kv=mkv,
                        memory_mask=cache.memory_mask)
      keys.append(k)
      values.append(v)
    return self._logits(x), cache._replace(keys=tuple(keys),
                                           values=tuple(values))
