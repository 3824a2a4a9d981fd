"""Logical axis names for parameters, and the metadata that carries them.

Every parameter is created with ``out_sharding`` metadata holding *logical*
axis names (below). A sharding layer maps them to mesh axes with
``nnx.logical_axis_rules`` and reads them back with
``nnx.get_partition_spec(nnx.state(model))``. Model code never names a mesh
axis.

Logical names in use (rules must cover all of them; ``None`` entries are
never sharded):
  embed  model width (residual stream)      mlp    MLP hidden units
  heads  attention heads                    kv     per-head feature dim
  vocab  token embedding rows               patch  flattened patch pixels
  pos    position-embedding rows            norm   LayerNorm scale/bias
  proj   contrastive projection output dim
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
from flax import nnx
from flax.core import spmd as core_spmd

LOGICAL_AXES = ('embed', 'mlp', 'heads', 'kv', 'vocab', 'patch', 'pos',
                'norm', 'proj')


def _eager_sharding() -> bool:
  # Flax NNX 0.12 shards new Variables eagerly, which needs a mesh in context
  # and fails on logical names the mesh does not know. Shard eagerly only when
  # both a mesh and logical axis rules are in context, so that models build
  # as plain single-device arrays in the common case (and under a bare
  # `jax.set_mesh`, where the trainer shards the state itself).
  return (nnx.using_eager_sharding()
          and not jax.sharding.get_abstract_mesh().empty
          and bool(core_spmd.get_logical_axis_rules()))


def axes(*names: str | None) -> dict[str, Any]:
  """Variable metadata naming the logical axes of a parameter.

  Pass as ``kernel_metadata=axes('embed', 'mlp')`` to Flax layers, or as
  ``nnx.Param(value, **axes(...))``.
  """
  return {'out_sharding': tuple(names), 'eager_sharding': _eager_sharding()}


def param(rngs: nnx.Rngs, init, shape: Sequence[int], names: Sequence[Any],
          dtype) -> nnx.Param:
  """A new ``nnx.Param`` of `shape`/`dtype` from `init`, with logical names."""
  if len(names) != len(shape):
    raise ValueError(f'{len(shape)}-d parameter needs {len(shape)} axis '
                     f'names, got {tuple(names)}.')
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), **axes(*names))
