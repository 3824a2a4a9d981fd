"""Encoder-decoder: media towers, a fusion of their tokens, a text decoder.

  media (image [B, S, S, C], audio [B, T, F], ...) -> one tower each
  -> tokens [B, N_m, width_m] -> linear to `width` + a learned embedding of
  the modality -> fusion -> memory [B, M, width], memory_mask bool [B, M]
  -> TextDecoder, whose cross-attention reads the memory.

Fusions (`fusion['name']`):
  concat               the modalities' tokens side by side (M = sum N_m).
  perceiver_resampler  all tokens -> `num_latents` latents (M = num_latents).
  bottleneck           MBT layers: the streams exchange information through
                       shared latents; memory = streams then latents.

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
from multimodal.models.builder import build_model, config_to_dict
from multimodal.models.modality_dropout import drop_modalities
from multimodal.models.partitioning import axes, param

FUSIONS = ('concat', 'perceiver_resampler', 'bottleneck')


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
        encoder returning (pooled, tokens [B, N, tower width]).
      decoder: config of a 'text_decoder' (its memory_width is set here).
      width: memory width, that of every modality's tokens after projection.
      fusion: {'name': one of FUSIONS, ...that module's other arguments};
        default concat.
      modality_dropout: training-time probability of dropping each modality
        of an example (never all of them); see modality_dropout.py.
      dtype: compute dtype given to parts that do not set their own.
      param_dtype: parameter dtype, likewise.
      rngs: random streams.
    """
    towers = config_to_dict(towers)
    fusion = config_to_dict(fusion or {'name': 'concat'})
    fusion_name = fusion.pop('name', None)
    if fusion_name not in FUSIONS:
      raise ValueError(f'fusion name must be one of {FUSIONS}, got '
                       f'{fusion_name!r} (config.model.fusion.name).')
    if not towers:
      raise ValueError('An encoder_decoder needs at least one tower '
                       '(config.model.towers).')
    if not 0.0 <= modality_dropout < 1.0:
      raise ValueError(f'modality_dropout must be in [0, 1), got '
                       f'{modality_dropout}.')
    defaults = {k: v for k, v in (('dtype', dtype),
                                  ('param_dtype', param_dtype)) if v}
    dt, pdt = dtype or jnp.float32, param_dtype or jnp.float32
    self.modalities = tuple(towers)
    self.width = width
    self.fusion_name = fusion_name
    self.modality_dropout = modality_dropout
    self.towers = nnx.Dict()
    self.proj = nnx.Dict()
    for name, cfg in towers.items():
      self.towers[name] = build_model({**defaults, **config_to_dict(cfg)},
                                      rngs=rngs)
      self.proj[name] = nnx.Linear(
          self.towers[name].width, width, dtype=dt, param_dtype=pdt,
          rngs=rngs, kernel_metadata=axes('media', 'embed'),
          bias_metadata=axes('embed'))
    # Tells the decoder (and fusion) which modality a token came from.
    self.modality_embed = param(rngs, nnx.initializers.normal(0.02),
                                (len(towers), width), (None, 'embed'), pdt)
    if fusion_name == 'concat':
      if fusion:
        raise ValueError(f'concat fusion takes no arguments, got '
                         f'{sorted(fusion)}.')
      self.fusion = None
    else:
      extra = ({'modalities': self.modalities}
               if fusion_name == 'bottleneck' else {})
      self.fusion = build_model({**defaults, **fusion, **extra,
                                 'name': fusion_name, 'width': width},
                                rngs=rngs)
    self.decoder = build_model({**defaults, **config_to_dict(decoder),
                                'memory_width': width}, rngs=rngs)

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
    names = list(tokens)
    any_present = jnp.any(jnp.stack(list(flags.values()), 1), axis=1)
    if self.fusion_name == 'concat':
      return (jnp.concatenate([tokens[m] for m in names], axis=1),
              jnp.concatenate([masks[m] for m in names], axis=1))
    if self.fusion_name == 'perceiver_resampler':
      memory = self.fusion(jnp.concatenate([tokens[m] for m in names], 1),
                           jnp.concatenate([masks[m] for m in names], 1),
                           deterministic=deterministic)
      return memory, jnp.broadcast_to(any_present[:, None], memory.shape[:2])
    streams, latents = self.fusion(tokens, masks, deterministic=deterministic)
    latent_mask = jnp.broadcast_to(any_present[:, None], latents.shape[:2])
    return (jnp.concatenate([streams[m] for m in names] + [latents], 1),
            jnp.concatenate([masks[m] for m in names] + [latent_mask], 1))

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
