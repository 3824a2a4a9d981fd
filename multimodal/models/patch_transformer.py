"""The core shared by ViT and the audio encoder: patchify, embed, encode, pool.

Input is a [B, H, W, C] grid (an image, or a spectrogram as [B, T, F, 1]),
cut into non-overlapping (ph, pw) patches in row-major order.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal.models import posemb as posemb_lib
from multimodal.models.partitioning import axes, param
from multimodal.models.pooling import MAPHead, masked_mean
from multimodal.models.transformer import Encoder, make_dropout

POOLS = ('cls', 'mean', 'map')
POSEMBS = ('learned', 'sincos2d')


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
  """

  def __init__(self, *, input_size: Sequence[int], patch_size: Sequence[int],
               channels: int, width: int, depth: int, num_heads: int,
               mlp_ratio: float = 4, pool: str = 'cls',
               posemb: str = 'learned', dropout: float = 0.0,
               activation: str = 'gelu', layernorm_epsilon: float = 1e-6,
               dtype=jnp.float32, param_dtype=jnp.float32,
               attention_impl: str | None = None, remat: str = 'none',
               scan_layers: bool = False, rngs: nnx.Rngs):
    input_size, patch_size = tuple(input_size), tuple(patch_size)
    if pool not in POOLS:
      raise ValueError(f'pool must be one of {POOLS}, got {pool!r}.')
    if posemb not in POSEMBS:
      raise ValueError(f'posemb must be one of {POSEMBS}, got {posemb!r}.')
    if len(input_size) != 2 or len(patch_size) != 2 or any(
        s % p for s, p in zip(input_size, patch_size)):
      raise ValueError(f'Input size {input_size} must be a 2-D grid that '
                       f'patch size {patch_size} divides exactly.')
    self.input_size = input_size
    self.patch_size = patch_size
    self.channels = channels
    self.grid = (input_size[0] // patch_size[0], input_size[1] // patch_size[1])
    self.pool = pool
    self.dtype = dtype
    num_patches = self.grid[0] * self.grid[1]
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    self.embed = nnx.Linear(
        patch_size[0] * patch_size[1] * channels, width, **kw,
        kernel_init=nnx.initializers.lecun_normal(),
        kernel_metadata=axes('patch', 'embed'), bias_metadata=axes('embed'))
    if posemb == 'learned':
      self.posemb = posemb_lib.LearnedPosEmb(num_patches, width,
                                             param_dtype=param_dtype,
                                             rngs=rngs)
    else:
      # A fixed table, not a parameter: a static (non-pytree) attribute.
      self.posemb = None
    self.posemb_kind = posemb
    self.width = width
    if pool == 'cls':
      self.cls = param(rngs, nnx.initializers.zeros, (width,), ('embed',),
                       param_dtype)
    self.drop = make_dropout(dropout, rngs)
    self.encoder = Encoder(width, depth, num_heads, mlp_ratio,
                           activation=activation, dropout=dropout,
                           layernorm_epsilon=layernorm_epsilon,
                           attention_impl=attention_impl, remat=remat,
                           scan_layers=scan_layers, **kw)
    if pool == 'map':
      self.map_head = MAPHead(width, num_heads, mlp_ratio,
                              activation=activation,
                              layernorm_epsilon=layernorm_epsilon,
                              attention_impl=attention_impl, **kw)

  def _posemb(self) -> jax.Array:
    if self.posemb_kind == 'learned':
      return self.posemb()
    return posemb_lib.sincos_2d(*self.grid, self.width)

  def __call__(self, x: jax.Array, *, deterministic: bool = True
               ) -> tuple[jax.Array, jax.Array]:
    """Encodes a [B, H, W, C] float grid.

    Returns:
      (pooled [B, D], tokens [B, N, D]), both in the compute dtype, where
      N = number of patches (a 'cls' token is not included in `tokens`).
    """
    if tuple(x.shape[1:]) != (*self.input_size, self.channels):
      raise ValueError(f'Expected inputs [B, {self.input_size[0]}, '
                       f'{self.input_size[1]}, {self.channels}], got '
                       f'{tuple(x.shape)}.')
    tokens = self.embed(patchify(x.astype(self.dtype), self.patch_size))
    tokens = tokens + self._posemb().astype(self.dtype)[None]
    if self.pool == 'cls':
      cls = jnp.broadcast_to(self.cls[...].astype(self.dtype),
                             (tokens.shape[0], 1, tokens.shape[-1]))
      tokens = jnp.concatenate([cls, tokens], axis=1)
    tokens = self.drop(tokens, deterministic=deterministic)
    tokens = self.encoder(tokens, deterministic=deterministic)
    if self.pool == 'cls':
      return tokens[:, 0], tokens[:, 1:]
    if self.pool == 'mean':
      return masked_mean(tokens), tokens
    return self.map_head(tokens), tokens
