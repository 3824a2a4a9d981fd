"""The benchmarks run end to end in a tiny smoke mode, so they do not rot.
No timing is asserted: only that every figure is produced and sane."""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
  run = subprocess.run([sys.executable, f'benchmarks/{script}', *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run.stdout


def test_train_step_benchmark_smoke(tmp_path):
  out = tmp_path / 'step.json'
  _run('train_step.py', '--model', 'tiny', '--steps', '2', '--warmup', '0',
       '--json', str(out))
  with open(out) as f:
    result = json.load(f)
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


def test_fast_path_benchmark_smoke(tmp_path):
  out = tmp_path / 'fast.json'
  stdout = _run('fast_path.py', '--model', 'tiny', '--steps', '1', '--warmup',
                '0', '--only', 'bf16,cache_cold,cache_warm',
                '--json', str(out))
  with open(out) as f:
    results = json.load(f)
  assert [r['variant'] for r in results] == ['bf16', 'cache_cold',
                                             'cache_warm']
  for r in results:
    assert 'error' not in r, r
    assert math.isfinite(r['step_s_median']) and r['step_s_median'] > 0
  assert results[0]['dtype'] == 'bfloat16'
  assert '| cache_warm |' in stdout
