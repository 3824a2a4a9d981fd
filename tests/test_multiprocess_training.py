"""The real training entry point as 2 processes x 2 devices equals 1 x 4.

Runs `python -m multimodal.train` (tiny variant) under launch/local.py on
127.0.0.1, and the same command as one process with 4 fake devices; the
per-step training losses and the final evaluation must agree. This covers
`jax.distributed` start-up from the launcher's environment, per-process data
loading whose union is the single-process batch, global batch assembly,
checkpointing from both processes, and evaluation gathered across processes.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, '-m', 'multimodal.train',
         '--config=projects/digits/configs/contrastive.py:tiny']


def _run(cmd, env, workdir):
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  rows = [json.loads(line) for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()]
  losses = {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}
  final = json.loads((workdir / 'final_test.json').read_text())
  return losses, final, proc.stdout


def test_two_processes_match_one(tmp_path, digits_data_dir):
  base = dict(os.environ, JAX_PLATFORMS='cpu')
  base.pop('XLA_FLAGS', None)
  data = f'--config.dataset.data_dir={digits_data_dir}'

  one_dir = tmp_path / 'one'
  one_env = dict(base, XLA_FLAGS='--xla_force_host_platform_device_count=4')
  one, one_final, _ = _run(TRAIN + [f'--workdir={one_dir}', data], one_env,
                           one_dir)

  two_dir = tmp_path / 'two'
  launcher = [sys.executable, str(REPO / 'launch' / 'local.py'),
              '--num_processes', '2', '--devices_per_process', '2', '--cpu',
              '--']
  two, two_final, out = _run(launcher + TRAIN + [f'--workdir={two_dir}', data],
                             base, two_dir)
  assert 'processes: 2' in out and 'Devices: 4' in out

  assert sorted(one) == sorted(two) and len(one) >= 3
  for step in one:
    assert abs(one[step] - two[step]) <= 1e-5 * abs(one[step]), (one, two)
  assert one_final['test/num_examples'] == two_final['test/num_examples']
  for key, value in one_final.items():
    assert abs(value - two_final[key]) <= 1e-3, (key, value, two_final[key])
