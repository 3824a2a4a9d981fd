r"""float32 vs INT8 exports: size on disk, memory, latency, accuracy.

  python benchmarks/quantize.py --exports exports/contrastive_digits \
      [--exports exports/vqa ...] [--int8_root /tmp/int8] \
      [--batch 64] [--repeats 10] [--data_dir data] [--json OUT]

For each float export, its INT8 version (`python -m multimodal.quantize`,
by default of every Linear / LinearGeneral kernel; --include / --exclude as
there) is read from INT8_ROOT/<export name> or written there first. Each of the two is then
measured in a fresh child process, one after the other (so one's memory
never counts in the other's):

  disk      bytes of params/ (orbax) and of model.safetensors
  weights   bytes of the arrays the built model holds (int8 values + scales
            + float rest for INT8)
  xla       the compiled evaluation function's memory analysis: argument
            bytes (the weights as the function receives them + the batch)
            and temporary bytes (buffers XLA allocates while it runs, e.g.
            dequantized weights it does not fuse into the matmul)
  rss       the child's resident set size (VmRSS of /proc/self/status)
            after loading the export and building the model, and its peak
            (VmHWM) after compiling and running the timed batches; before
            any evaluation. Host memory: on a CPU-only machine the "device"
            arrays live there too, beside JAX, XLA and the input pipeline.
  load      load_pretrained + build_model, seconds
  latency   median of --repeats calls of the task's own jitted evaluation
            function (multimodal.tasks: the embeddings of every field for a
            contrastive export; encoding + greedy decoding for captioning
            and VQA) on one test batch of --batch records, after one warm-up
            call (compilation, reported apart); with --rounds N the two
            children alternate N times and each keeps its best median
  metrics   multimodal.evaluate on the experiment's test split

Prints one table row per export and weights, and the headline metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

# Metrics shown in the table (all are in --json).
HEADLINE = ('zeroshot/image', 'zeroshot/audio', 'zeroshot/image~audio',
            'caption/image/exact_match', 'caption/audio/exact_match',
            'vqa/full/all', 'vqa/masked_audio/all', 'vqa/masked_image/all')


def _vm(field: str) -> int:
  """A /proc/self/status memory field, bytes."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) * 1024
  raise RuntimeError(f'{field} not in /proc/self/status')


def measure(path: str, batch_size: int, repeats: int,
            data_dir: str | None, accuracy: bool) -> dict:
  """The child's measurements of one export (see the module doc)."""
  # pylint: disable=g-import-not-at-top
  import jax
  from flax import nnx
  import numpy as np
  from multimodal import evaluate
  from multimodal import pretrained
  from multimodal import quantize
  from multimodal import registry
  from multimodal.data import pipeline

  rss_start = _vm('VmRSS')
  t = time.perf_counter()
  export = pretrained.load_pretrained(path)
  model = export.build_model()
  jax.block_until_ready(nnx.state(model))
  load_s = time.perf_counter() - t
  rss_loaded = _vm('VmRSS')
  weights = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model)))
  config = export.config
  if data_dir:
    config.dataset.data_dir = data_dir
  registry.import_modules(config.get('imports', ()))
  task = registry.get('task', config.task)(config)
  it, _, _ = pipeline.make_iterator(config, config.eval_split, train=False,
                                    fields=task.eval_fields,
                                    batch_size=batch_size)
  batch = next(iter(it))
  memory = task.outputs_fn.lower(model, batch).compile().memory_analysis()
  t = time.perf_counter()
  jax.block_until_ready(task.outputs_fn(model, batch))
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(task.outputs_fn(model, batch))
    times.append(time.perf_counter() - t)
  out = {
      'path': path, 'int8': export.quantization is not None,
      'disk_params': quantize.dir_bytes(os.path.join(path, 'params')),
      'disk_safetensors': quantize.dir_bytes(
          os.path.join(path, 'model.safetensors')),
      'weights_bytes': weights,
      'xla_argument_bytes': memory.argument_size_in_bytes,
      'xla_temp_bytes': memory.temp_size_in_bytes,
      'rss_start': rss_start, 'rss_loaded': rss_loaded,
      'rss_peak': _vm('VmHWM'), 'load_s': load_s,
      'first_call_s': compile_s, 'latency_s': statistics.median(times),
      'batch': int(len(next(iter(batch.values())))),
  }
  if accuracy:
    out['metrics'] = evaluate.evaluate_pretrained(path, config)
  return out


def _child(path, args, accuracy: bool) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), '--child', path,
         '--batch', str(args.batch), '--repeats', str(args.repeats)]
  if args.data_dir:
    cmd += ['--data_dir', args.data_dir]
  if not accuracy:
    cmd.append('--no_accuracy')
  run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if run.returncode:
    raise RuntimeError(f'{path}: {run.stderr[-3000:]}')
  return json.loads(run.stdout.strip().splitlines()[-1])


def _int8_of(path: str, args) -> str:
  from multimodal import quantize  # pylint: disable=g-import-not-at-top
  out = os.path.join(args.int8_root, os.path.basename(os.path.normpath(path)))
  if not os.path.exists(out):
    os.makedirs(args.int8_root, exist_ok=True)
    quantize.quantize_export(path, out, include=args.include or ('.*',),
                             exclude=args.exclude or ())
  return out


def _table(rows) -> str:
  mb = lambda b: f'{b / 1e6:.2f}'
  lines = ['| export | weights | params/ MB | safetensors MB | weight arrays '
           'MB | XLA args / temp MB | RSS loaded / peak MB | load s | '
           'batch latency ms | metrics (test) |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in rows:
    metrics = r.get('metrics', {})
    shown = ', '.join(f'{k} {100 * metrics["test/" + k]:.1f}%'
                      for k in HEADLINE if 'test/' + k in metrics)
    lines.append(
        f'| {os.path.basename(os.path.normpath(r["source"]))} | '
        f'{"int8" if r["int8"] else "float32"} | {mb(r["disk_params"])} | '
        f'{mb(r["disk_safetensors"])} | {mb(r["weights_bytes"])} | '
        f'{mb(r["xla_argument_bytes"])} / {mb(r["xla_temp_bytes"])} | '
        f'{r["rss_loaded"] / 1e6:.0f} / {r["rss_peak"] / 1e6:.0f} | '
        f'{r["load_s"]:.1f} | '
        f'{1e3 * r["latency_s"]:.0f} (batch {r["batch"]}) | {shown} |')
  return '\n'.join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--exports', action='append', default=[],
                 help='A float export (repeatable).')
  p.add_argument('--int8_root', default='/tmp/multimodal_int8',
                 help='Where the INT8 exports are read or written.')
  p.add_argument('--include', action='append', default=[],
                 help='--include of the quantization (repeatable).')
  p.add_argument('--exclude', action='append', default=[],
                 help='--exclude of the quantization (repeatable).')
  p.add_argument('--rounds', type=int, default=1,
                 help='Measure float and int8 alternately this many times '
                 '(the best latency is kept; metrics in the first round).')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--repeats', type=int, default=10)
  p.add_argument('--data_dir', default=None,
                 help='Overrides the exports\' recorded dataset.data_dir.')
  p.add_argument('--no_accuracy', action='store_true',
                 help='Skip the test-split evaluation.')
  p.add_argument('--json', default=None, help='Write every figure here.')
  p.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(measure(args.child, args.batch, args.repeats,
                             args.data_dir, not args.no_accuracy)))
    return
  if not args.exports:
    p.error('give at least one --exports PATH')
  rows = []
  for path in args.exports:
    pair = [None, None]
    # float, int8, float, int8, ...: a machine whose load changes affects
    # both alike; the latency kept is each one's best round.
    for r in range(args.rounds):
      for i, which in enumerate((path, _int8_of(path, args))):
        got = _child(which, args, accuracy=r == 0 and not args.no_accuracy)
        print(f'measured {which} (round {r + 1}): '
              f'{1e3 * got["latency_s"]:.0f} ms', file=sys.stderr, flush=True)
        if pair[i] is None:
          pair[i] = dict(got, source=path, latency_rounds_s=[])
        pair[i]['latency_rounds_s'].append(got['latency_s'])
    for row in pair:
      row['latency_s'] = min(row['latency_rounds_s'])
    rows += pair
  print(_table(rows))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  main()
