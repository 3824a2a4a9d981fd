"""Encoder-decoder: media towers, a fusion of their tokens, a text decoder.

  media (image [B, S, S, C], audio [B, T, F], ...) -> one tower each
  -> tokens [B, N_m, width_m] -> linear to `width` + a learned embedding of
  the modality -> fusion -> memory [B, M, width], memory_mask bool [B, M]
  -> TextDecoder, whose cross-attention reads the memory.

The fusion (`fusion['name']`) is any module registered as kind 'fusion',
built and called as fusion.py's docstring says (built-in: concat,
perceiver_resampler, bottleneck); the towers are registered 'encoder's and
the decoder a 'decoder'.

Missing modalities: `present` holds, per modality, bool [B] marking the
examples that have it. An absent modality's inputs are zeroed before its
tower and its tokens are masked out of fusion and of the memory, so no
output depends on its values. A modality left out of the inputs altogether
is not encoded at all (inference with, e.g., images only). With every
modality of an example absent, its memory is fully masked and the decoder
runs as a plain language model for it.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal import registry
from multimodal.models import matmul
from multimodal.models.builder import (build_model, config_to_dict,
                                       with_defaults)
from multimodal.models.modality_dropout import drop_modalities
from multimodal.models.partitioning import axes, param

# Set by the model, so a fusion config must not set them.
FUSION_ARGS = ('modalities', 'width')


@registry.register('model', 'encoder_decoder')
class EncoderDecoder(nnx.Module):
  """Media towers + fusion + TextDecoder (see the module docstring)."""

  def __init__(self, *, towers: Mapping[str, Any], decoder: Mapping[str, Any],
               width: int = 128, fusion: Mapping[str, Any] | None = None,
               modality_dropout: float = 0.0, dtype=None, param_dtype=None,
               rngs: nnx.Rngs):
    """Builds the towers, the fusion and the decoder.

    Args:
      towers: modality (batch field, e.g. 'image') -> config of a registered
        'encoder' returning (pooled, tokens [B, N, tower width]).
      decoder: config of a registered 'decoder' (its memory_width is set
        here).
      width: memory width, that of every modality's tokens after projection.
      fusion: {'name': a registered 'fusion', ...its own arguments}; default
        concat. modalities and width are the model's (see fusion.py).
      modality_dropout: training-time probability of dropping each modality
        of an example (never all of them); see modality_dropout.py.
      dtype: compute dtype given to parts (towers, fusion, decoder) that do
        not set their own (or set None); the projections use it too
        (default float32).
      param_dtype: parameter dtype, likewise.
      rngs: random streams.
    """
    towers = config_to_dict(towers)
    fusion = config_to_dict(fusion or {'name': 'concat'})
    clash = sorted(set(fusion) & set(FUSION_ARGS))
    if clash:
      raise ValueError(f'config.model.fusion sets {clash}, which the '
                       'encoder_decoder sets itself (its towers and width): '
                       'remove them.')
    if not towers:
      raise ValueError('An encoder_decoder needs at least one tower '
                       '(config.model.towers).')
    if not 0.0 <= modality_dropout < 1.0:
      raise ValueError(f'modality_dropout must be in [0, 1), got '
                       f'{modality_dropout}.')
    dt, pdt = dtype or jnp.float32, param_dtype or jnp.float32
    self.modalities = tuple(towers)
    self.width = width
    self.modality_dropout = modality_dropout
    self.towers = nnx.Dict()
    self.proj = nnx.Dict()
    for name, cfg in towers.items():
      self.towers[name] = build_model(
          with_defaults(cfg, dtype=dtype, param_dtype=param_dtype),
          rngs=rngs, kind='encoder')
      self.proj[name] = matmul.Dense(
          self.towers[name].width, width, dtype=dt, param_dtype=pdt,
          rngs=rngs, kernel_metadata=axes('media', 'embed'),
          bias_metadata=axes('embed'))
    # Tells the decoder (and fusion) which modality a token came from.
    self.modality_embed = param(rngs, nnx.initializers.normal(0.02),
                                (len(towers), width), (None, 'embed'), pdt)
    self.fusion = build_model(
        {**with_defaults(fusion, dtype=dt, param_dtype=pdt),
         'modalities': self.modalities, 'width': width},
        rngs=rngs, kind='fusion')
    self.decoder = build_model(
        {**with_defaults(decoder, dtype=dtype, param_dtype=param_dtype),
         'memory_width': width}, rngs=rngs, kind='decoder')

  def presence(self, media: Mapping[str, jax.Array],
               present: Mapping[str, jax.Array] | None = None, *,
               deterministic: bool = True,
               seeds: jax.Array | None = None) -> dict[str, jax.Array]:
    """bool [B] per modality in `media`, after modality dropout (training)."""
    unknown = sorted(set(media) - set(self.modalities))
    if unknown or not media:
      raise ValueError(f'Got media {sorted(media)}; this model encodes a '
                       f'non-empty subset of {self.modalities}.')
    present = dict(present or {})
    extra = sorted(set(present) - set(media))
    if extra:
      raise ValueError(f'present names {extra}, which are not in the media '
                       f'{sorted(media)}.')
    names = [m for m in self.modalities if m in media]
    batch = media[names[0]].shape[0]
    flags = jnp.stack([jnp.broadcast_to(jnp.asarray(present.get(m, True),
                                                    bool), (batch,))
                       for m in names], axis=1)
    if not deterministic and self.modality_dropout > 0 and len(names) > 1:
      if seeds is None:
        raise ValueError('modality_dropout needs per-example seeds: add '
                         "'seed' to the task's batch fields and pass "
                         "seeds=batch['seed'].")
      flags = drop_modalities(flags, self.modality_dropout, seeds)
    return {m: flags[:, i] for i, m in enumerate(names)}

  def encode(self, media: Mapping[str, jax.Array],
             present: Mapping[str, jax.Array] | None = None, *,
             deterministic: bool = True, seeds: jax.Array | None = None
             ) -> tuple[jax.Array, jax.Array]:
    """Encodes and fuses the media.

    Args:
      media: modality -> its tower's input, e.g. image float32 [B, S, S, C],
        audio float32 [B, T, F]; any non-empty subset of the towers.
      present: modality -> bool [B], False where an example lacks it;
        missing entries mean present.
      deterministic: disables dropout (and modality dropout) when True.
      seeds: int32 [B] per-example seeds for modality dropout (training).

    Returns:
      (memory [B, M, width] in the compute dtype, memory_mask bool [B, M]).
    """
    flags = self.presence(media, present, deterministic=deterministic,
                          seeds=seeds)
    tokens, masks = {}, {}
    for m, on in flags.items():
      x = media[m]
      x = jnp.where(on.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0)
      _, t = self.towers[m](x, deterministic=deterministic)
      t = self.proj[m](t) + self.modality_embed[
          self.modalities.index(m)].astype(t.dtype)
      tokens[m] = jnp.where(on[:, None, None], t, 0)
      masks[m] = jnp.broadcast_to(on[:, None], t.shape[:2])
    return self.fusion(tokens, masks, deterministic=deterministic)

  def __call__(self, media: Mapping[str, jax.Array], tokens: jax.Array,
               present: Mapping[str, jax.Array] | None = None, *,
               deterministic: bool = True, seeds: jax.Array | None = None
               ) -> jax.Array:
    """Teacher-forced next-token logits.

    Args:
      media, present, deterministic, seeds: as in `encode`.
      tokens: int32 [B, L] decoder input (e.g. BOS + caption), L <= the
        decoder's max_len.

    Returns:
      float32 [B, L, vocab]; position i predicts token i + 1.
    """
    memory, mask = self.encode(media, present, deterministic=deterministic,
                               seeds=seeds)
    return self.decoder(tokens, memory, mask, deterministic=deterministic)
