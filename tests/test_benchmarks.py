"""The benchmarks run end to end in a tiny smoke mode, so they do not rot.
No timing is asserted: only that every figure is produced and sane."""
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args, env=None):
  run = subprocess.run([sys.executable, f'benchmarks/{script}', *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=None if env is None else {**os.environ, **env})
  assert run.returncode == 0, run.stderr[-3000:]
  return run.stdout


def test_train_step_benchmark_smoke(tmp_path):
  out = tmp_path / 'step.json'
  # Two CPU devices (data parallel): they share the host's cores, whose
  # matmul peak is measured once, so MFU is not divided by the device count.
  # The state created eagerly, then placed on both devices.
  _run('train_step.py', '--model', 'tiny', '--steps', '2', '--warmup', '0',
       '--set', 'init_mode=eager', '--json', str(out),
       env={'JAX_NUM_CPU_DEVICES': '2'})
  with open(out) as f:
    result = json.load(f)
  assert result['device'].startswith('2 x '), result['device']
  assert result['init_mode'] == 'eager'
  assert result['mfu'] == pytest.approx(result['achieved_flops_per_s'] /
                                        result['peak_flops_per_s'])
  # The peak: the median of matmuls timed before each step and after.
  assert 'median of 3 between the steps' in result['peak_source']
  assert (result['peak_flops_min'] <= result['peak_flops_per_s']
          <= result['peak_flops_max'])
  for key in ('step_s_median', 'examples_per_s', 'model_flops_per_step',
              'xla_flops_per_step', 'achieved_flops_per_s',
              'peak_flops_per_s', 'mfu', 'init_s', 'compile_s',
              'time_to_first_step_s', 'loss'):
    assert math.isfinite(result[key]) and result[key] > 0, (key, result)
  # The analytic count leaves out the loss and optimizer: XLA's is a bit
  # larger, never far off.
  ratio = result['model_flops_per_step'] / result['xla_flops_per_step']
  assert 0.6 < ratio <= 1.05, ratio


def test_source_throughput_benchmark_smoke(tmp_path):
  stdout = _run('source_throughput.py', '--num_records', '40', '--repeats',
                '1', '--workdir', str(tmp_path))
  for name in ('arrayrecord', 'jsonl', 'csv', 'webdataset', 'coco'):
    assert name in stdout


def test_input_pipeline_benchmark_smoke(digits_data_dir):
  stdout = _run('input_pipeline.py', '--smoke', '--data_dir',
                digits_data_dir)
  assert 'digits' in stdout and 'image_text' in stdout


def test_pipeline_benchmark_smoke(tmp_path):
  out = tmp_path / 'pipeline.json'
  stdout = _run('pipeline_parallel.py', '--stages', '2', '--depth', '2', '--width',
                '16', '--batch', '4', '--microbatches', '2', '--steps', '1',
                '--json', str(out))
  with open(out) as f:
    (row,) = json.load(f)
  assert row['stages'] == 2 and row['bubble'] == 1 / 3  # (2-1)/(2+2-1)
  assert math.isfinite(row['step_s']) and row['step_s'] > 0
  assert math.isfinite(row['loss']) and row['compile_s'] > 0
  # The stacked layers are split over the stages; the rest is on both.
  assert row['param_mib_per_device'] < row['param_mib_total']
  assert '| 2 |' in stdout


def test_fast_path_benchmark_smoke(tmp_path):
  out = tmp_path / 'fast.json'
  stdout = _run('fast_path.py', '--model', 'tiny', '--steps', '1', '--warmup',
                '0', '--only', 'bf16,bf16_jax_core,cache_cold,cache_warm',
                '--json', str(out))
  with open(out) as f:
    results = json.load(f)
  assert [r['variant'] for r in results] == ['bf16', 'bf16_jax_core',
                                             'cache_cold', 'cache_warm']
  for r in results:
    assert 'error' not in r, r
    assert math.isfinite(r['step_s_median']) and r['step_s_median'] > 0
  assert results[0]['dtype'] == 'bfloat16'
  # The before of the attention core and GELU: jax's, in every stack.
  before = results[1]['overrides'].split()
  assert results[1]['jax_core'] and results[1]['dtype'] == 'bfloat16'
  stacks = [a for a in before if a.endswith('.attention_impl=xla')]
  assert len(stacks) == 2 and len(before) == 4, before
  assert not results[0]['overrides']
  assert '| cache_warm |' in stdout


def test_fast_path_scan_cache_warm_combines_both():
  from benchmarks import fast_path  # pylint: disable=g-import-not-at-top
  args, env = fast_path.variant_command('scan_cache_warm', 'tiny', '/c')
  assert not env
  assert args[-2:] == ['--compilation_cache', '/c_scan']
  scanned = [a for a in args if a.endswith('.scan_layers=True')]
  assert scanned and len(scanned) == len(fast_path._stacks('tiny'))


def test_serve_load_benchmark_smoke(tiny_exports, digits_data_dir, tmp_path):
  """Two offered loads against the tiny contrastive export's server, with
  batching on and off: every row is there, requests were answered, and the
  servers exited 0 on SIGTERM."""
  out = tmp_path / 'serve.json'
  stdout = _run('serve_load.py', '--smoke', '--pretrained',
                tiny_exports['contrastive'], '--data_dir', digits_data_dir,
                '--logdir', str(tmp_path / 'logs'), '--json', str(out))
  assert '| p50 ms | p95 ms | p99 ms | mean batch |' in stdout, stdout
  with open(out) as f:
    result = json.load(f)
  rows = result['rows']
  assert [(r['batching'], r['offered_rps']) for r in rows] == [
      ('on', 4.0), ('on', 16.0), ('off', 4.0), ('off', 16.0)], rows
  for r in rows:
    assert r['endpoint'] == 'embed_image' and r['ok'] > 0, r
    assert r['p50_ms'] <= r['p95_ms'] <= r['p99_ms'], r
    assert r['achieved_rps'] > 0 and r['mean_batch_requests'] >= 1, r
  assert all(r['mean_batch_requests'] == 1 for r in rows
             if r['batching'] == 'off'), rows
  assert [s['exit_status'] for s in result['server_exits']] == [0, 0]
  assert not result['skipped'], result['skipped']


def test_peers_benchmark_smoke(tmp_path):
  """Ours alone (CI has no peer): the table, the JSON and the parameter
  check against the analytic count of the matched model."""
  from benchmarks import peers  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'peers.json'
  stdout = _run('peers.py', '--model', 'tiny', '--frameworks', 'multimodal',
                '--rounds', '1', '--steps', '2', '--warmup', '0',
                '--json', str(out))
  assert 'step median' in stdout and 'first vs ours' in stdout, stdout
  assert 'multimodal  float32' in stdout, stdout
  with open(out) as f:
    result = json.load(f)
  (row,) = result['rows']
  assert row['framework'] == 'multimodal' and row['status'] == 'ok', row
  for key in ('step_s_median', 'step_s_min', 'examples_per_s',
              'time_to_first_step_s', 'loss'):
    assert math.isfinite(row[key]) and row[key] > 0, (key, row)
  assert row['step_s_min'] <= row['step_s_median']
  assert row['step_vs_ours'] == 1.0
  expected = peers.spec_param_count(peers.SPECS['tiny'])
  assert row['params'] == expected == result['params']['analytic']
  assert result['params']['matched'], result['params']
  assert [r['framework'] for r in result['runs']] == ['multimodal']


def test_peers_missing_frameworks_are_skipped(tmp_path):
  """A peer that is not there is reported with how to install it, and the
  run goes on (here: nothing runs, and that is not a crash)."""
  out = tmp_path / 'peers.json'
  stdout = _run('peers.py', '--model', 'tiny', '--frameworks',
                'open_clip,big_vision', '--rounds', '2',
                '--torch_python', str(tmp_path / 'no_such_python'),
                '--big_vision_dir', str(tmp_path), '--json', str(out))
  assert 'no framework ran' in stdout, stdout
  with open(out) as f:
    result = json.load(f)
  assert set(result['skipped']) == {'open_clip', 'big_vision'}
  assert 'bench-peers' in result['skipped']['open_clip']
  assert 'BIG_VISION_DIR' in result['skipped']['big_vision']
  assert len(result['runs']) == 2  # skipped after the first round


def _python_with(module):
  """The first interpreter that imports `module`: $PEERS_TORCH_PYTHON,
  .venv-bench (make bench-peers), this one."""
  candidates = [os.environ.get('PEERS_TORCH_PYTHON'),
                os.path.join(ROOT, '.venv-bench', 'bin', 'python'),
                sys.executable]
  for python in filter(None, candidates):
    if not os.path.exists(python):
      continue
    probe = subprocess.run([python, '-c', f'import {module}'],
                           capture_output=True, timeout=300)
    if probe.returncode == 0:
      return python
  return None


def _run_child(python, framework, tmp_path, *extra):
  from benchmarks import peers  # pylint: disable=g-import-not-at-top
  out = tmp_path / f'{framework}.json'
  run = subprocess.run(
      [python, 'benchmarks/peers.py', '--child', framework, '--model',
       'tiny', '--steps', '2', '--warmup', '0', '--out', str(out), *extra],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  with open(out) as f:
    result = json.load(f)
  assert result['status'] == 'ok', result
  for key in ('step_s_median', 'step_s_min', 'time_to_first_step_s'):
    assert math.isfinite(result[key]) and result[key] > 0, (key, result)
  assert math.isfinite(result['loss']), result
  return result, peers.spec_param_count(peers.SPECS['tiny'])


def test_peers_open_clip_child(tmp_path):
  python = _python_with('open_clip')
  if python is None:
    pytest.skip('open_clip is not importable (make bench-peers, or '
                'PEERS_TORCH_PYTHON=an interpreter that has it)')
  result, expected = _run_child(python, 'open_clip', tmp_path)
  # timm's SigLIP ViT + open_clip's text tower: the same parameters as ours.
  assert result['params'] == expected, result
  assert result['precision'] == 'float32'
  assert result['detail']['model_class'] == 'CustomTextCLIP'


def test_peers_big_vision_child(tmp_path):
  directory = os.environ.get('BIG_VISION_DIR', '')
  if not os.path.isdir(os.path.join(directory, 'big_vision')):
    pytest.skip('no big_vision checkout (BIG_VISION_DIR)')
  result, expected = _run_child(sys.executable, 'big_vision', tmp_path,
                                '--big_vision_dir', directory)
  # Its two projection heads have biases (2 x embed_dim): ours have none.
  assert result['params'] == expected + 2 * 32, result


def test_step_ab_benchmark_smoke(tmp_path):
  """Variants of one config in one process: a config change on every stack
  and an XLA compiler option, timed round-robin."""
  out = tmp_path / 'ab.json'
  stdout = _run('step_ab.py', '--model', 'tiny', '--rounds', '2',
                '--set', 'init_mode=eager',
                '--variant', 'base',
                '--variant', 'remat', 'stacks.remat=full',
                '--variant', 'no_fast_math',
                'xla:xla_cpu_enable_fast_math=False', '--json', str(out))
  with open(out) as f:
    result = json.load(f)
  base, remat, options = result['variants']
  assert [v['name'] for v in result['variants']] == ['base', 'remat',
                                                     'no_fast_math']
  assert result['common'] == 'init_mode=eager'
  assert base['paired_ratio_median'] == 1.0
  # Every stack of the tiny model got the override; only the options' variant
  # compiled with an option.
  assert remat['overrides'].split() == [
      'model.towers.image.remat=full', 'model.towers.text.remat=full']
  assert options['compiler_options'] == {'xla_cpu_enable_fast_math': False}
  assert not base['compiler_options'] and not base['overrides']
  for v in result['variants']:
    assert len(v['step_s']) == 2 and min(v['step_s']) > 0
    assert v['step_s_median'] == pytest.approx(
        sorted(v['step_s'])[0] / 2 + sorted(v['step_s'])[1] / 2)
    assert math.isfinite(v['loss']) and v['compile_s'] > 0
  # Recomputing a block changes no value: the same loss as without remat.
  assert remat['loss'] == pytest.approx(base['loss'], rel=1e-5)
  assert '| no_fast_math |' in stdout and 'vs base (paired)' in stdout


def test_step_ab_names_a_malformed_variant():
  from benchmarks import step_ab  # pylint: disable=g-import-not-at-top
  stacks = ['model.towers.image', 'model.towers.text']
  name, overrides, options = step_ab.parse_variant(
      ['scan', 'stacks.scan_layers=True', 'optimizer.mu_dtype=bfloat16',
       'xla:xla_cpu_experimental_ynn_fusion_type='], stacks)
  assert name == 'scan' and options == {
      'xla_cpu_experimental_ynn_fusion_type': ''}
  assert overrides == ['model.towers.image.scan_layers=True',
                       'model.towers.text.scan_layers=True',
                       'optimizer.mu_dtype=bfloat16']
  with pytest.raises(ValueError, match='not KEY=VALUE'):
    step_ab.parse_variant(['scan', 'stacks.scan_layers'], stacks)
  with pytest.raises(ValueError, match="first word is the variant's name"):
    step_ab.parse_variant(['stacks.scan_layers=True'], stacks)
  with pytest.raises(ValueError, match='names must differ'):
    step_ab.run('tiny', 4, 1, 'float32', [('a', [], {}), ('a', [], {})], [])


def test_peers_pair_child(tmp_path):
  """multimodal and big_vision in one process, steps alternating."""
  directory = os.environ.get('BIG_VISION_DIR', '')
  if not os.path.isdir(os.path.join(directory, 'big_vision')):
    pytest.skip('no big_vision checkout (BIG_VISION_DIR)')
  out = tmp_path / 'pair.json'
  stdout = _run('peers.py', '--pair', '--model', 'tiny', '--rounds', '1',
                '--steps', '3', '--warmup', '0', '--big_vision_dir',
                directory, '--json', str(out))
  with open(out) as f:
    (run,) = json.load(f)['runs']
  assert run['status'] == 'ok', run
  for name in ('multimodal', 'big_vision'):
    assert len(run['step_s'][name]) == 3 and min(run['step_s'][name]) > 0
    assert math.isfinite(run['loss'][name])
  paired = sorted(a / b for a, b in zip(run['step_s']['multimodal'],
                                        run['step_s']['big_vision']))
  assert run['paired_ratio_median'] == pytest.approx(paired[1])
  assert run['params']['big_vision'] == run['params']['multimodal'] + 2 * 32
  assert '| float32 | 1 |' in stdout, stdout


def test_peers_pair_without_big_vision_says_how_to_install(tmp_path):
  out = tmp_path / 'pair.json'
  stdout = _run('peers.py', '--pair', '--model', 'tiny', '--rounds', '1',
                '--big_vision_dir', str(tmp_path), '--json', str(out))
  with open(out) as f:
    (run,) = json.load(f)['runs']
  assert run['status'] == 'not installed', run
  assert 'BIG_VISION_DIR' in stdout, stdout
