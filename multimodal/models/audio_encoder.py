"""Audio tower over log-mels: AST-style patches, or a Whisper-style conv stem."""
from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from multimodal import registry
from multimodal.models.patch_transformer import PatchTransformer
from multimodal.models.tower import EncoderOptions

DEFAULT_PATCH = (16, 16)


# Also a whole model on its own (e.g. an imported Whisper encoder).
@registry.register('model', 'audio_transformer')
@registry.register('encoder', 'audio_transformer')
class AudioEncoder(nnx.Module):
  """Audio Spectrogram Transformer over [B, num_frames, num_mels] log-mels.

  The spectrogram is treated as a one-channel image, split into
  non-overlapping (time, freq) patches, each embedded linearly, with a 2-D
  position embedding over the (time, freq) patch grid. patch_size: (time,
  freq); default the variant's ('B/16': 16 x 16), else (16, 16).

  stem='conv1d' instead reads the mels of each frame as channels of two 1-D
  convolutions over time (Whisper's encoder front end: kernel 3, strides 1
  then 2, activation after each), giving ceil(num_frames / 2) tokens with a
  learned (or imported) position table; patch_size is then unused.

  Sizes: `variant` (sizes.py) and `**options` (EncoderOptions, which
  override it), as for ViT.
  """
  OPTIONS = EncoderOptions  # the **options build_model accepts

  def __init__(self, *, num_frames: int = 96, num_mels: int = 64,
               patch_size: Sequence[int] | None = None, pool: str = 'mean',
               posemb: str = 'sincos2d', stem: str = 'patch',
               variant: str | None = None, rngs: nnx.Rngs, **options):
    encoder, patch = EncoderOptions.resolve('audio_transformer', variant,
                                            options, patches=True)
    if patch_size is None:
      patch_size = (patch, patch) if patch else DEFAULT_PATCH
    self.width = encoder.width  # size of the pooled output
    self.core = PatchTransformer(
        input_size=(num_frames, num_mels), patch_size=tuple(patch_size),
        channels=1, encoder=encoder, pool=pool, posemb=posemb, stem=stem,
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
