"""Preemption from outside, with real processes: SIGTERM during start-up,
between steps and during evaluation, SIGKILL during asynchronous saves;
every resume continues exactly as if nothing had happened (per-step losses
and final parameters bitwise equal to an uninterrupted run)."""
from __future__ import annotations

import json
import os
import pathlib
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from multimodal import train

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 12


class Run:
  """`python -m multimodal.train` in the background, its output read line by
  line, so a test can signal it at a chosen moment."""

  def __init__(self, workdir, data_dir, cache):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'multimodal.train',
         '--config=projects/digits/configs/contrastive.py:tiny',
         f'--workdir={workdir}', f'--config.dataset.data_dir={data_dir}',
         f'--config.total_steps={STEPS}', '--config.log_every=1',
         '--config.checkpoint_every=1', '--config.eval_every=6',
         f'--config.compilation_cache_dir={cache}'],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    self.lines, self.out = queue.Queue(), []
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.proc.stdout:
      self.out.append(line)
      self.lines.put(line)
    self.lines.put(None)

  def wait_for(self, pattern, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      try:
        line = self.lines.get(timeout=1)
      except queue.Empty:
        continue
      if line is None:
        break
      if re.search(pattern, line):
        return line
    raise AssertionError(f'{pattern!r} never appeared:\n' + ''.join(self.out))

  def finish(self, timeout=300):
    code = self.proc.wait(timeout=timeout)
    time.sleep(0.2)  # let the reader drain the pipe
    return code, ''.join(self.out)


def _losses(workdir):
  rows = [json.loads(l) for l in
          (workdir / 'metrics.jsonl').read_text().splitlines()]
  # A step logged and then lost to SIGKILL runs again after the resume: its
  # last row counts.
  return {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}


def _final_params(workdir):
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  assert mngr.latest_step() == STEPS
  state = mngr.restore(STEPS, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))['state']
  return jax.tree.map(np.asarray, state['params'])


def test_resumes_are_exact_after_signals_anywhere(tmp_path, digits_data_dir):
  rng = random.Random(1234)
  cache = tmp_path / 'cache'
  reference = tmp_path / 'reference'
  code, out = Run(reference, digits_data_dir, cache).finish()
  assert code == 0, out

  work = tmp_path / 'interrupted'
  # 1. SIGTERM during start-up: nothing to save, the exit says preempted.
  run = Run(work, digits_data_dir, cache)
  run.wait_for(r'^Devices: ')
  run.proc.send_signal(signal.SIGTERM)
  code, out = run.finish()
  assert code == train.EXIT_PREEMPTED, out
  assert 'Preempted during start-up' in out, out
  # 2. SIGTERM between steps, at a step drawn from the seed.
  stop = rng.randint(2, 4)
  run = Run(work, digits_data_dir, cache)
  run.wait_for(rf'^step\s+{stop}/{STEPS}')
  run.proc.send_signal(signal.SIGTERM)
  code, out = run.finish()
  assert code == train.EXIT_PREEMPTED and 'Preempted after step' in out, out
  # 3. SIGTERM as the evaluation at step 6 starts (checkpoint_every=1: an
  # asynchronous save of step 6 is in flight too), then a second SIGTERM
  # while the trainer saves.
  run = Run(work, digits_data_dir, cache)
  run.wait_for(rf'^step\s+6/{STEPS}')
  run.proc.send_signal(signal.SIGTERM)
  time.sleep(0.05)
  run.proc.send_signal(signal.SIGTERM)
  code, out = run.finish()
  assert code == train.EXIT_PREEMPTED, out
  assert 'Preempted during evaluation at step 6' in out, out
  # 4. SIGKILL right after a step is logged, while its save is written.
  kill = rng.randint(8, 10)
  run = Run(work, digits_data_dir, cache)
  assert run.wait_for(r'^step\s+6  ')  # the interrupted evaluation reruns
  run.wait_for(rf'^step\s+{kill}/{STEPS}')
  time.sleep(rng.uniform(0, 0.2))
  run.proc.kill()
  assert run.finish()[0] == -signal.SIGKILL
  # 5. To the end.
  code, out = Run(work, digits_data_dir, cache).finish()
  assert code == 0, out

  expected, got = _losses(reference), _losses(work)
  assert sorted(got) == list(range(1, STEPS + 1))
  assert got == expected  # bitwise: the same float64 of the same float32
  ref_params, params = _final_params(reference), _final_params(work)
  for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  evals = [json.loads(l) for l in
           (work / 'metrics.jsonl').read_text().splitlines()]
  assert any(r['step'] == 6 and any(k.startswith('test/') for k in r)
             for r in evals), 'the evaluation at step 6 never completed'
