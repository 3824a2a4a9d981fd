"""Logical axis names for parameters, and the metadata that carries them.

Every parameter is created with ``out_sharding`` metadata holding *logical*
axis names (below). A sharding layer maps them to mesh axes with
``nnx.logical_axis_rules`` and reads them back with
``nnx.get_partition_spec(nnx.state(model))``. Model code never names a mesh
axis.

Activations are constrained with ``constrain(x, names)`` using the names
act_batch, act_length, act_embed, act_mlp, act_heads, act_kv (kept apart from
the parameter names so that, e.g., FSDP can split weights along `embed`
without splitting activations along it). It is a no-op unless the trainer has
put a mesh and rules in context (``multimodal.sharding``).

Logical parameter names in use (rules map any subset of them; unmapped names
are never sharded):
  embed  model width (residual stream)      mlp    MLP hidden units
  heads  attention heads                    kv     per-head feature dim
  vocab  token embedding rows               patch  flattened patch pixels
  pos    position-embedding rows            norm   LayerNorm scale/bias
  proj   contrastive projection output dim  latent learned latent-token rows
  media  width of another tower's tokens where a fusion module or decoder
         projects them into its own width (kept apart from 'embed' so a
         [media, embed] kernel never names one mesh axis twice)
  layers the stacked-blocks axis of an Encoder with scan_layers=True
  window the taps of a convolution kernel (a conv stem's kernel size)
  stem   the channels between the two convolutions of a conv stem (kept apart
         from 'embed' so the second conv's [window, stem, embed] kernel never
         names one mesh axis twice)
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
from flax import nnx
from flax.core import spmd as core_spmd

LOGICAL_AXES = ('embed', 'mlp', 'heads', 'kv', 'vocab', 'patch', 'pos',
                'norm', 'proj', 'latent', 'media', 'layers', 'window', 'stem')


def _eager_sharding() -> bool:
  # Flax NNX 0.12 shards new Variables eagerly, which needs a mesh in context
  # and fails on logical names the mesh does not know. Shard eagerly only when
  # both a mesh and logical axis rules are in context, so that models build
  # as plain single-device arrays in the common case (and under a bare
  # `jax.set_mesh`, where the trainer shards the state itself).
  return (nnx.using_eager_sharding()
          and not jax.sharding.get_abstract_mesh().empty
          and bool(core_spmd.get_logical_axis_rules()))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Asks XLA to lay out activation `x` as the logical `names` map to.

  Identity outside a mesh + logical-axis-rules context (e.g. plain
  single-device use, or tests of the module alone).
  """
  rules = core_spmd.get_logical_axis_rules()
  mesh = jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return x
  from multimodal import sharding  # pylint: disable=g-import-not-at-top
  spec = sharding.logical_to_spec(names, x.shape, rules, dict(mesh.shape))
  return jax.lax.with_sharding_constraint(x, spec)


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
