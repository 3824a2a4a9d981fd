"""The one place that builds device meshes.

A mesh config names its axis sizes, e.g. ``dict(data=-1, fsdp=1, tensor=1)``;
one size may be -1 to take whatever devices remain. Axis types are set to
Auto explicitly (GSPMD propagation), because `jax.make_mesh` now defaults to
Explicit axes, which would require sharding annotations on every op.
"""
from __future__ import annotations

import math

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

AXES = ('data', 'fsdp', 'tensor')
# Batch dimension of inputs is split over both data-parallel style axes.
BATCH_AXES = ('data', 'fsdp')


def axis_sizes(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Resolves the -1 entry; raises a clear error when sizes do not fit."""
  cfg = dict(mesh_cfg)
  unknown = set(cfg) - set(AXES)
  if unknown:
    raise ValueError(f'Unknown mesh axes {sorted(unknown)}; use {AXES}.')
  sizes = [int(cfg.get(a, 1)) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'Only one mesh axis may be -1, got {cfg}.')
  if -1 in sizes:
    rest = math.prod(s for s in sizes if s != -1)
    if num_devices % rest:
      raise ValueError(
          f'Mesh {cfg} cannot fill {num_devices} devices: the fixed axes '
          f'multiply to {rest}, which does not divide {num_devices}.')
    sizes[sizes.index(-1)] = num_devices // rest
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f'Mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices but '
        f'JAX sees {num_devices}. Make the sizes multiply to {num_devices}, '
        'or set one axis to -1.')
  return tuple(sizes)


def build_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else devices
  sizes = axis_sizes(mesh_cfg, len(devices))
  return jax.make_mesh(sizes, AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh) -> None:
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if global_batch % shards or global_batch % jax.process_count():
    raise ValueError(
        f'Global batch {global_batch} does not divide over the {shards} batch '
        f'shards (mesh {dict(mesh.shape)}) and {jax.process_count()} '
        f'processes. Use a multiple of {math.lcm(shards, jax.process_count())}.')
