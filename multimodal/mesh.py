"""The one place that builds device meshes.

A mesh config names its axis sizes, e.g. ``dict(data=-1, fsdp=1, tensor=1)``;
one size may be -1 to take whatever devices remain. Axis types are set to
Auto explicitly (GSPMD propagation), because `jax.make_mesh` now defaults to
Explicit axes, which would require sharding annotations on every op.

Multi-slice TPU (or several GPU hosts with a slow network between them):
``dcn_data``, ``dcn_fsdp``, ``dcn_tensor`` (default 1) split an axis across
slices (granules: `slice_index` on TPU, processes elsewhere), and the plain
sizes then describe one slice. E.g. 2 slices of v5e-16, data parallel across
slices and FSDP within each: ``dict(data=1, fsdp=-1, tensor=1, dcn_data=2)``
gives mesh {data: 2, fsdp: 16, tensor: 1}, where only the data axis crosses
the data-centre network. Built with `mesh_utils.create_hybrid_device_mesh`.

Pipeline parallelism: ``stage`` (and ``dcn_stage`` across slices) splits the
stacked layers of scan_layers towers and decoders into that many pipeline
stages (multimodal/models/pipeline_parallel.py). The mesh has the axis, outermost,
only when its size is > 1, so that meshes without pipelining keep their
three axes; it never takes -1. E.g. 2 slices, one stage on each:
``dict(data=1, fsdp=-1, tensor=1, dcn_stage=2)``.
"""
from __future__ import annotations

import math

import jax
from jax.experimental import mesh_utils
from jax.sharding import NamedSharding, PartitionSpec as P

AXES = ('data', 'fsdp', 'tensor')
STAGE = 'stage'
ALL_AXES = (STAGE,) + AXES  # the order of the device grid's dimensions
DCN_AXES = tuple(f'dcn_{a}' for a in ALL_AXES)
# Batch dimension of inputs is split over both data-parallel style axes.
BATCH_AXES = ('data', 'fsdp')


def stages(mesh_cfg) -> int:
  """Pipeline stages a mesh config asks for (stage x dcn_stage)."""
  cfg = dict(mesh_cfg)
  return int(cfg.get(STAGE, 1)) * int(cfg.get(f'dcn_{STAGE}', 1))


def mesh_axes(mesh_cfg) -> tuple[str, ...]:
  """The mesh's axis names: AXES, with STAGE first when it pipelines."""
  return ALL_AXES if stages(mesh_cfg) > 1 else AXES


def axis_sizes(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Sizes of mesh_axes(mesh_cfg), the -1 entry resolved; raises a clear
  error when sizes do not fit."""
  cfg = {a: v for a, v in dict(mesh_cfg).items() if a not in DCN_AXES}
  unknown = set(cfg) - set(ALL_AXES)
  if unknown:
    raise ValueError(f'Unknown mesh axes {sorted(unknown)}; use {ALL_AXES} '
                     f'(and {DCN_AXES} across slices).')
  if int(cfg.get(STAGE, 1)) < 1:
    raise ValueError(f'config.mesh.stage={cfg[STAGE]}: give the number of '
                     'pipeline stages (>= 1); it cannot be -1.')
  names = mesh_axes(mesh_cfg)
  sizes = [int(cfg.get(a, 1)) for a in names]
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
        f'Mesh {dict(zip(names, sizes))} needs {math.prod(sizes)} devices but '
        f'JAX sees {num_devices}. Make the sizes multiply to {num_devices}, '
        'or set one axis to -1.')
  return tuple(sizes)


def dcn_sizes(mesh_cfg) -> tuple[int, ...]:
  """Per-axis number of slices an axis of mesh_axes(mesh_cfg) spans (1 =
  within a slice)."""
  given = {a: int(dict(mesh_cfg).get(a, 1)) for a in DCN_AXES}
  if any(s < 1 for s in given.values()):
    raise ValueError(f'dcn_* mesh sizes must be >= 1, got {given}.')
  return tuple(given[f'dcn_{a}'] for a in mesh_axes(mesh_cfg))


def device_grid(mesh_cfg, devices):
  """The devices as a NumPy array of shape (data, fsdp, tensor), or
  (stage, data, fsdp, tensor) with pipeline stages.

  Within a slice, `mesh_utils.create_device_mesh` orders devices so that
  neighbouring mesh positions are neighbours on the interconnect; across
  slices, `create_hybrid_device_mesh` keeps the dcn_* axes outermost.
  """
  dcn = dcn_sizes(mesh_cfg)
  slices = math.prod(dcn)
  if slices == 1:
    return mesh_utils.create_device_mesh(
        axis_sizes(mesh_cfg, len(devices)), devices)
  if len(devices) % slices:
    raise ValueError(f'dcn sizes {dict(zip(DCN_AXES, dcn))} ask for {slices} '
                     f'slices, which does not divide {len(devices)} devices.')
  ici = axis_sizes(mesh_cfg, len(devices) // slices)
  # TPU devices know their slice; elsewhere each process is one granule.
  by_process = not hasattr(devices[0], 'slice_index')
  granules = len({d.process_index if by_process else d.slice_index
                  for d in devices})
  if granules != slices:
    kind = 'processes' if by_process else 'TPU slices'
    raise ValueError(f'dcn sizes {dict(zip(DCN_AXES, dcn))} need {slices} '
                     f'slices but the devices come from {granules} {kind}.')
  return mesh_utils.create_hybrid_device_mesh(
      ici, dcn, devices, process_is_granule=by_process)


def build_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  """A Mesh with axes (data, fsdp, tensor) over `devices` (default: all),
  and `stage` first when the config asks for more than one stage."""
  devices = jax.devices() if devices is None else devices
  names = mesh_axes(mesh_cfg)
  return jax.sharding.Mesh(
      device_grid(mesh_cfg, devices), names,
      axis_types=(jax.sharding.AxisType.Auto,) * len(names))


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
