"""Per-device memory of the ring SigLIP loss vs a gather-everything baseline.

  python benchmarks/sharded_loss_memory.py [--per_device_batch 1024]
      [--embed 256] [--devices 1,2,4,8] [--iters 3]

For a fixed per-device batch n (global batch N = n * D), compiles
value_and_grad (w.r.t. a, b, scale, bias) of
  ring:  multimodal.sharded_losses.sigmoid_loss_sharded (ppermute ring), and
  naive: all-gather a and b on every device, full [N, N] logits there,
and prints the compiled memory analysis per device (temp + arguments +
outputs) and wall time per call. Runs on fake CPU devices (it sets them up
itself): memory numbers are what XLA plans per device, the timings only show
relative cost on this host's CPU cores, shared by all fake devices.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

MIB = 1 << 20


def _parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--per_device_batch', type=int, default=1024)
  parser.add_argument('--embed', type=int, default=256)
  parser.add_argument('--devices', default='1,2,4,8',
                      help='comma-separated device counts (data axis size)')
  parser.add_argument('--iters', type=int, default=3,
                      help='timed calls after one warmup call; 0: no timing')
  return parser.parse_args()


ARGS = _parse_args()
DEVICE_COUNTS = [int(d) for d in ARGS.devices.split(',')]

# Before anything touches a JAX backend: CPU only, with enough fake devices.
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
jax.config.update('jax_platforms', 'cpu')
jax.config.update('jax_num_cpu_devices', max(DEVICE_COUNTS))

import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from multimodal import losses
from multimodal import mesh as mesh_lib
from multimodal import sharded_losses
# pylint: enable=g-import-not-at-top,wrong-import-position


def naive_sigmoid_loss(a, b, scale, bias, *, mesh, batch_axes):
  """Baseline: every device gathers a, b: [N, E] and builds [N, N] logits."""
  num_shards = int(np.prod([mesh.shape[ax] for ax in batch_axes]))

  def local(a, b, s, t):
    a_all = jax.lax.all_gather(a, batch_axes, tiled=True)
    b_all = jax.lax.all_gather(b, batch_axes, tiled=True)
    loss = losses.sigmoid_contrastive_loss(a_all, b_all, s, t)
    # Every device holds the whole loss; averaging the D copies makes the
    # result replicated and keeps the gradients exact.
    return jax.lax.psum(loss, batch_axes) / num_shards

  return jax.shard_map(local, mesh=mesh,
                       in_specs=(P(batch_axes), P(batch_axes), P(), P()),
                       out_specs=P())(a, b, scale, bias)


def _peak_mib(compiled) -> float:
  mem = compiled.memory_analysis()
  return (mem.temp_size_in_bytes + mem.argument_size_in_bytes +
          mem.output_size_in_bytes) / MIB


def _time_per_call(fn, args, iters) -> float:
  jax.block_until_ready(fn(*args))  # warmup (compiled already; first run)
  start = time.perf_counter()
  for _ in range(iters):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / iters


def main():
  n, e = ARGS.per_device_batch, ARGS.embed
  batch_axes = mesh_lib.BATCH_AXES
  rows = []
  for d in DEVICE_COUNTS:
    mesh = mesh_lib.build_mesh(dict(data=d, fsdp=1, tensor=1),
                               jax.devices()[:d])
    rng = np.random.default_rng(d)
    shard = NamedSharding(mesh, P(batch_axes))
    a = jax.device_put(rng.normal(size=(n * d, e)).astype(np.float32), shard)
    b = jax.device_put(rng.normal(size=(n * d, e)).astype(np.float32), shard)
    a = a / jnp.linalg.norm(a, axis=1, keepdims=True)
    b = b / jnp.linalg.norm(b, axis=1, keepdims=True)
    scale, bias = jnp.float32(10.0), jnp.float32(-10.0)
    args = (a, b, scale, bias)
    row = dict(devices=d, global_batch=n * d)
    outs = {}
    for name, loss in (('ring', sharded_losses.sigmoid_loss_sharded),
                       ('naive', naive_sigmoid_loss)):
      fn = jax.jit(jax.value_and_grad(
          lambda a, b, s, t, loss=loss, mesh=mesh: loss(
              a, b, s, t, mesh=mesh, batch_axes=batch_axes),
          argnums=(0, 1, 2, 3)))
      compiled = fn.lower(*args).compile()
      row[f'{name}_mib'] = _peak_mib(compiled)
      row[f'{name}_gathers'] = 'all-gather' in compiled.as_text()
      if ARGS.iters:
        print(f'timing {name} on {d} device(s)...', file=sys.stderr,
              flush=True)
        row[f'{name}_s'] = _time_per_call(compiled, args, ARGS.iters)
        outs[name] = compiled(*args)
    if outs:  # the two must be the same function
      for got, want in zip(jax.tree.leaves(outs['ring']),
                           jax.tree.leaves(outs['naive'])):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want),
                                   rtol=1e-4, atol=1e-4 * np.abs(want).max())
    rows.append(row)

  print(f'\nSigLIP value_and_grad, per-device batch {n}, embed {e}, float32; '
        'peak = temp + args + outputs per device (compiled memory analysis).')
  if ARGS.iters:
    print(f'Wall time: mean of {ARGS.iters} calls after warmup, measured on '
          f'FAKE CPU devices ({max(DEVICE_COUNTS)} sharing this host\'s '
          'cores): relative cost only, not accelerator timings.')
  head = (f'{"devices":>7} {"global N":>8} | {"ring MiB":>9} {"naive MiB":>10}'
          f' | {"ring all-gather":>15} {"naive all-gather":>16}')
  if ARGS.iters:
    head += f' | {"ring s/call":>11} {"naive s/call":>12}'
  print(head)
  print('-' * len(head))
  for r in rows:
    line = (f'{r["devices"]:>7} {r["global_batch"]:>8} | '
            f'{r["ring_mib"]:>9.1f} {r["naive_mib"]:>10.1f} | '
            f'{str(r["ring_gathers"]):>15} {str(r["naive_gathers"]):>16}')
    if ARGS.iters:
      line += f' | {r["ring_s"]:>11.3f} {r["naive_s"]:>12.3f}'
    print(line)


if __name__ == '__main__':
  main()
