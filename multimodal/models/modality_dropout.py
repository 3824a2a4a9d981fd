"""Modality dropout: hide whole modalities of training examples at random.

A model that always sees every modality learns to lean on whichever is
easiest and fails when one is missing at inference. Dropping a modality
per example (masking all its tokens) during training teaches it to answer
from what is there.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def drop_modalities(present: jax.Array, rate: float | jax.Array,
                    seeds: jax.Array) -> jax.Array:
  """Drops each present modality with probability `rate`, keeping >= 1.

  Each modality of each example is dropped independently; when that would
  leave an example with none of the modalities it had, the one with the
  largest uniform draw (so each equally likely) is kept. Examples with no
  modality present stay that way.

  Args:
    present: bool [B, M], True where example b has modality m.
    rate: drop probability in [0, 1].
    seeds: int [B], one per example (e.g. the pipeline's `seed` field), so
      the draw depends on the example, not on where it sits in the batch.

  Returns:
    bool [B, M], a subset of `present` with at least one True in every row
    that had one.
  """
  if present.ndim != 2 or seeds.shape != present.shape[:1]:
    raise ValueError(f'present must be [B, M] and seeds [B]; got '
                     f'{present.shape} and {seeds.shape}.')
  num = present.shape[1]
  draws = jax.vmap(
      lambda s: jax.random.uniform(jax.random.key(s), (num,)))(seeds)
  kept = present & (draws >= rate)
  # The fallback keeps one modality: argmax of the draws over present ones.
  best = jnp.argmax(jnp.where(present, draws, -1.0), axis=1)
  fallback = jax.nn.one_hot(best, num, dtype=bool) & present
  lost_all = ~jnp.any(kept, axis=1, keepdims=True)
  return jnp.where(lost_all, fallback, kept)
