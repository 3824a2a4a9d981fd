r"""Step time of variants of one training config, in one process, alternating.

  python benchmarks/step_ab.py --model siglip_b32 --batch 32 --rounds 5 \
      --variant unrolled \
      --variant scan stacks.scan_layers=True \
      --variant no_ynn xla:xla_cpu_experimental_ynn_fusion_type=

A variant is a name and its changes, each one of:
  KEY=VALUE          a config override, as train_step.py's --set
                     (e.g. model.towers.image.remat=full, optimizer.mu_dtype=bfloat16)
  stacks.KEY=VALUE   the same override on every transformer stack of the
                     model (train_step.stack_paths), e.g. stacks.scan_layers=True
  xla:OPTION=VALUE   an XLA compiler option for this variant's compile only
                     (the DebugOptions field names of XLA_FLAGS, without --)
--set KEY=VALUE applies to every variant (e.g. init_mode=eager, quicker to
start).

Every variant's step is compiled and its state created first; then the
steps run round-robin, one of each variant per round after an untimed
round, so that the load of a shared machine drifts over all variants alike.
Variants run in separate processes one after the other (fast_path.py,
which also times the start) saw the same code 6% apart on the 2-vCPU
development machine. Prints per variant the median and min step time, the
median over rounds of its step time / the first variant's in the same round
(the paired ratio), examples/s, compile time, temporary memory and the last
loss; --json writes them with every timing.

Measured 2026-12-03 on the 2-vCPU AMD EPYC development machine: see
benchmarks/README.md, "Variants in one process".
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax

from benchmarks import train_step
from multimodal import runtime

XLA_PREFIX = 'xla:'
STACKS_PREFIX = 'stacks.'


def parse_variant(tokens: list[str], stacks: list[str]
                  ) -> tuple[str, list[str], dict]:
  """[NAME, change...] -> (name, config overrides, XLA compiler options)."""
  name, *changes = tokens
  if '=' in name:
    raise ValueError(f'--variant {" ".join(tokens)}: the first word is the '
                     f"variant's name, e.g. --variant scan {name}")
  overrides, options = [], {}
  for change in changes:
    key, sep, text = change.partition('=')
    if not sep or not key:
      raise ValueError(f'--variant {name}: {change!r} is not KEY=VALUE; give '
                       'a config override (model.towers.image.remat=full), '
                       'stacks.KEY=VALUE or xla:OPTION=VALUE')
    if key.startswith(XLA_PREFIX):
      options[key[len(XLA_PREFIX):]] = train_step.literal(text)
    elif key.startswith(STACKS_PREFIX):
      overrides += [f'{path}.{key[len(STACKS_PREFIX):]}={text}'
                    for path in stacks]
    else:
      overrides.append(change)
  return name, overrides, options


def run(model: str, batch: int, rounds: int, dtype: str, variants: list,
        common: list[str]) -> dict:
  """Times `rounds` steps of each variant, round-robin; see the module doc."""
  if rounds < 1:
    raise ValueError(f'--rounds must be at least 1, got {rounds}.')
  names = [name for name, _, _ in variants]
  if len(set(names)) != len(names):
    raise ValueError(f'Variant names must differ, got {names}.')
  runs = {name: train_step.compiled_step(model, batch, dtype,
                                         common + overrides, options)
          for name, overrides, options in variants}
  times, metrics = train_step.time_round_robin(
      {name: v['step'] for name, v in runs.items()}, rounds)
  first = names[0]
  result = {'model': model, 'batch': batch, 'dtype': dtype, 'rounds': rounds,
            'device': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
            'allocator': runtime.allocator(), 'common': ' '.join(common),
            'variants': []}
  for name, overrides, options in variants:
    t = times[name]
    result['variants'].append({
        'name': name, 'overrides': ' '.join(overrides),
        'compiler_options': options,
        'step_s_median': statistics.median(t), 'step_s_min': min(t),
        'paired_ratio_median': train_step.paired_ratio(t, times[first]),
        'examples_per_s': batch / statistics.median(t),
        'compile_s': runs[name]['compile_s'],
        'temp_memory_mib': runs[name]['temp_memory_mib'],
        'loss': float(metrics[name]['loss']), 'step_s': t})
  return result


def table(result: dict) -> str:
  first = result['variants'][0]['name']
  lines = [f"{result['model']}, batch {result['batch']}, {result['dtype']}, "
           f"{result['device']}, {result['allocator']}, "
           f"{result['rounds']} rounds",
           f'| variant | step median | step min | vs {first} (paired) | '
           'examples/s | compile | temp memory | loss |',
           '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for v in result['variants']:
    lines.append(
        f"| {v['name']} | {v['step_s_median']:.3f} s | {v['step_s_min']:.3f}"
        f" s | {v['paired_ratio_median']:.3f}x | {v['examples_per_s']:.2f} | "
        f"{v['compile_s']:.1f} s | {v['temp_memory_mib']:,.0f} MiB | "
        f"{v['loss']:.4f} |")
  return '\n'.join(lines)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='tiny')
  parser.add_argument('--batch', type=int, default=None,
                      help='default 32 (16 for tiny)')
  parser.add_argument('--rounds', type=int, default=5,
                      help='timed steps of each variant')
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16'))
  parser.add_argument('--variant', nargs='+', action='append', default=[],
                      metavar='NAME [CHANGE ...]',
                      help='a variant (repeatable; the first is the one the '
                      'others are compared with)')
  parser.add_argument('--set', action='append', default=[],
                      metavar='KEY=VALUE', help='override for every variant')
  parser.add_argument('--json', default=None, help='write the result here')
  args = parser.parse_args(argv)
  if len(args.variant) < 2:
    parser.error('give at least two --variant, e.g. --variant unrolled '
                 '--variant scan stacks.scan_layers=True')
  stacks = train_step.stack_paths(train_step.model_config(args.model,
                                                          args.dtype))
  try:
    variants = [parse_variant(tokens, stacks) for tokens in args.variant]
  except ValueError as e:
    parser.error(str(e))
  batch = args.batch or (16 if args.model == 'tiny' else 32)
  result = run(args.model, batch, args.rounds, args.dtype, variants, args.set)
  print(table(result))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == '__main__':
  main()
