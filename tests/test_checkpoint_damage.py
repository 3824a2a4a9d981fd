"""Damaged checkpoints: restore names the file at fault and falls back.

A tiny run saves every step (1..4); each test damages a copy of its
checkpoints the way a full disk, a kill or a careless `rm` would, and
checks what `Checkpointer.restore` (and a resumed training run) does: the
newest complete step is restored, the damaged one is reported by path,
moved aside and never restored; `restore_step` picks a step or says which
exist; an unfinished orbax save is never chosen.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import shutil

import conftest
import numpy as np
import orbax.checkpoint as ocp
import pytest

from multimodal import checkpoint as ckpt_lib
from multimodal import config_checks
from multimodal import metrics_writer
from multimodal import train

pytestmark = pytest.mark.usefixtures('fast_compiles')

STEPS, BATCH = 4, 16


def _config(tiny_config):
  cfg = tiny_config
  cfg.total_steps = STEPS
  cfg.checkpoint_every = 1
  cfg.checkpoint_keep = 10
  cfg.log_every = 1
  cfg.eval_split = 'validation'
  return cfg


@pytest.fixture(scope='module')
def trained(tmp_path_factory, digits_data_dir):
  """A workdir with checkpoints of steps 1..4 (and their losses in
  metrics.jsonl)."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  # pylint: disable-next=protected-access
  config = conftest._tiny('contrastive', digits_data_dir)
  train.train_and_evaluate(_config(config), workdir)
  return workdir


@pytest.fixture()
def workdir(trained, tmp_path):
  """A copy of the trained workdir, free to damage."""
  path = str(tmp_path / 'work')
  shutil.copytree(trained, path)
  return path


class _Iterator:
  """Stands in for the training iterator: records the state restored."""

  def __init__(self, state=None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state) -> None:
    self.state = state


def _step_dir(workdir, step) -> str:
  return os.path.join(workdir, 'checkpoints', str(step))


def _delete_array_file(step_dir) -> str:
  # The biggest file under state/ holds the array values; the OCDBT index
  # refers to it.
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', 'd',
                                             '*'), recursive=True)]
  path = max(files, key=os.path.getsize)
  os.remove(path)
  return path


def _truncate(relative):
  def damage(step_dir) -> str:
    path = os.path.join(step_dir, relative)
    with open(path, 'rb') as f:
      data = f.read()
    with open(path, 'wb') as f:
      f.write(data[:len(data) // 2])
    return path
  return damage


def _delete(relative):
  def damage(step_dir) -> str:
    path = os.path.join(step_dir, relative)
    os.remove(path)
    return path
  return damage


DAMAGES = {
    'missing array file': _delete_array_file,
    'truncated tree metadata': _truncate('state/_METADATA'),
    'truncated OCDBT manifest': _truncate('state/manifest.ocdbt'),
    'missing data file': _delete('data/process_0-of-1.json'),
    'garbled data file': _truncate('data/process_0-of-1.json'),
}


def _restore(workdir, step=None):
  it = _Iterator()
  checkpointer = ckpt_lib.Checkpointer(workdir)
  try:
    state, restored = checkpointer.restore(None, it, step=step)
  finally:
    checkpointer.close()
  return state, restored, it.state


@pytest.mark.parametrize('kind', sorted(DAMAGES))
def test_damaged_newest_step_falls_back_to_the_previous_one(workdir, kind,
                                                            caplog):
  path = DAMAGES[kind](_step_dir(workdir, 4))
  checkpointer = ckpt_lib.Checkpointer(workdir)
  problems = checkpointer.check(4)
  assert len(problems) == 1 and problems[0].startswith(path), problems
  assert not any(checkpointer.check(s) for s in (1, 2, 3))

  with caplog.at_level(logging.WARNING):
    state, step, data = _restore(workdir)
  assert step == 3 and int(state['step']) == 3
  assert data == {'next_index': 3 * BATCH}
  warnings = '\n'.join(r.getMessage() for r in caplog.records)
  assert f'Checkpoint step 4 is damaged and is NOT restored: {path}' in (
      warnings)
  assert 'Restored checkpoint step 3 (the newest complete one) instead of ' \
         'damaged step(s) 4' in warnings
  # Not an orbax traceback: one line per problem, naming the file.
  assert 'TensorStore(' not in warnings and 'Traceback' not in warnings
  # Moved aside: kept to look at, never restored again, and step 4 can be
  # saved anew.
  assert os.path.isdir(_step_dir(workdir, 4) + '.damaged')
  assert not os.path.exists(_step_dir(workdir, 4))
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert _restore(workdir)[1] == 3
  assert not caplog.records


def test_training_resumes_past_a_damaged_step(workdir, tiny_config):
  original = {m['step']: m['train/loss'] for m in
              metrics_writer.read_metrics(workdir) if 'train/loss' in m}
  _delete_array_file(_step_dir(workdir, 4))
  os.remove(os.path.join(workdir, 'metrics.jsonl'))
  train.train_and_evaluate(_config(tiny_config), workdir)
  resumed = {m['step']: m['train/loss'] for m in
             metrics_writer.read_metrics(workdir) if 'train/loss' in m}
  # Step 4 ran again from step 3's state and data position.
  assert list(resumed) == [4]
  np.testing.assert_allclose(resumed[4], original[4], rtol=1e-6)
  checkpointer = ckpt_lib.Checkpointer(workdir)
  assert checkpointer.all_steps() == [1, 2, 3, 4]
  assert checkpointer.check(4) == []
  checkpointer.close()
  assert os.path.isdir(_step_dir(workdir, 4) + '.damaged')


def test_no_complete_step_is_an_error(workdir):
  paths = [_delete('data/process_0-of-1.json')(_step_dir(workdir, s))
           for s in (1, 2, 3, 4)]
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    _restore(workdir)
  message = str(e.value)
  assert message.startswith('No complete checkpoint in ')
  assert all(p in message for p in paths), message
  # Nothing was moved: there is nothing to fall back to.
  assert all(os.path.isdir(_step_dir(workdir, s)) for s in (1, 2, 3, 4))


def test_unfinished_save_is_never_chosen(workdir, caplog):
  # What a kill during an async save leaves: orbax writes into
  # <step>.orbax-checkpoint-tmp and renames it only once complete.
  tmp = os.path.join(workdir, 'checkpoints', '5.orbax-checkpoint-tmp')
  shutil.copytree(_step_dir(workdir, 4), tmp)
  os.remove(os.path.join(tmp, 'commit_success.txt'))
  assert ocp.CheckpointManager(os.path.join(workdir, 'checkpoints')
                               ).latest_step() == 4
  with caplog.at_level(logging.WARNING):
    _, step, data = _restore(workdir)
  assert step == 4 and data == {'next_index': 4 * BATCH}
  assert any(f'Ignoring {tmp}: a save that never completed' in r.getMessage()
             for r in caplog.records)
  assert os.path.isdir(tmp)  # orbax's to clean up when it saves step 5


def test_restore_step_rolls_back_once(workdir, caplog):
  state, step, data = _restore(workdir, step=2)
  assert step == 2 and int(state['step']) == 2
  assert data == {'next_index': 2 * BATCH}
  for s in (3, 4):
    assert os.path.isdir(_step_dir(workdir, s) + '.rolled-back')
  record = json.load(open(os.path.join(workdir, 'checkpoints',
                                       ckpt_lib.ROLLBACK_FILE)))
  assert record['restore_step'] == 2
  # The run goes on from step 2 and saves step 3 again ...
  checkpointer = ckpt_lib.Checkpointer(workdir)
  assert checkpointer.save(3, state, _Iterator({'next_index': 3 * BATCH}),
                           force=True)
  checkpointer.close()
  # ... and a rerun of the same command (restore_step=2 still set) resumes
  # from step 3 rather than rolling back again.
  with caplog.at_level(logging.WARNING):
    assert _restore(workdir, step=2)[1:] == (3, {'next_index': 3 * BATCH})
  assert any('config.restore_step=2 was applied' in r.getMessage()
             for r in caplog.records)
  assert not os.path.exists(_step_dir(workdir, 3) + '.rolled-back-2')


def test_restore_step_errors(workdir, tiny_config):
  with pytest.raises(ckpt_lib.CheckpointError, match=(
      r'config.restore_step=7: there is no checkpoint of step 7 in .*'
      r'checkpoints \(steps there: 1, 2, 3, 4\)')):
    _restore(workdir, step=7)

  path = _delete_array_file(_step_dir(workdir, 4))
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    _restore(workdir, step=4)
  assert str(e.value) == (
      f'Checkpoint step 4 is damaged: {path} is missing (an array file the '
      f'state index refers to). Delete (or move away) '
      f'{_step_dir(workdir, 4)}, or pass --config.restore_step=3 (the newest '
      'complete step before it).')
  # An explicit step never falls back: nothing was moved.
  assert os.path.isdir(_step_dir(workdir, 4))

  # The config check says the same before anything is built.
  cfg = _config(tiny_config)
  cfg.restore_step = 7
  problems = config_checks.find_problems(cfg, workdir)
  assert problems == [
      'config.restore_step=7: there is no checkpoint of step 7 in '
      f'{os.path.join(workdir, "checkpoints")} (steps there: 1, 2, 3, 4)']
  cfg.restore_step = 0
  assert config_checks.find_problems(cfg, workdir) == [
      'config.restore_step=0: must be None (the newest complete checkpoint) '
      'or a step number >= 1']
