"""Logical axis rules: from the names on parameters to mesh axes.

Parameters carry logical axis names (`multimodal.models.partitioning`);
activations are constrained with `partitioning.constrain(x, names)`. A rule
set maps each logical name to a mesh axis (or a tuple of axes, or None for
replicated). The rules live in config, so changing the parallelism layout
touches no model code:

  config.sharding.rules = 'fsdp'                          # a preset
  config.sharding.overrides = (('mlp', 'tensor'), ...)    # changes to it

Presets (mesh axes: data, fsdp, tensor, and stage when pipelining; see
multimodal/mesh.py). In every preset, the 'layers' axis of stacked blocks
(scan_layers) goes on `stage`, which a mesh has only when it pipelines: each
pipeline stage holds its depth / stages layers (multimodal/models/pipeline_parallel.py).
  data_parallel  every parameter replicated; the batch is split over data and
                 fsdp (so fsdp acts as a second data axis).
  fsdp           ZeRO-3: every parameter (and so its gradient and optimizer
                 state) is split over `fsdp` along its model-width (embed)
                 dimension; the batch over data x fsdp. XLA all-gathers a
                 layer's weights just before use.
  fsdp_tensor    fsdp plus Megatron-style tensor parallelism: MLP hidden
                 units, attention heads and vocabulary rows split over
                 `tensor`, with activations constrained to match.

A dimension whose size does not divide over its mesh axes is left replicated
(e.g. a 10-way projection on a 4-way axis), and a mesh axis shards at most one
dimension of an array; both are reported by `describe`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

Rules = tuple[tuple[str, Any], ...]

# Activation names (constrained in model code) and parameter names.
_BATCH = ('act_batch', ('data', 'fsdp'))
_STAGE = ('layers', 'stage')
PRESETS: dict[str, Rules] = {
    'data_parallel': (_BATCH, _STAGE),
    'fsdp': (_BATCH, _STAGE, ('embed', 'fsdp')),
    'fsdp_tensor': (
        _BATCH, _STAGE, ('embed', 'fsdp'), ('mlp', 'tensor'),
        ('heads', 'tensor'), ('vocab', 'tensor'), ('act_mlp', 'tensor'),
        ('act_heads', 'tensor')),
}


def get_rules(preset: str, overrides: Iterable[Sequence[Any]] = ()) -> Rules:
  """A preset's rules, with (logical name, mesh axes) `overrides` replacing
  or adding entries (mesh axes: an axis name, a tuple of them, or None)."""
  if preset not in PRESETS:
    raise ValueError(f'Unknown sharding rules preset {preset!r}; use one of '
                     f'{sorted(PRESETS)} (config.sharding.rules), and '
                     'config.sharding.overrides for changes to it.')
  table = dict(PRESETS[preset])
  for rule in overrides:
    if len(rule) != 2:
      raise ValueError(f'A sharding rule is (logical_name, mesh_axes); got '
                       f'{rule!r}.')
    name, axes = rule
    table[str(name)] = tuple(axes) if isinstance(axes, list) else axes
  return tuple(table.items())


def _as_tuple(axes) -> tuple[str, ...]:
  if axes is None:
    return ()
  return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int],
                    rules: Rules, mesh_shape: Mapping[str, int]) -> P:
  """PartitionSpec for an array of `shape` whose dims have logical `names`.

  Unknown names and names mapped to None stay replicated; mesh axes the mesh
  lacks (or of size 1) are dropped; a dim that does not divide over its axes
  stays replicated, as does a dim whose axes an earlier dim already uses.
  """
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name, size in zip(names, shape):
    axes = tuple(a for a in _as_tuple(table.get(name) if name else None)
                 if mesh_shape.get(a, 1) > 1)
    if (not axes or used & set(axes)
        or size % math.prod(mesh_shape[a] for a in axes)):
      spec.append(None)
      continue
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else axes)
  return P(*spec)


def _logical_names(variable) -> tuple[str | None, ...]:
  names = variable.get_metadata().get('out_sharding')
  return tuple(names) if names else (None,) * len(variable.shape)


def param_shardings(abstract_params: nnx.State, mesh, rules: Rules) -> dict:
  """NamedShardings, as a pure dict like `nnx.to_pure_dict(params)`.

  Args:
    abstract_params: `nnx.state(model, nnx.Param)` of an `nnx.eval_shape`d
      model (Variables carrying their logical names as metadata).
  """
  specs = jax.tree.map(
      lambda v: NamedSharding(mesh, logical_to_spec(
          _logical_names(v), v.shape, rules, dict(mesh.shape))),
      abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(specs)


def state_shardings(abstract_state: Any, params_shardings: dict,
                    mesh) -> Any:
  """Shardings for the whole train state {params, opt_state, step}.

  Optimizer leaves that mirror a parameter (Adam's mu and nu, ...) are found
  by the parameter's path at the end of theirs and take its sharding;
  everything else (step counters, scalars) is replicated.
  """
  by_path = {}
  for path, sharding in jax.tree_util.tree_flatten_with_path(
      params_shardings)[0]:
    by_path[tuple(path)] = sharding
  shapes = {tuple(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(
      abstract_state['params'])[0]}
  replicated = NamedSharding(mesh, P())

  def pick(path, leaf):
    path = tuple(path)
    for start in range(len(path)):
      suffix = path[start:]
      if suffix in by_path and shapes[suffix] == leaf.shape:
        return by_path[suffix]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_state)


def describe(shardings: Any, abstract: Any) -> str:
  """One line: how many bytes of the state each device holds vs in total."""
  total = per_device = 0
  for s, x in zip(jax.tree.leaves(shardings), jax.tree.leaves(abstract)):
    nbytes = x.size * x.dtype.itemsize
    total += nbytes
    per_device += nbytes // math.prod(
        s.mesh.shape[a] for a in jax.tree.leaves(tuple(s.spec)) if a)
  return (f'train state {total / 2**20:.1f} MiB, {per_device / 2**20:.1f} MiB '
          'per device')
