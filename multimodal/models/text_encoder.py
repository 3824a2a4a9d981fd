"""Text transformer tower over right-padded token ids."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal import registry
from multimodal.models import posemb as posemb_lib
from multimodal.models.partitioning import axes
from multimodal.models.pooling import (first_index_of, gather_tokens,
                                       last_valid_index, masked_mean)
from multimodal.models.tower import EncoderOptions
from multimodal.models.transformer import make_dropout

POOLS = ('eos', 'last', 'first', 'mean', 'map', 'eos_id', 'argmax_id',
         'last_position')
POSEMBS = ('learned', 'sincos1d')


# Also a whole model on its own.
@registry.register('model', 'text_transformer')
@registry.register('encoder', 'text_transformer')
class TextEncoder(nnx.Module):
  """Token embedding + position embedding + Encoder + pooling.

  Padding (token id `pad_id`) is masked out of the attention keys, so pad
  tokens never change the outputs at real tokens. The token table
  [vocab_size, width] is named ('vocab', 'embed').

  Pooling: 'eos'/'last' the token at the last non-pad position (captions end
  with an EOS token), 'first' position 0, 'mean' the mean over non-pad tokens,
  'map' attention pooling over non-pad tokens. For imported checkpoints:
  'eos_id' the first position holding token `eos_id` (HF CLIP), 'argmax_id'
  the position of the largest token id (HF CLIP configs with
  eos_token_id == 2, where EOS is the largest id), 'last_position' the final
  position L - 1 whatever it holds (HF SigLIP, which pads to a fixed length).

  mask_pad: mask pad tokens out of the attention keys (default). False lets
    every token attend to pads, as HF CLIP / SigLIP do when given no
    attention mask (CLIP's causal mask already hides the pads after EOS, and
    SigLIP was trained attending to them). Its 'mean'/'map' pooling still
    skip pads.
  attention_mask (a call argument, [B, L], 1 = token, 0 = padding): when
    given, it replaces `tokens != pad_id` as the padding mask and is always
    applied to the attention keys, whatever mask_pad says: HF semantics of
    CLIPTextModel / SiglipTextModel(attention_mask=...) (transformers 5
    masks the padded keys in both; CLIP also keeps its causal mask). Queries
    are not masked, so padded positions still get outputs, as in HF (each
    row needs a token any query can see: with causal=True, a real token at
    position 0, i.e. right padding). 'eos'/'last' pool at the last position
    the mask marks and 'mean'/'map' over the marked positions; 'eos_id',
    'argmax_id', 'last_position' and 'first' read the ids or positions as
    HF does, mask or not (so SigLIP's pooled output is the final position's,
    a padding position when a row is padded).
  Sizes: `variant` ('B'; see sizes.py) and `**options` (EncoderOptions:
    width, depth, num_heads, mlp_ratio, mlp_dim, activation, dropout,
    layernorm_epsilon, attention_impl, remat, scan_layers, dtype,
    param_dtype), which override it; as for ViT.
  """
  OPTIONS = EncoderOptions  # the **options build_model accepts

  def __init__(self, *, vocab_size: int, max_len: int = 32,
               causal: bool = False, pool: str = 'eos', pad_id: int = 0,
               posemb: str = 'learned', mask_pad: bool = True,
               eos_id: int | None = None, variant: str | None = None,
               rngs: nnx.Rngs, **options):
    if pool not in POOLS:
      raise ValueError(f'pool must be one of {POOLS}, got {pool!r}.')
    if pool == 'eos_id' and eos_id is None:
      raise ValueError('pool="eos_id" needs eos_id (the EOS token id).')
    if posemb not in POSEMBS:
      raise ValueError(f'posemb must be one of {POSEMBS}, got {posemb!r}.')
    encoder, _ = EncoderOptions.resolve('text_transformer', variant, options)
    width = encoder.width
    kw = dict(dtype=encoder.dtype, param_dtype=encoder.param_dtype,
              rngs=rngs)
    self.max_len = max_len
    self.width = width
    self.causal = causal
    self.pool = pool
    self.pad_id = pad_id
    self.mask_pad = mask_pad
    self.eos_id = eos_id
    self.dtype = encoder.dtype
    self.posemb_kind = posemb
    self.embed = nnx.Embed(vocab_size, width, **kw,
                           embedding_init=nnx.initializers.normal(0.02),
                           embedding_metadata=axes('vocab', 'embed'))
    if posemb == 'learned':
      self.posemb = posemb_lib.LearnedPosEmb(
          max_len, width, param_dtype=encoder.param_dtype, rngs=rngs)
    else:
      self.posemb = None
    self.drop = make_dropout(encoder.dropout, rngs)
    self.encoder = encoder.encoder(rngs)
    if pool == 'map':
      self.map_head = encoder.map_head(rngs)

  def __call__(self, tokens: jax.Array, *,
               attention_mask: jax.Array | None = None,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """Encodes token ids.

    Args:
      tokens: int [B, L] ids, right-padded with `pad_id`, L <= max_len.
      attention_mask: optional int or bool [B, L], nonzero at tokens, 0 at
        padding (see the class docstring); default: tokens != pad_id.
      deterministic: disables dropout when True.

    Returns:
      (pooled [B, width], tokens [B, L, width]) in the compute dtype.
    """
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f'Text of length {length} exceeds max_len='
                       f'{self.max_len}.')
    if attention_mask is None:
      valid = tokens != self.pad_id  # [B, L]
    else:
      if attention_mask.shape != tokens.shape:
        raise ValueError(f'attention_mask has shape {attention_mask.shape}; '
                         f'it must be [B, L] like the tokens, '
                         f'{tokens.shape}.')
      valid = attention_mask.astype(bool)
    if self.posemb_kind == 'learned':
      pos = self.posemb(length)
    else:
      pos = posemb_lib.sincos_1d(length, self.width)
    x = self.embed(tokens) + pos.astype(self.dtype)[None]
    x = self.drop(x, deterministic=deterministic)

    mask = valid[:, None, None, :]  # [B, 1, 1(query), L(key)]
    if not self.mask_pad and attention_mask is None:
      mask = None
    if self.causal:
      causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
      mask = causal if mask is None else mask & causal
    x = self.encoder(x, mask, deterministic=deterministic)

    if self.pool in ('eos', 'last'):
      pooled = gather_tokens(x, last_valid_index(valid))
    elif self.pool == 'first':
      pooled = x[:, 0]
    elif self.pool == 'mean':
      pooled = masked_mean(x, valid)
    elif self.pool == 'eos_id':
      pooled = gather_tokens(x, first_index_of(tokens, self.eos_id))
    elif self.pool == 'argmax_id':
      pooled = gather_tokens(x, jnp.argmax(tokens, axis=1).astype(jnp.int32))
    elif self.pool == 'last_position':
      pooled = x[:, -1]
    else:
      pooled = self.map_head(x, valid)
    return pooled, x
