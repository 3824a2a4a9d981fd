"""Audio tower over log-mels: AST-style patches, or a Whisper-style conv stem."""
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

  stem='conv1d' instead reads the mels of each frame as channels of two 1-D
  convolutions over time (Whisper's encoder front end: kernel 3, strides 1
  then 2, activation after each), giving ceil(num_frames / 2) tokens with a
  learned (or imported) position table; patch_size is then unused.
  mlp_dim: MLP hidden size; None means int(width * mlp_ratio).
  """

  def __init__(self, *, num_frames: int = 96, num_mels: int = 64,
               patch_size: Sequence[int] = (16, 16), width: int = 128,
               depth: int = 2, num_heads: int = 4, mlp_ratio: float = 4,
               pool: str = 'mean', posemb: str = 'sincos2d',
               dropout: float = 0.0, activation: str = 'gelu',
               layernorm_epsilon: float = 1e-6, dtype=jnp.float32,
               param_dtype=jnp.float32, attention_impl: str | None = None,
               remat: str = 'none', scan_layers: bool = False,
               stem: str = 'patch', mlp_dim: int | None = None,
               rngs: nnx.Rngs):
    self.width = width  # size of the pooled output
    self.core = PatchTransformer(
        input_size=(num_frames, num_mels), patch_size=tuple(patch_size),
        channels=1, width=width, depth=depth, num_heads=num_heads,
        mlp_ratio=mlp_ratio, pool=pool, posemb=posemb, dropout=dropout,
        activation=activation, layernorm_epsilon=layernorm_epsilon,
        dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl,
        remat=remat, scan_layers=scan_layers, stem=stem, mlp_dim=mlp_dim,
        rngs=rngs)

  def __call__(self, spectrogram: jax.Array, *, deterministic: bool = True
               ) -> tuple[jax.Array, jax.Array]:
    """Encodes log-mel frames.

    Args:
      spectrogram: float [B, T, F] (T = num_frames, F = num_mels).
      deterministic: disables dropout when True.

    Returns:
      (pooled [B, width], tokens [B, N, width]) in the compute dtype, where
      N = (T / patch_time) * (F / patch_freq), or ceil(T / 2) with
      stem='conv1d'.
    """
    return self.core(spectrogram[..., None], deterministic=deterministic)
