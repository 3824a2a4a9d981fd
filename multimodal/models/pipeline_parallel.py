"""Pipeline parallelism: stacked layers split into stages over a mesh axis.

When the mesh in context (`jax.set_mesh`) has a `stage` axis of size S > 1,
an Encoder (a tower's) or a TextDecoder (in training) with
`scan_layers=True` runs its stacked blocks as a GPipe pipeline instead of
one `nnx.scan` (`run`): the blocks' parameters, whose
leading 'layers' axis the sharding rules put on `stage`, hold depth / S
consecutive layers per stage; the batch is cut into M microbatches
(config.pipeline.microbatches, `microbatches` below) that flow through the
stages, one stage further per iteration, for M + S - 1 iterations:

  iteration t:  stage s applies its layers to microbatch t - s (when
                0 <= t - s < M; otherwise it computes on a placeholder,
                which is the bubble), then passes the result to stage s + 1
                with `jax.lax.ppermute`.

Each device is busy M of the M + S - 1 iterations, so the bubble fraction
(idle time) is (S - 1) / (M + S - 1): more microbatches, smaller bubble,
but smaller matmuls. It is written with `jax.shard_map` manual over the
stage axis only: the data, fsdp and tensor axes stay automatic, so the
stages compose with the usual sharding rules (within a stage, a
microbatch is still split over data x fsdp). Gradients come from JAX's
autodiff through the scan, `ppermute` and `psum` (the backward pass runs
the schedule in reverse).

The last stage's outputs reach every stage by a `psum` (the rest of the
model, outside the stacks, runs on every stage). Stacks with dropout RNGs
are not pipelined (an error says so). Outside a stage mesh (one device,
serving, an export) the same parameters run as one `nnx.scan`: the layout
is unchanged.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from multimodal.models.partitioning import constrain

AXIS = 'stage'

_local = threading.local()


@contextlib.contextmanager
def microbatches(count: int):
  """Within this context, pipelined stacks cut their batch into `count`
  microbatches (config.pipeline.microbatches; the trainer enters it)."""
  if count < 1:
    raise ValueError(f'config.pipeline.microbatches must be >= 1, got {count}.')
  old = getattr(_local, 'count', None)
  _local.count = int(count)
  try:
    yield
  finally:
    _local.count = old


def num_stages() -> int:
  """Size of the `stage` axis of the mesh in context (1 without one)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or AXIS not in mesh.axis_names:
    return 1
  types = dict(zip(mesh.axis_names, mesh.axis_types))
  if types[AXIS] == jax.sharding.AxisType.Manual:
    return 1  # already inside a stage's shard_map
  return mesh.shape[AXIS]


def num_microbatches(batch: int, stages: int) -> int:
  """The configured count (default: the number of stages) when it divides
  `batch`; otherwise the largest divisor of `batch` below it (e.g. an
  evaluator encoding 20 prompts with 8 configured microbatches uses 5)."""
  count = getattr(_local, 'count', None) or stages
  return max(d for d in range(1, min(count, batch) + 1) if batch % d == 0)


def bubble_fraction(stages: int, count: int) -> float:
  """Share of a GPipe schedule's iterations a device spends idle."""
  return (stages - 1) / (count + stages - 1)


def _split(x: jax.Array, count: int) -> jax.Array:
  """[B, ...] -> [count, B / count, ...] taking rows count apart, so that a
  batch split over data x fsdp splits every microbatch the same way."""
  b = x.shape[0]
  x = x.reshape((b // count, count) + x.shape[1:])
  return jnp.swapaxes(x, 0, 1)


def _merge(x: jax.Array) -> jax.Array:
  """Inverse of _split: [count, B / count, ...] -> [B, ...]."""
  x = jnp.swapaxes(x, 0, 1)
  return x.reshape((-1,) + x.shape[2:])


def _per_example(a, batch: int) -> bool:
  return a is not None and a.ndim > 0 and batch > 1 and a.shape[0] == batch


def run(apply: Callable, blocks: nnx.Module, x: jax.Array,
        *extras: jax.Array | None) -> jax.Array:
  """`x` through the stacked `blocks` as a GPipe pipeline over `stage`.

  Args:
    apply: (x, block, *extras) -> x for one block (the scan body).
    blocks: a module whose state is stacked along a leading axis of size
      depth (make_blocks with scan_layers), depth divisible by the stages.
    x: [B, ...] activations, e.g. [B, L, D].
    *extras: what every block also takes (an attention mask, a decoder's
      memory): None, or arrays that are cut into microbatches when their
      leading dim is B and given whole to every microbatch otherwise.

  Returns:
    [B, ...] as `nnx.scan` of `apply` over the blocks would give.
  """
  stages = num_stages()
  if jax.tree.leaves(nnx.state(blocks, nnx.Not(nnx.Param))):
    raise ValueError('A pipelined stack (config.mesh.stage > 1) holds only '
                     'parameters; this one has other state (dropout RNGs): '
                     'set dropout=0 in the parts with scan_layers=True, or '
                     'use stage=1.')
  graphdef, state = nnx.split(blocks)
  depth = jax.tree.leaves(state)[0].shape[0]
  if depth % stages:
    raise ValueError(f'A stack of {depth} layers does not split into '
                     f'{stages} pipeline stages (config.mesh.stage); use a '
                     f'depth that is a multiple of {stages}.')
  b = x.shape[0]
  count = num_microbatches(b, stages)
  names = (None, 'act_batch') + (None,) * (x.ndim - 1)
  xs = constrain(_split(x, count), names[:x.ndim + 1])  # [M, B / M, ...]
  split = tuple(_per_example(e, b) for e in extras)
  extras = tuple(_split(e, count) if s else e for e, s in zip(extras, split))

  def stage_layers(h, local_state, args):
    # A plain lax.scan over this stage's layers, each merged from its slice
    # of the state (an nnx.scan here would see Variables of an outer trace).
    def layer(h, layer_state):
      return apply(h, nnx.merge(graphdef, layer_state), *args), None
    return jax.lax.scan(layer, h, local_state)[0]

  def body(xs, local_state, extras):
    stage = jax.lax.axis_index(AXIS)
    shift = [(i, i + 1) for i in range(stages - 1)]

    def step(received, t):
      mb = jnp.clip(t - stage, 0, count - 1)  # this stage's microbatch
      h = jnp.where(stage == 0, xs[jnp.clip(t, 0, count - 1)], received)
      args = tuple(e[mb] if s else e for e, s in zip(extras, split))
      out = stage_layers(h, local_state, args)
      return jax.lax.ppermute(out, AXIS, shift), out

    start = jax.lax.pcast(jnp.zeros_like(xs[0]), AXIS, to='varying')
    _, outs = jax.lax.scan(step, start, jnp.arange(count + stages - 1))
    # The last stage's outputs from iteration S - 1 on are microbatches
    # 0..M-1; every device gets them (psum of one non-zero term).
    outs = jnp.where(stage == stages - 1, outs[stages - 1:], 0)
    return jax.lax.psum(outs, AXIS)

  state_specs = jax.tree.map(lambda _: P(AXIS), state)
  out = jax.shard_map(
      body, in_specs=(P(), state_specs, P()), out_specs=P(),
      axis_names={AXIS})(xs, state, extras)
  return _merge(out)
