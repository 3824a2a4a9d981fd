"""AST-style audio tower: a ViT over log-mel spectrogram patches."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal import registry
from multimodal.models.patch_transformer import PatchTransformer


@registry.register('model', 'audio_transformer')
class AudioEncoder(nnx.Module):
  """Audio Spectrogram Transformer over [B, num_frames, num_mels] log-mels.

  The spectrogram is treated as a one-channel image, split into
  non-overlapping (time, freq) patches, each embedded linearly, with a 2-D
  position embedding over the (time, freq) patch grid.
  """

  def __init__(self, *, num_frames: int = 96, num_mels: int = 64,
               patch_size: Sequence[int] = (16, 16), width: int = 128,
               depth: int = 2, num_heads: int = 4, mlp_ratio: float = 4,
               pool: str = 'mean', posemb: str = 'sincos2d',
               dropout: float = 0.0, activation: str = 'gelu',
               layernorm_epsilon: float = 1e-6, dtype=jnp.float32,
               param_dtype=jnp.float32, attention_impl: str | None = None,
               remat: str = 'none', scan_layers: bool = False,
               rngs: nnx.Rngs):
    self.width = width  # size of the pooled output
    self.core = PatchTransformer(
        input_size=(num_frames, num_mels), patch_size=tuple(patch_size),
        channels=1, width=width, depth=depth, num_heads=num_heads,
        mlp_ratio=mlp_ratio, pool=pool, posemb=posemb, dropout=dropout,
        activation=activation, layernorm_epsilon=layernorm_epsilon,
        dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl,
        remat=remat, scan_layers=scan_layers, rngs=rngs)

  def __call__(self, spectrogram: jax.Array, *, deterministic: bool = True
               ) -> tuple[jax.Array, jax.Array]:
    """Encodes log-mel frames.

    Args:
      spectrogram: float [B, T, F] (T = num_frames, F = num_mels).
      deterministic: disables dropout when True.

    Returns:
      (pooled [B, width], tokens [B, N, width]) in the compute dtype, where
      N = (T / patch_time) * (F / patch_freq).
    """
    return self.core(spectrogram[..., None], deterministic=deterministic)
