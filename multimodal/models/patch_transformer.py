"""The core shared by ViT and the audio encoder: patchify, embed, encode, pool.

Input is a [B, H, W, C] grid (an image, or a spectrogram as [B, T, F, 1]),
cut into non-overlapping (ph, pw) patches in row-major order (stem='patch'),
or read as H frames of W * C features by a 1-D conv stem (stem='conv1d').
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal.models import posemb as posemb_lib
from multimodal.models.partitioning import axes, param
from multimodal.models.pooling import masked_mean
from multimodal.models.stems import Conv1dStem, conv1d_stem_length
from multimodal.models.tower import EncoderOptions
from multimodal.models.transformer import layer_norm, make_dropout

POOLS = ('cls', 'mean', 'map')
POSEMBS = ('learned', 'sincos2d')
STEMS = ('patch', 'conv1d')


def patchify(x: jax.Array, patch_size: tuple[int, int]) -> jax.Array:
  """[B, H, W, C] -> [B, (H/ph) * (W/pw), ph * pw * C], row-major patches."""
  b, h, w, c = x.shape
  ph, pw = patch_size
  x = x.reshape(b, h // ph, ph, w // pw, pw, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // ph) * (w // pw), ph * pw * c)


class PatchTransformer(nnx.Module):
  """Patch embedding + position embedding + Encoder + pooling.

  The patch embedding is a linear map of flattened patches (the same as a
  conv with stride = kernel = patch size), kernel [ph*pw*C, D] named
  ('patch', 'embed').

  Options for matching other implementations (the defaults keep this
  module's original computation and parameters):
    patch_bias: the patch embedding has a bias (CLIP's conv has none).
    pre_norm: a LayerNorm `pre_norm` on the embedded tokens (CLS and
      position embedding included) before the encoder; CLIP's "pre_layrnorm".
    posemb_cls: the learned position table has num_patches + 1 rows and is
      added after the CLS token is prepended, so the CLS slot has its own
      position embedding (HF ViT, CLIP). Needs pool='cls', posemb='learned'.
    stem: 'patch' (above) or 'conv1d': the input [B, T, F, C] is read as T
      frames of F * C features by a Conv1dStem (Whisper's two convolutions),
      giving ceil(T / 2) tokens; patch_size is then unused and posemb must
      be 'learned' (Whisper's stored sinusoid table is loaded into it).
  encoder: the Encoder's (and MAP head's) size and computation.
  """

  def __init__(self, *, input_size: Sequence[int], patch_size: Sequence[int],
               channels: int, encoder: EncoderOptions, pool: str = 'cls',
               posemb: str = 'learned', stem: str = 'patch',
               patch_bias: bool = True, pre_norm: bool = False,
               posemb_cls: bool = False, rngs: nnx.Rngs):
    input_size, patch_size = tuple(input_size), tuple(patch_size)
    if pool not in POOLS:
      raise ValueError(f'pool must be one of {POOLS}, got {pool!r}.')
    if posemb not in POSEMBS:
      raise ValueError(f'posemb must be one of {POSEMBS}, got {posemb!r}.')
    if stem not in STEMS:
      raise ValueError(f'stem must be one of {STEMS}, got {stem!r}.')
    if posemb_cls and (pool != 'cls' or posemb != 'learned'):
      raise ValueError('posemb_cls=True needs pool="cls" and '
                       f'posemb="learned", got pool={pool!r}, '
                       f'posemb={posemb!r}.')
    if stem == 'conv1d':
      if len(input_size) != 2:
        raise ValueError(f'Input size {input_size} must be (frames, '
                         'features).')
      if posemb != 'learned':
        raise ValueError('stem="conv1d" needs posemb="learned", got '
                         f'{posemb!r}.')
      # A (tokens, 1) grid: the tokens are a 1-D sequence over time.
      self.grid = (conv1d_stem_length(input_size[0]), 1)
    else:
      if len(input_size) != 2 or len(patch_size) != 2 or any(
          s % p for s, p in zip(input_size, patch_size)):
        raise ValueError(f'Input size {input_size} must be a 2-D grid that '
                         f'patch size {patch_size} divides exactly.')
      self.grid = (input_size[0] // patch_size[0],
                   input_size[1] // patch_size[1])
    self.input_size = input_size
    self.patch_size = patch_size
    self.channels = channels
    self.pool = pool
    self.dtype = dtype = encoder.dtype
    self.stem = stem
    self.posemb_cls = posemb_cls
    num_patches = self.grid[0] * self.grid[1]
    width = encoder.width
    kw = dict(dtype=dtype, param_dtype=encoder.param_dtype, rngs=rngs)

    if stem == 'conv1d':
      self.embed = Conv1dStem(input_size[1] * channels, width,
                              activation=encoder.activation, **kw)
    else:
      self.embed = nnx.Linear(
          patch_size[0] * patch_size[1] * channels, width, **kw,
          use_bias=patch_bias, kernel_init=nnx.initializers.lecun_normal(),
          kernel_metadata=axes('patch', 'embed'), bias_metadata=axes('embed'))
    if posemb == 'learned':
      self.posemb = posemb_lib.LearnedPosEmb(num_patches + int(posemb_cls),
                                             width,
                                             param_dtype=encoder.param_dtype,
                                             rngs=rngs)
    else:
      # A fixed table, not a parameter: a static (non-pytree) attribute.
      self.posemb = None
    self.posemb_kind = posemb
    self.width = width
    if pool == 'cls':
      self.cls = param(rngs, nnx.initializers.zeros, (width,), ('embed',),
                       encoder.param_dtype)
    self.drop = make_dropout(encoder.dropout, rngs)
    # None keeps the default model's graph (and parameters) unchanged.
    self.pre_norm = (layer_norm(width, epsilon=encoder.layernorm_epsilon,
                                **kw) if pre_norm else None)
    self.encoder = encoder.encoder(rngs)
    if pool == 'map':
      self.map_head = encoder.map_head(rngs)

  def _posemb(self) -> jax.Array:
    if self.posemb_kind == 'learned':
      return self.posemb()
    return posemb_lib.sincos_2d(*self.grid, self.width)

  def __call__(self, x: jax.Array, *, deterministic: bool = True
               ) -> tuple[jax.Array, jax.Array]:
    """Encodes a [B, H, W, C] float grid.

    Returns:
      (pooled [B, D], tokens [B, N, D]), both in the compute dtype, where
      N = number of patches, or ceil(T / 2) with stem='conv1d' (a 'cls'
      token is not included in `tokens`).
    """
    return self.encode(self.embed_tokens(x), deterministic=deterministic)

  def embed_tokens(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] float grid -> its tokens with their position embedding
    [B, N, D] in the compute dtype (no CLS token). The first half of
    __call__, apart so that a video tower can encode the tokens of several
    frames together (models/video.py)."""
    if tuple(x.shape[1:]) != (*self.input_size, self.channels):
      raise ValueError(f'Expected inputs [B, {self.input_size[0]}, '
                       f'{self.input_size[1]}, {self.channels}], got '
                       f'{tuple(x.shape)}.')
    x = x.astype(self.dtype)
    if self.stem == 'conv1d':
      tokens = self.embed(x.reshape(*x.shape[:2], -1))  # [B, T', D]
    else:
      tokens = self.embed(patchify(x, self.patch_size))
    table = self._posemb().astype(self.dtype)
    # With posemb_cls the table's row 0 is the CLS slot's (added in encode).
    return tokens + table[int(self.posemb_cls):][None]

  def encode(self, tokens: jax.Array, *, deterministic: bool = True
             ) -> tuple[jax.Array, jax.Array]:
    """Tokens [B, L, D] (from embed_tokens, any L) -> (pooled [B, D],
    tokens [B, L, D]): CLS, pre-norm, dropout, Encoder, pooling."""
    if self.pool == 'cls':
      cls = self.cls[...].astype(self.dtype)
      if self.posemb_cls:
        cls = cls + self._posemb()[0].astype(self.dtype)
      cls = jnp.broadcast_to(cls, (tokens.shape[0], 1, tokens.shape[-1]))
      tokens = jnp.concatenate([cls, tokens], axis=1)
    if self.pre_norm is not None:
      tokens = self.pre_norm(tokens)
    tokens = self.drop(tokens, deterministic=deterministic)
    tokens = self.encoder(tokens, deterministic=deterministic)
    if self.pool == 'cls':
      return tokens[:, 0], tokens[:, 1:]
    if self.pool == 'mean':
      return masked_mean(tokens), tokens
    return self.map_head(tokens), tokens
