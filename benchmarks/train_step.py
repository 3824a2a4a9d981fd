r"""Training-step speed of the trainer's own step: step time, examples/s,
model FLOPs, achieved FLOP/s, MFU, memory, init and compile time.

  python benchmarks/train_step.py --model siglip_b32 --batch 32 --steps 5
  python benchmarks/train_step.py --model tiny --steps 2 --json out.json

Models (named sizes, models/sizes.py):
  tiny         mu/8 image tower at 32 px + mu text tower (CI smoke mode)
  siglip_b32   ViT-B/32 at 224 px + text 512 wide, 12 layers, 8 heads,
               vocab 49408, 77 tokens, SigLIP loss (open_clip's ViT-B-32
               shape: the peer comparison of issue 11)
  siglip_b16   ViT-B/16 at 224 px + the same text tower
  caption_b16  ViT-B/16 + a 6-layer 512-wide decoder, captioning loss
  digits       the demo's trimodal model (projects/digits/configs/
               contrastive.py: image, audio and text towers)

The step is `multimodal.train.make_train_step` (AdamW, clipping, the
task's loss) on synthetic batches, compiled ahead of time while the state
is created, as the trainer starts (`train.compile_during`; --sequential:
one after the other), then run --warmup times and timed over
--steps with `block_until_ready` (median and min). FLOPs: an analytic count
(3 x the forward matmul and attention FLOPs of every transformer layer,
patch embedding, projections and logits) cross-checked against XLA's
`cost_analysis()` of the compiled step. MFU = model FLOPs / step time /
peak; the peak is a table of published dense peaks for accelerators
(bf16 unless --dtype float32 on GPU) and, on CPU, a large matmul at the
step's dtype measured between the timed steps (before each and after the
last; the median), so that step and peak see the same load on a shared
machine. Prints a table; --json writes it.

On CPU, glibc malloc costs several seconds per large step in page faults;
preload tcmalloc for figures worth comparing (apt-get install
libtcmalloc-minimal4; LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4).
"""
from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import image_text
from projects.digits import data as digits_data
from projects.digits.configs import contrastive as digits_contrastive
from multimodal import checkpoint as ckpt_lib
from multimodal import mesh as mesh_lib
from multimodal import registry
from multimodal import runtime
from multimodal import train
from multimodal.models import matmul
from multimodal.models import rng

# Dense peak FLOP/s per chip (bf16, and float32 where it differs), from the
# vendors' data sheets (no sparsity).
PEAKS = {
    'TPU v4': {'bfloat16': 275e12}, 'TPU v5 lite': {'bfloat16': 197e12},
    'TPU v5e': {'bfloat16': 197e12}, 'TPU v5p': {'bfloat16': 459e12},
    'TPU v6 lite': {'bfloat16': 918e12}, 'TPU v6e': {'bfloat16': 918e12},
    'NVIDIA A100': {'bfloat16': 312e12, 'float32': 19.5e12},
    'NVIDIA H100': {'bfloat16': 989e12, 'float32': 67e12},
    'NVIDIA H200': {'bfloat16': 989e12, 'float32': 67e12},
}

TEXT_B512 = dict(width=512, depth=12, num_heads=8, mlp_dim=2048)


def model_config(name: str, dtype: str):
  """The experiment config (experiments/image_text.py) of a named model."""
  if name == 'tiny':
    c = image_text.get_config('siglip,tiny')
  elif name == 'digits':
    c = digits_contrastive.get_config()
  elif name in ('siglip_b32', 'siglip_b16'):
    c = image_text.get_config('siglip')
    c.model.towers.image.variant = 'B/32' if name == 'siglip_b32' else 'B/16'
    text = c.model.towers.text
    text.variant = None
    text.update(TEXT_B512, vocab_size=49408, max_len=77)
    c.input.max_text_len = 77
  elif name == 'caption_b16':
    c = image_text.get_config('caption')
    dec = c.model.decoder
    dec.variant = None
    dec.update(width=512, depth=6, num_heads=8, mlp_ratio=4,
               vocab_size=32000, max_len=32)
  else:
    raise ValueError(f'Unknown --model {name!r}: tiny, siglip_b32, '
                     'siglip_b16, caption_b16, digits.')
  if dtype != 'float32':  # the model's one mixed-precision switch
    c.model.dtype = dtype
  # Text-generating tasks read their special ids from a tokenizer: any
  # with the framework's ids will do for synthetic batches.
  c.input.tokenizer = digits_data.TOKENIZER_PATH
  return c


def stack_paths(config) -> list[str]:
  """Config paths of the model's transformer stacks (towers, decoder)."""
  paths = [f'model.towers.{name}' for name in config.model.towers]
  if 'decoder' in config.model:
    paths.append('model.decoder')
  return paths


def synthetic_batch(config, task, batch: int) -> dict:
  """Random inputs of the task's training fields, per process."""
  rng = np.random.default_rng(0)
  size, length = config.input.image_size, config.input.max_text_len
  vocabs = [t.vocab_size for t in config.model.towers.values()
            if 'vocab_size' in t]
  if 'decoder' in config.model:
    vocabs.append(config.model.decoder.vocab_size)
  vocab = min(vocabs)  # ids inside every vocabulary; eos 3 ends each text
  out = {}
  for field in task.fields:
    if field == 'image':
      channels = config.input.image_channels
      out[field] = rng.uniform(-1, 1, (batch, size, size, channels)).astype(
          np.float32)
    elif field == 'audio':
      out[field] = rng.uniform(-1, 1, (batch, config.input.num_frames,
                                       config.input.num_mels)).astype(
                                           np.float32)
    elif field.endswith('_refs'):
      out[field] = np.zeros((batch, 1, length), np.int32)
    else:  # a text field: pieces, eos, pads
      text = rng.integers(4, vocab, (batch, length)).astype(np.int32)
      text[:, length // 2] = 3
      text[:, length // 2 + 1:] = 0
      out[field] = text
  return out


def transformer_flops(tokens: int, width: int, depth: int, mlp: int,
                      context: int | None = None) -> float:
  """Forward FLOPs of `depth` pre-LN layers over `tokens` tokens (per
  example): QKV/out projections 8 T D^2, MLP 4 T D M, attention scores and
  values 4 T^2 D (context: keys attended, default tokens)."""
  context = tokens if context is None else context
  return depth * (8 * tokens * width ** 2 + 4 * tokens * width * mlp
                  + 4 * tokens * context * width)


def analytic_flops(config, batch: int) -> float:
  """Model FLOPs of one training step (3 x forward), from the config."""
  from multimodal.models import sizes  # pylint: disable=g-import-not-at-top
  total = 0.0
  for name, tower in config.model.towers.items():
    t = tower.to_dict()
    variant = t.get('variant')
    given = {k: t[k] for k in sizes.SIZE_KEYS + ('mlp_ratio',) if k in t}
    s, patch = sizes.resolve(variant, given, patches='max_len' not in t)
    mlp = s['mlp_dim'] or int(s['width'] * s['mlp_ratio'])
    if name == 'image':
      p = t.get('patch_size') or patch
      n = (t['image_size'] // p) ** 2
      total += 2 * n * (p * p * t.get('channels', 3)) * s['width']  # stem
      total += transformer_flops(n + (t.get('pool') == 'map'), s['width'],
                                 s['depth'], mlp)
    elif 'num_frames' in t:  # audio: patches of the log-mel spectrogram
      ph, pw = t.get('patch_size') or (patch, patch)
      n = (t['num_frames'] // ph) * (t['num_mels'] // pw)
      total += 2 * n * ph * pw * s['width']
      total += transformer_flops(n + (t.get('pool') == 'map'), s['width'],
                                 s['depth'], mlp)
    else:  # text tower
      total += transformer_flops(t['max_len'], s['width'], s['depth'], mlp)
  if 'decoder' in config.model:
    d = config.model.decoder.to_dict()
    s, _ = sizes.resolve(d.get('variant'), {
        k: d[k] for k in sizes.SIZE_KEYS + ('mlp_ratio',) if k in d},
                         patches=False)
    mlp = s['mlp_dim'] or int(s['width'] * s['mlp_ratio'])
    length = config.input.max_text_len
    total += transformer_flops(length, s['width'], s['depth'], mlp)
    total += 2 * length * s['width'] * d['vocab_size']  # logits
  return 3.0 * total * batch


@functools.lru_cache(maxsize=None)
def _square_matmul(dtype: str, n: int):
  """(compiled x @ x with float32 accumulation, an [n, n] `dtype` x)."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  return f, a


def cpu_peak(dtype: str, n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of an n^3 matmul at `dtype` on this CPU (median of repeats).

  Low-precision operands accumulate in float32, as the models' dense layers
  do (multimodal/models/matmul.py): XLA CPU's fastest bfloat16 kernels
  (AMX / AVX512-BF16) are only taken for that form.
  """
  f, a = _square_matmul(dtype, n)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / statistics.median(times)


def peak_flops(dtype: str) -> tuple[float, str]:
  """(data-sheet peak FLOP/s of all the process's accelerators together,
  its source); on CPU `run` measures the peak instead (cpu_peak)."""
  device = jax.devices()[0]
  for name, peaks in PEAKS.items():
    if device.device_kind.startswith(name):
      key = 'float32' if dtype == 'float32' and 'float32' in peaks else (
          'bfloat16')
      return (peaks[key] * jax.device_count(),
              f'{name} {key} data sheet x {jax.device_count()}')
  return float('nan'), f'unknown device {device.device_kind!r}'


def apply_overrides(config, overrides) -> None:
  """--set key=value pairs (like the trainer's --config.key=value); values
  are Python literals where they parse as one, else strings."""
  for item in overrides or ():
    key, sep, text = item.partition('=')
    if not sep:
      raise ValueError(f'--set {item!r}: give key=value, e.g. '
                       'model.towers.image.scan_layers=True')
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    # A new leaf is allowed: a tower's options need not all be listed in
    # its config, and build_model names any the module does not take.
    node[leaf] = literal(text)


def literal(text: str):
  """A Python literal where `text` parses as one, else the string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def bench_config(name: str, batch: int, dtype: str, overrides=()):
  """The named model's config with `overrides`, for a synthetic batch of
  `batch` on every device (mesh data axis -1) and a 1000-step schedule."""
  config = model_config(name, dtype)
  apply_overrides(config, overrides)
  config.batch_size = batch
  config.total_steps = 1000
  config.mesh.data = -1
  return config


def compiled_step(name: str, batch: int, dtype: str, overrides=(),
                  compiler_options: dict | None = None) -> dict:
  """A named model's training step, compiled, with its state and batch.

  For timing steps against each other in one process (step_ab.py, peers.py
  --pair). Returns {'step': a function that runs one step (state donated
  and replaced) and returns its metrics, waited for; 'compile_s';
  'params' (the parameter count); 'temp_memory_mib'}.
  """
  config = bench_config(name, batch, dtype, overrides)
  mesh = mesh_lib.build_mesh(config.mesh)
  task, ts, step_fn = train.make_trainer(config, mesh)
  with jax.set_mesh(mesh):
    batch_arrays = train.shard_batch(synthetic_batch(config, task, batch),
                                     mesh_lib.batch_sharding(mesh))
    lowered = step_fn.lower(ckpt_lib.abstract_like(ts.abstract, ts.shardings),
                            batch_arrays)
    t = time.perf_counter()
    compiled = lowered.compile(compiler_options=compiler_options or None)
    compile_s = time.perf_counter() - t
    held = {'state': jax.block_until_ready(
        train.init_state(ts, config.init_mode))}
  memory = compiled.memory_analysis()

  def step() -> dict:
    with jax.set_mesh(mesh):
      held['state'], metrics = compiled(held['state'], batch_arrays)
      return jax.block_until_ready(metrics)

  return {'step': step, 'compile_s': compile_s,
          'params': sum(x.size for x in jax.tree.leaves(
              held['state']['params'])),
          'temp_memory_mib': (memory.temp_size_in_bytes / 2 ** 20
                              if memory is not None else float('nan'))}


def time_round_robin(steps: dict, rounds: int, untimed: int = 1,
                     rotate: bool = False) -> tuple[dict, dict]:
  """Times step functions against each other in one process.

  `untimed` rounds first, then `rounds` rounds of one call of each, so that
  a machine's load drifts over all of them alike; with `rotate`, which one
  goes first moves by one every round. Returns ({name: [seconds per timed
  call]}, {name: its last call's result}).
  """
  names = list(steps)
  times, outputs = {name: [] for name in names}, {}
  for rnd in range(untimed + rounds):
    shift = rnd % len(names) if rotate else 0
    for name in names[shift:] + names[:shift]:
      t = time.perf_counter()
      outputs[name] = steps[name]()
      if rnd >= untimed:
        times[name].append(time.perf_counter() - t)
  return times, outputs


def paired_ratio(times: list[float], base: list[float]) -> float:
  """The median over rounds of times[i] / base[i] (same-round pairs)."""
  return statistics.median(a / b for a, b in zip(times, base))


def run(name: str, batch: int, steps: int, warmup: int, dtype: str,
        overrides=(), sequential: bool = False) -> dict:
  config = bench_config(name, batch, dtype, overrides)
  t0 = time.perf_counter()
  mesh = mesh_lib.build_mesh(config.mesh)
  task, ts, step_fn = train.make_trainer(config, mesh)
  with jax.set_mesh(mesh):
    t_build = time.perf_counter() - t0
    batch_arrays = train.shard_batch(synthetic_batch(config, task, batch),
                                     mesh_lib.batch_sharding(mesh))

    def make_state():
      return jax.block_until_ready(train.init_state(ts, config.init_mode))

    t = time.perf_counter()
    if sequential:  # the before of train.compile_during
      state = make_state()
      start = {'init_s': time.perf_counter() - t}
      t1 = time.perf_counter()
      lowered = step_fn.lower(state, batch_arrays)
      start['lower_s'] = time.perf_counter() - t1
      t1 = time.perf_counter()
      compiled = lowered.compile()
      start['compile_s'] = time.perf_counter() - t1
    else:  # as the trainer starts
      state, compiled, start = train.compile_during(step_fn, ts, batch_arrays,
                                                    make_state)
    t_ready = time.perf_counter() - t
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # The cost of one device's (SPMD-partitioned) program: times the device
    # count for the whole step.
    xla_flops = float((cost or {}).get('flops', float('nan'))) * (
        jax.device_count())
    memory = compiled.memory_analysis()
    t = time.perf_counter()
    state, metrics = compiled(state, batch_arrays)
    jax.block_until_ready(metrics)
    t_first = time.perf_counter() - t
    for _ in range(warmup):
      state, metrics = compiled(state, batch_arrays)
    jax.block_until_ready(metrics)
    on_cpu = jax.devices()[0].platform == 'cpu'
    times, peaks = [], []
    for _ in range(steps):
      if on_cpu:
        peaks.append(cpu_peak(dtype, repeats=3))
      t = time.perf_counter()
      state, metrics = compiled(state, batch_arrays)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t)
  flops = analytic_flops(config, batch)
  if on_cpu:
    peaks.append(cpu_peak(dtype, repeats=3))
    # Every CPU device of a process shares the host's cores (e.g. fake
    # devices from jax_num_cpu_devices): the matmul is the whole host's.
    peak = statistics.median(peaks)
    peak_source = (f'measured {dtype} 2048^3 matmul, median of '
                   f'{len(peaks)} between the steps')
  else:
    peak, peak_source = peak_flops(dtype)
    peaks = [peak]
  median = statistics.median(times)
  params = sum(x.size for x in jax.tree.leaves(state['params']))
  return {
      'model': name, 'dtype': dtype, 'batch': batch,
      'device': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      'params_m': params / 1e6,
      'step_s_median': median, 'step_s_min': min(times),
      'examples_per_s': batch / median,
      'model_flops_per_step': flops, 'xla_flops_per_step': xla_flops,
      'achieved_flops_per_s': flops / median,
      'peak_flops_per_s': peak, 'peak_source': peak_source,
      'peak_flops_min': min(peaks), 'peak_flops_max': max(peaks),
      'mfu': flops / median / peak,
      'init_mode': config.init_mode, 'sequential': sequential,
      'init_s': t_build + start['init_s'], 'init_trace_s': t_build,
      'lower_s': start['lower_s'], 'compile_s': start['compile_s'],
      'first_step_s': t_first,
      'time_to_first_step_s': t_build + t_ready + t_first,
      'temp_memory_mib': (memory.temp_size_in_bytes / 2 ** 20
                          if memory is not None else float('nan')),
      'loss': float(metrics['loss']),
  }


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='tiny')
  parser.add_argument('--batch', type=int, default=None,
                      help='default 32 (16 for tiny)')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16'))
  parser.add_argument('--set', action='append', default=[],
                      metavar='KEY=VALUE',
                      help='config override, e.g. model.towers.image.remat=full '
                      '(repeatable)')
  parser.add_argument('--plain_dots', action='store_true',
                      help='the dense layers multiply with lax.dot_general '
                      'itself instead of multimodal.models.matmul.dot_general '
                      '(the before of its bfloat16 figures)')
  parser.add_argument('--jax_core', action='store_true',
                      help='attention by jax.nn.dot_product_attention (XLA) '
                      'and GELU by jax.nn.gelu, both left to autodiff, '
                      "instead of models/attention_core.py's and "
                      "models/activations.py's own backward passes (the "
                      'before of those two changes)')
  parser.add_argument('--sequential', action='store_true',
                      help='create the state, then lower and compile the '
                      'step, instead of compiling it during the init as the '
                      'trainer does (the before of train.compile_during)')
  parser.add_argument('--stock_rngs', action='store_true',
                      help="models get their keys from nnx.Rngs instead of "
                      "multimodal.models.rng.Rngs (the before of that change)")
  parser.add_argument('--compilation_cache', default='',
                      help='JAX persistent compilation cache directory (run '
                      'twice: the second run times a warm cache)')
  parser.add_argument('--json', default=None, help='write the result here')
  args = parser.parse_args(argv)
  batch = args.batch or (16 if args.model == 'tiny' else 32)
  runtime.enable_compilation_cache(args.compilation_cache)
  if args.plain_dots:
    # Layers read matmul.dot_general when they are built, after this.
    matmul.dot_general = jax.lax.dot_general
  if args.stock_rngs:
    # Read where each model is built, after this.
    rng.Rngs = nnx.Rngs
  overrides = list(args.set)
  if args.jax_core:
    registry.register('activation', 'jax_gelu')(
        lambda x: jax.nn.gelu(x, approximate=False))
    for path in stack_paths(model_config(args.model, args.dtype)):
      overrides += [f'{path}.attention_impl=xla', f'{path}.activation=jax_gelu']
  result = run(args.model, batch, args.steps, args.warmup, args.dtype,
               overrides, args.sequential)
  result['allocator'] = runtime.allocator()
  result['xla_flags'] = os.environ.get('XLA_FLAGS', '')
  result['overrides'] = ' '.join(overrides)
  result['plain_dots'] = args.plain_dots
  result['jax_core'] = args.jax_core
  result['stock_rngs'] = args.stock_rngs
  width = max(len(k) for k in result)
  for key, value in result.items():
    shown = f'{value:,.4g}' if isinstance(value, float) else value
    print(f'{key:<{width}}  {shown}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == '__main__':
  main()
