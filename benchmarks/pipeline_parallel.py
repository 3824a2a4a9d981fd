r"""Pipeline parallelism: step time, bubble and per-device parameter memory
by number of stages.

  python benchmarks/pipeline_parallel.py [--stages 1,2,4] [--depth 8] [--width 128]
      [--batch 32] [--microbatches 8] [--steps 3] [--json out.json]

The digits trimodal contrastive model (projects/digits/configs/
contrastive.py) with all three towers' layers stacked (scan_layers) at
--depth and --width, trained by the trainer's own step
(`train.make_trainer`) on a synthetic batch, on a mesh of S fake CPU
devices all on the `stage` axis (config.mesh.stage=S), for each S of
--stages. Per S it prints:
  step        median wall time of --steps steps after one warm-up step
  bubble      (S - 1) / (M + S - 1), the idle share of the GPipe schedule
  compile     seconds to compile the step
  params/dev  bytes of parameters each device holds (the largest), and
              the whole model's
  loss        the first step's loss (the same for every S)

The fake devices share this host's cores, so the step time is the sum of
all stages' work, bubble iterations included: it shows the overhead of the
schedule, not the speed-up of S real accelerators (which is about
S (1 - bubble) for the stacked layers). (XLA's cost analysis is no
measure here: it counts a loop's body once, whatever its trip count.)
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--stages', default='1,2,4')
  parser.add_argument('--depth', type=int, default=8)
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--microbatches', type=int, default=8)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--json', default='')
  return parser.parse_args(argv)


ARGS = _parse_args()
STAGES = [int(s) for s in ARGS.stages.split(',')]

# Before anything touches a JAX backend: CPU only, with enough fake devices.
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
jax.config.update('jax_platforms', 'cpu')
jax.config.update('jax_num_cpu_devices', max(STAGES))

from absl import flags

from benchmarks.train_step import synthetic_batch
from multimodal import mesh as mesh_lib
from multimodal import train
from multimodal.models import pipeline_parallel as pipeline
from projects.digits import data as digits_data
from projects.digits.configs import contrastive
# pylint: enable=g-import-not-at-top,wrong-import-position

MIB = 1 << 20


def make_config(stages: int):
  c = contrastive.get_config()
  for tower in c.model.towers.values():
    tower.update(width=ARGS.width, depth=ARGS.depth, scan_layers=True)
  c.model.embed_dim = ARGS.width
  c.input.tokenizer = digits_data.TOKENIZER_PATH
  c.batch_size = ARGS.batch
  c.mesh = dict(stage=stages, data=1, fsdp=1, tensor=1)
  c.pipeline.microbatches = ARGS.microbatches
  return c


def param_bytes(params) -> tuple[int, int]:
  """(most bytes on one device, bytes of the whole model)."""
  per_device = {}
  for x in jax.tree.leaves(params):
    for shard in x.addressable_shards:
      per_device[shard.device] = (per_device.get(shard.device, 0)
                                  + shard.data.nbytes)
  return (max(per_device.values()),
          sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)))


def run(stages: int) -> dict:
  config = make_config(stages)
  mesh = mesh_lib.build_mesh(config.mesh, jax.devices()[:stages])
  task, ts, step_fn = train.make_trainer(config, mesh)
  with jax.set_mesh(mesh):
    state = train.init_state(ts)
    batch = train.shard_batch(synthetic_batch(config, task, ARGS.batch),
                              mesh_lib.batch_sharding(mesh))
    t = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    per_device, total = param_bytes(state['params'])
    state, metrics = compiled(state, batch)  # warm-up
    loss = float(metrics['loss'])
    times = []
    for _ in range(ARGS.steps):
      t = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t)
  return {
      'stages': stages, 'microbatches': ARGS.microbatches,
      'step_s': statistics.median(times), 'compile_s': compile_s,
      'bubble': (pipeline.bubble_fraction(stages, ARGS.microbatches)
                 if stages > 1 else 0.0),
      'param_mib_per_device': per_device / MIB, 'param_mib_total': total / MIB,
      'loss': loss,
  }


def _row(r: dict) -> str:
  return (f'| {r["stages"]} | {r["step_s"] * 1e3:.0f} ms | '
          f'{r["bubble"]:.1%} | {r["compile_s"]:.1f} s | '
          f'{r["param_mib_per_device"]:.2f} MiB | '
          f'{r["param_mib_total"]:.2f} MiB | {r["loss"]:.4f} |')


def main() -> list[dict]:
  flags.FLAGS.mark_as_parsed()
  print(f'depth {ARGS.depth}, width {ARGS.width}, batch {ARGS.batch}, '
        f'{ARGS.microbatches} microbatches; {jax.devices()[0].platform} '
        'fake devices, one per stage')
  print('| stages | step (median) | bubble | compile | params/device '
        '| params total | loss |')
  print('| --- | --- | --- | --- | --- | --- | --- |', flush=True)
  rows = []
  for s in STAGES:  # each row as soon as it is measured
    rows.append(run(s))
    print(_row(rows[-1]), flush=True)
  if ARGS.json:
    pathlib.Path(ARGS.json).write_text(json.dumps(rows, indent=2))
  return rows


if __name__ == '__main__':
  main()
