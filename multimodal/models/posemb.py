"""Position embeddings: fixed 1-D / 2-D sin-cos tables and a learned table."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from multimodal.models.partitioning import param


def _sincos(pos: np.ndarray, dim: int, temperature: float) -> np.ndarray:
  """[N] positions -> [N, dim] as [sin(pos * w), cos(pos * w)], dim even."""
  omega = 1.0 / temperature ** (np.arange(dim // 2) / (dim // 2))
  angles = pos[:, None] * omega[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_1d(length: int, width: int, *, temperature: float = 10_000.0,
              dtype=jnp.float32) -> jax.Array:
  """Transformer sin-cos table: [length, width] in `dtype` (width even)."""
  if width % 2:
    raise ValueError(f'sincos_1d needs an even width, got {width}.')
  table = _sincos(np.arange(length, dtype=np.float64), width, temperature)
  return jnp.asarray(table, dtype)


def sincos_2d(height: int, grid_width: int, width: int, *,
              temperature: float = 10_000.0, dtype=jnp.float32) -> jax.Array:
  """2-D sin-cos table for a row-major [height, grid_width] token grid.

  Half of the `width` features encode the row, half the column (MoCo v3 /
  big_vision style), so width must be divisible by 4.

  Returns:
    [height * grid_width, width] in `dtype`.
  """
  if width % 4:
    raise ValueError(f'sincos_2d needs width divisible by 4, got {width}.')
  rows, cols = np.meshgrid(np.arange(height, dtype=np.float64),
                           np.arange(grid_width, dtype=np.float64),
                           indexing='ij')
  table = np.concatenate([_sincos(cols.ravel(), width // 2, temperature),
                          _sincos(rows.ravel(), width // 2, temperature)],
                         axis=1)
  return jnp.asarray(table, dtype)


class LearnedPosEmb(nnx.Module):
  """A learned [num_positions, width] table named ('pos', 'embed')."""

  def __init__(self, num_positions: int, width: int, *,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.num_positions = num_positions
    self.embedding = param(rngs, nnx.initializers.normal(0.02),
                           (num_positions, width), ('pos', 'embed'),
                           param_dtype)

  def __call__(self, length: int | None = None) -> jax.Array:
    """The first `length` rows (all by default): [length, width]."""
    length = self.num_positions if length is None else length
    if length > self.num_positions:
      raise ValueError(f'Sequence of {length} positions exceeds the '
                       f'{self.num_positions} learned position embeddings.')
    return self.embedding[:length]
