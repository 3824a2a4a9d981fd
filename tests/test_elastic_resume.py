"""Elastic resume: a checkpoint written by 1 process x 2 devices resumes on
2 processes x 2 devices, and one written by 2 x 2 on 1 x 2, with the same
per-step losses as an uninterrupted 1-process run of the same global batch.

Real `python -m multimodal.train` subprocesses (tiny variant, 6 steps of
global batch 16, checkpoints every 2 steps), the 2-process ones under
launch/local.py on 127.0.0.1, chained to save runs:
  reference  1 x 2, steps 1-6 uninterrupted;
  grown      its step 2 rolled back to (--config.restore_step=2) on 2 x 2:
             steps 3-6, writing checkpoints 4 and 6 from 2 processes;
  shrunk     grown's step 4 (step 6 deleted, a plain resume) on 1 x 2:
             steps 5-6.

What is compared, for each resumed run:
  * the global data position it rebuilds from the per-process files
    (steps x 16 examples), in its log;
  * train/loss of every resumed step against the reference. Step 3's batch
    is global positions 32..47 only if the position was remapped right; a
    batch off by even one example changes the loss far beyond the
    tolerance (see _LOSS_RTOL);
  * the final validation metrics.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from multimodal import checkpoint
from multimodal.data import pipeline
from multimodal.data.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, '-m', 'multimodal.train',
         '--config=projects/digits/configs/contrastive.py:tiny',
         '--config.total_steps=6', '--config.checkpoint_every=2',
         '--config.checkpoint_keep=3', '--config.log_every=1',
         '--config.eval_split=validation', '--config.input.validate_records=0']
LAUNCH_TWO = [sys.executable, str(REPO / 'launch' / 'local.py'),
              '--num_processes', '2', '--devices_per_process', '2', '--cpu',
              '--']
# The 1-process runs split each batch over 2 devices and the 2-process runs
# over 4, so float32 sums (loss, gradients, the all-reduce) may add in
# another order. Measured: at most 8e-8 relative (one float32 ulp of a loss
# near 24), most steps identical. A data position off by a single example
# (next_index 33 instead of 32 at step 2) moved the step-3 loss by 4e-3
# relative and step 4's by 2e-2, so 1e-5 (the bound
# tests/test_multiprocess_training.py holds 2 x 2 against 1 x 4 to) leaves
# a wide margin both ways.
_LOSS_RTOL = 1e-5


def _env(devices: int | None) -> dict:
  # Fewer XLA passes: these runs are all compile time (every run the same,
  # so the comparisons are unaffected).
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  env.pop('XLA_FLAGS', None)
  if devices:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _train(workdir, data_dir, processes: int, *extra) -> str:
  """Runs training in `workdir` (1 process x 2 devices, or 2 x 2); returns
  its output."""
  cmd = (TRAIN if processes == 1 else LAUNCH_TWO + TRAIN) + [
      f'--workdir={workdir}', f'--config.dataset.data_dir={data_dir}',
      *extra]
  proc = subprocess.run(cmd, cwd=REPO, env=_env(2 if processes == 1 else None),
                        capture_output=True, text=True, timeout=600,
                        check=False)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-5000:]
  assert f'processes: {processes}' in out, out[-3000:]
  return out


def _losses(workdir) -> dict[int, float]:
  rows = [json.loads(line) for line in
          (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}


def _final(workdir) -> dict:
  return json.loads((pathlib.Path(workdir) / 'final_validation.json')
                    .read_text())


def _copy_checkpoints(src, dst) -> None:
  """A workdir holding only `src`'s checkpoints (and config), so that its
  metrics.jsonl holds the resumed steps alone."""
  shutil.copytree(pathlib.Path(src) / 'checkpoints',
                  pathlib.Path(dst) / 'checkpoints')


def _data_files(step_dir) -> list[str]:
  return sorted(n for n in os.listdir(step_dir / 'data')
                if n.endswith('.json'))


def _assert_same(resumed: dict, reference: dict, steps) -> None:
  assert sorted(resumed) == list(steps), resumed
  for step in steps:
    assert abs(resumed[step] - reference[step]) <= (
        _LOSS_RTOL * abs(reference[step])), (step, resumed, reference)


def _assert_same_final(resumed: dict, reference: dict) -> None:
  assert resumed['validation/num_examples'] == reference[
      'validation/num_examples']
  for key, value in reference.items():
    assert abs(value - resumed[key]) <= 1e-3, (key, value, resumed[key])


@pytest.fixture(scope='module')
def one_process_run(tmp_path_factory, digits_data_dir):
  """The uninterrupted reference: 1 process x 2 devices, 6 steps, with
  checkpoints of steps 2, 4 and 6."""
  workdir = tmp_path_factory.mktemp('one')
  _train(workdir, digits_data_dir, 1)
  return workdir


@pytest.fixture(scope='module')
def grown_to_two(one_process_run, tmp_path_factory, digits_data_dir):
  """The reference's step 2 resumed on 2 processes x 2 devices (rolled back
  with --config.restore_step=2): steps 3-6, checkpoints 4 and 6 written by
  2 processes. Returns (workdir, output)."""
  workdir = tmp_path_factory.mktemp('grown')
  _copy_checkpoints(one_process_run, workdir)
  return workdir, _train(workdir, digits_data_dir, 2,
                         '--config.restore_step=2')


def test_one_process_resumes_on_two(one_process_run, grown_to_two):
  workdir, out = grown_to_two
  assert 'written by 1 process, this run has 2' in out, out[-3000:]
  assert 'global data position is 32 examples' in out, out[-3000:]
  assert 'Resumed from step 2' in out
  for step in (4, 6):
    assert (workdir / 'checkpoints' / f'{step}.rolled-back').is_dir()
    assert _data_files(workdir / 'checkpoints' / str(step)) == [
        'process_0-of-2.json', 'process_1-of-2.json']
  _assert_same(_losses(workdir), _losses(one_process_run), range(3, 7))
  _assert_same_final(_final(workdir), _final(one_process_run))


def test_two_processes_resume_on_one(one_process_run, grown_to_two,
                                     digits_data_dir, tmp_path):
  workdir = tmp_path / 'shrunk'
  _copy_checkpoints(grown_to_two[0], workdir)
  shutil.rmtree(workdir / 'checkpoints' / '6')  # resume from 4, plainly
  out = _train(workdir, digits_data_dir, 1)
  assert 'written by 2 processes, this run has 1' in out, out[-3000:]
  assert 'global data position is 64 examples' in out, out[-3000:]
  assert 'Resumed from step 4' in out
  assert _data_files(workdir / 'checkpoints' / '6') == ['process_0-of-1.json']
  _assert_same(_losses(workdir), _losses(one_process_run), (5, 6))
  _assert_same_final(_final(workdir), _final(one_process_run))


# ------------------------------------------- the remap, on the pipeline ---

class _Numbered:
  """Records whose label is their index (so a batch says which records it
  holds); the indices in `bad` cannot be read (DataError)."""

  def __init__(self, size: int, bad=()):
    self.size, self.bad = size, set(bad)

  def __len__(self):
    return self.size

  def __getitem__(self, index):
    if index in self.bad:
      raise DataError('bad_image', f'record {index} is corrupt')
    return {'label': index}


def _reader(config, source, count: int, index: int, state=None):
  it, _, _ = pipeline.make_iterator(
      config, 'train', train=True, fields=['label'], batch_size=8 // count,
      process_index=index, process_count=count, source=source)
  if state is not None:
    it.set_state(state)
  return it


def _read(config, source, count: int, batches: int, states=None):
  """`batches` global batches of 8 from `count` processes (from `states`,
  or the start): the records read, in global order, and the states."""
  its = [_reader(config, source, count, i, states and states[i])
         for i in range(count)]
  seen = []
  for _ in range(batches):
    parts = [next(it)['label'] for it in its]
    seen += np.stack(parts, axis=1).reshape(-1).tolist()
  return seen, [it.get_state() for it in its]


@pytest.mark.parametrize('before,after', [(2, 1), (1, 2), (2, 4), (4, 2)])
def test_remapped_position_continues_the_global_stream(tiny_config, before,
                                                       after):
  source = _Numbered(1000)
  whole, _ = _read(tiny_config, source, 1, 5)
  first, states = _read(tiny_config, source, before, 3)
  assert first == whole[:24]
  remapped = []
  for j in range(after):
    state, position, repeated = checkpoint.remap_data_state(states, j, after)
    assert (position, repeated) == (24, 0)
    remapped.append(state)
  rest, _ = _read(tiny_config, source, after, 2, remapped)
  assert rest == whole[24:40]


def test_remap_after_skipped_records_repeats_but_never_skips(tiny_config):
  tiny_config.input.on_error = 'skip'
  tiny_config.input.max_skip_fraction = 0.5
  order, _ = _read(tiny_config, _Numbered(1000), 1, 12)  # nothing bad
  # Process 0 of 2 reads global positions 0, 2, 4...: bad records there
  # push it ahead of process 1.
  bad = {order[g] for g in (2, 6, 10, 14)}
  source = _Numbered(1000, bad)
  first, states = _read(tiny_config, source, 2, 3)
  state, position, repeated = checkpoint.remap_data_state(states, 0, 1)
  passed = [s['next_index'] for s in states]
  # Process 0 passed 16 positions of its share for 12 good records, process
  # 1 passed 12: global positions up to 30 and up to 23 were read, so the
  # first position not read is 25 and 26, 28, 30 lie beyond it.
  assert passed == [16, 12] and position == 25 and repeated == 3
  rest, _ = _read(tiny_config, source, 1, 3, [state])
  assert rest == order[25:49]
  # Nothing skipped: every good record up to where the new run has read.
  assert set(first) | set(rest) == {r for r in order[:49] if r not in bad}
  # Read twice: exactly those 3, all past the rebuilt position.
  assert set(first) & set(rest) == {order[g] for g in (26, 28, 30)}


def test_remap_refuses_a_position_it_cannot_rebuild():
  worker_state = {'next_index_in_cycle': 1, 'iterators_in_use_states': []}
  with pytest.raises(ValueError, match='num_workers=0'):
    checkpoint.remap_data_state([worker_state, worker_state], 0, 1)
