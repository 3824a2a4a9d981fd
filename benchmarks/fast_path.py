r"""Before/after figures of each fast-path switch, from one run.

  python benchmarks/fast_path.py --model siglip_b32 --batch 32 --steps 3
  python benchmarks/fast_path.py --model tiny --steps 2 --only baseline,bf16

Runs benchmarks/train_step.py once per variant, each in its own process
(XLA flags and the allocator are fixed when a process starts), one after
the other, and prints step time, examples/s, MFU, compile time, time to the
first step and temporary memory per variant, with the ratio to the
baseline. Variants:

  baseline     float32, tcmalloc preloaded when installed, no XLA flags
  glibc        the same with glibc malloc (nothing preloaded)
  onednn       XLA_FLAGS=--xla_cpu_use_onednn=true
  xnnpack      XLA_FLAGS=--xla_cpu_use_xnnpack=true
  bf16         --config.model.dtype=bfloat16 (float32 parameters, optimizer
               state, loss and softmax)
  bf16_plain_dots  the same, the dense layers multiplying with
               lax.dot_general itself (bfloat16 results) instead of
               multimodal/models/matmul.py's float32 accumulation: the
               before of that change
  jax_core     float32, attention by jax.nn.dot_product_attention and GELU
               by jax.nn.gelu, both differentiated by autodiff: the before
               of models/attention_core.py and models/activations.py
  bf16_jax_core  the same in bfloat16
  mu_bf16      float32, AdamW's first moment in bfloat16
               (config.optimizer.mu_dtype): less optimizer traffic
  bf16_mu_bf16  the same with bfloat16 compute
  sequential   the state created, then the step lowered and compiled: the
               before of train.compile_during (the step compiled in a
               thread while the state is created)
  stock_rngs   models get their keys from nnx.Rngs, whose draws search the
               whole trace: the before of multimodal/models/rng.py
  eager_init   config.init_mode='eager': the state created op by op, no
               init program to compile
  scan         every tower's (and the decoder's) blocks stacked and run by
               nnx.scan: compile time that does not grow with depth
  remat        remat=full in every tower (and the decoder): memory for time
  cache_cold   the persistent compilation cache, empty (a fresh directory)
  cache_warm   the same directory again: what a rerun or resume pays
  scan_cache_warm  scan and a warm cache together: the quickest start of
               a rerun (its cache is filled by an untimed run first)
  scan_eager_init  scan and eager init, cold cache: the quickest first start
  cache_warm and scan_cache_warm fill their cache with one untimed run
  when nothing before them in the same invocation did.

CPU-only variants (glibc, onednn, xnnpack) are left out on accelerators.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# pylint: disable=g-import-not-at-top,wrong-import-position
from multimodal import runtime

CPU_ONLY = ('glibc', 'onednn', 'xnnpack')
VARIANTS = ('baseline', 'glibc', 'onednn', 'xnnpack', 'bf16',
            'bf16_plain_dots', 'jax_core', 'bf16_jax_core', 'mu_bf16',
            'bf16_mu_bf16', 'sequential', 'stock_rngs', 'eager_init', 'scan', 'remat',
            'cache_cold', 'cache_warm', 'scan_cache_warm', 'scan_eager_init')


def _stacks(model: str) -> list[str]:
  """Config paths of the model's transformer stacks."""
  # Imported lazily: the parent process never starts JAX.
  from benchmarks import train_step  # pylint: disable=g-import-not-at-top
  return train_step.stack_paths(train_step.model_config(model, 'float32'))


def variant_command(name: str, model: str, cache: str):
  """(extra train_step.py arguments, environment changes) of a variant."""
  args, env = [], {}
  if name == 'glibc':
    env['LD_PRELOAD'] = ''
  elif name == 'onednn':
    env['XLA_FLAGS'] = '--xla_cpu_use_onednn=true'
  elif name == 'xnnpack':
    env['XLA_FLAGS'] = '--xla_cpu_use_xnnpack=true'
  elif name == 'bf16':
    args += ['--dtype', 'bfloat16']
  elif name == 'bf16_plain_dots':
    args += ['--dtype', 'bfloat16', '--plain_dots']
  elif name == 'jax_core':
    args += ['--jax_core']
  elif name == 'bf16_jax_core':
    args += ['--dtype', 'bfloat16', '--jax_core']
  elif name in ('mu_bf16', 'bf16_mu_bf16'):
    args += ['--set', 'optimizer.mu_dtype=bfloat16']
    if name == 'bf16_mu_bf16':
      args += ['--dtype', 'bfloat16']
  elif name == 'sequential':
    args += ['--sequential']
  elif name == 'stock_rngs':
    args += ['--stock_rngs']
  elif name == 'eager_init':
    args += ['--set', 'init_mode=eager']
  elif name in ('scan', 'remat', 'scan_cache_warm', 'scan_eager_init'):
    key, value = (('remat', 'full') if name == 'remat'
                  else ('scan_layers', 'True'))
    for path in _stacks(model):
      args += ['--set', f'{path}.{key}={value}']
    if name == 'scan_cache_warm':
      args += ['--compilation_cache', cache + '_scan']
    if name == 'scan_eager_init':
      args += ['--set', 'init_mode=eager']
  elif name in ('cache_cold', 'cache_warm'):
    args += ['--compilation_cache', cache]
  elif name != 'baseline':
    raise ValueError(f'Unknown variant {name!r}; known: {VARIANTS}')
  return args, env


def run_variant(name, args, env_changes, common, out_dir):
  out = os.path.join(out_dir, f'{name}.json')
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  library = runtime.tcmalloc_library()
  if library and 'tcmalloc' not in env.get('LD_PRELOAD', ''):
    env['LD_PRELOAD'] = library
  env.update(env_changes)
  cmd = [sys.executable, os.path.join(HERE, 'train_step.py'), *common, *args,
         '--json', out]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                        check=False)
  if proc.returncode:
    return {'variant': name, 'error': proc.stderr.strip().splitlines()[-1]}
  with open(out) as f:
    return dict(json.load(f), variant=name)


def table(results: list[dict]) -> str:
  base = next((r for r in results if r['variant'] == 'baseline'
               and 'error' not in r), None)
  rows = ['| variant | step (median) | vs baseline | examples/s | MFU | '
          'compile | time to first step | temp memory | allocator |',
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in results:
    if 'error' in r:
      rows.append(f'| {r["variant"]} | failed: {r["error"]} |' + ' |' * 7)
      continue
    ratio = (f'{r["step_s_median"] / base["step_s_median"]:.2f}x'
             if base else '')
    rows.append(
        f'| {r["variant"]} | {r["step_s_median"]:.3g} s | {ratio} | '
        f'{r["examples_per_s"]:.3g} | {100 * r["mfu"]:.0f}% | '
        f'{r["compile_s"]:.1f} s | {r["time_to_first_step_s"]:.1f} s | '
        f'{r["temp_memory_mib"]:.0f} MiB | {r["allocator"]} |')
  return '\n'.join(rows)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='tiny')
  parser.add_argument('--batch', type=int, default=None)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--only', default='',
                      help='comma-separated variants (default: all)')
  parser.add_argument('--platform', default='cpu',
                      help='cpu leaves out nothing; anything else leaves '
                      'out the CPU-only variants')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  names = [n for n in (args.only.split(',') if args.only else VARIANTS) if n]
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    parser.error(f'unknown variant(s) {unknown}; known: {", ".join(VARIANTS)}')
  if args.platform != 'cpu':
    names = [n for n in names if n not in CPU_ONLY]
  common = ['--model', args.model, '--steps', str(args.steps), '--warmup',
            str(args.warmup)]
  if args.batch:
    common += ['--batch', str(args.batch)]
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, 'compilation_cache')
    for name in names:
      extra, env = variant_command(name, args.model, cache)
      if name.endswith('_warm') and not (name == 'cache_warm'
                                         and 'cache_cold' in names[
                                             :names.index(name)]):
        run_variant(name + '_fill', extra, env, common, tmp)
      result = run_variant(name, extra, env, common, tmp)
      results.append(result)
      print(f'{name}: ' + (result.get('error') or
                           f'{result["step_s_median"]:.4g} s/step'),
            flush=True)
  print(table(results))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)
  return results


if __name__ == '__main__':
  main()
