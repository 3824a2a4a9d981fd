"""Process set-up (multimodal/runtime.py) and device prefetching
(multimodal/data/prefetch.py): the trainer's fast path outside the step."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import grain
import jax
import numpy as np
import pytest

from multimodal import runtime
from multimodal.data import prefetch

REPO = pathlib.Path(__file__).resolve().parents[1]


def _batches(n=40, batch=4):
  ds = grain.MapDataset.range(n).shuffle(seed=1).repeat(None)
  ds = ds.map(lambda i: {'x': np.full((3,), i, np.int32)})
  return iter(ds.to_iter_dataset().batch(batch))


@pytest.mark.parametrize('size', [0, 1, 3])
def test_prefetch_checkpoints_the_position_of_the_last_consumed_batch(size):
  placed = []

  def place(batch):
    placed.append(batch['x'][0, 0])
    return jax.device_put(batch)

  it = prefetch.DevicePrefetch(_batches(), place, size)
  bare = _batches()
  for _ in range(5):
    np.testing.assert_array_equal(next(it)['x'], next(bare)['x'])
  # Read ahead of the consumer, yet the saved position is the consumer's.
  assert len(placed) == 5 + max(size, 1) - 1
  state = it.get_state()
  assert isinstance(state, bytes)
  resumed = prefetch.DevicePrefetch(_batches(), jax.device_put, size)
  resumed.set_state(state)
  for _ in range(4):
    np.testing.assert_array_equal(next(resumed)['x'], next(bare)['x'])
  assert isinstance(next(resumed)['x'], jax.Array)


def test_prefetch_rejects_a_negative_size():
  with pytest.raises(ValueError, match='device_prefetch'):
    prefetch.DevicePrefetch(_batches(), jax.device_put, -1)


def test_compilation_cache_dir_settings(monkeypatch, tmp_path):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert runtime.cache_dir('auto') == str(tmp_path / 'multimodal' / 'jax')
  assert runtime.cache_dir('') is None
  assert runtime.cache_dir(str(tmp_path / 'c')) == str(tmp_path / 'c')


def test_tcmalloc_choice(monkeypatch, tmp_path):
  monkeypatch.setenv('MULTIMODAL_TCMALLOC', '0')
  assert runtime.tcmalloc_library() is None
  monkeypatch.setenv('MULTIMODAL_TCMALLOC', str(tmp_path / 'missing.so'))
  with pytest.raises(FileNotFoundError, match='MULTIMODAL_TCMALLOC'):
    runtime.tcmalloc_library()


def test_allocator_is_read_from_the_process_maps():
  lib = '7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/{}\n'
  libc = lib.format('libc.so.6')
  assert runtime.allocator(libc) == 'glibc malloc'
  assert runtime.allocator(libc + lib.format('libtcmalloc_minimal.so.4')) == (
      'tcmalloc')
  assert runtime.allocator(lib.format('libjemalloc.so.2') + libc) == (
      'jemalloc')
  # This process: what the environment preloaded, if anything.
  preload = os.environ.get('LD_PRELOAD', '')
  want = next((n for n in runtime.ALLOCATORS if n in preload), 'glibc malloc')
  assert runtime.allocator() == want


@pytest.mark.parametrize('loaded,reexecs', [
    ('glibc malloc', True), ('tcmalloc', False), ('jemalloc', False)])
def test_preload_keeps_an_allocator_already_loaded(monkeypatch, loaded,
                                                   reexecs):
  """Only a process on glibc's malloc re-executes with tcmalloc; one the
  user started on another allocator keeps it."""
  calls = []
  monkeypatch.delenv('MULTIMODAL_TCMALLOC_REEXEC', raising=False)
  monkeypatch.delenv('LD_PRELOAD', raising=False)
  monkeypatch.setattr(runtime, 'allocator', lambda: loaded)
  monkeypatch.setattr(runtime, 'tcmalloc_library', lambda: '/lib/tc.so')
  monkeypatch.setattr(runtime.os, 'execve',
                      lambda path, argv, env: calls.append(env['LD_PRELOAD']))
  runtime.preload_tcmalloc('multimodal.train', ['train', '--x'])
  assert calls == (['/lib/tc.so'] if reexecs else []), calls


def test_xla_flags_after_the_backend_started_are_an_error():
  jax.devices()
  with pytest.raises(RuntimeError, match='XLA_FLAGS'):
    runtime.set_xla_flags('--xla_cpu_use_xnnpack=true')


def test_training_entry_point_sets_up_allocator_flags_and_cache(
    tmp_path, digits_data_dir):
  """`python -m multimodal.train` preloads tcmalloc when it is installed,
  applies config.xla_flags and fills the compilation cache; a second run
  loads its step from the cache."""
  cache = tmp_path / 'cache'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  env.pop('MULTIMODAL_TCMALLOC_REEXEC', None)

  def train(workdir):
    proc = subprocess.run(
        [sys.executable, '-m', 'multimodal.train',
         '--config=projects/digits/configs/contrastive.py:tiny',
         f'--workdir={tmp_path / workdir}',
         f'--config.dataset.data_dir={digits_data_dir}',
         '--config.total_steps=2', '--config.log_every=1',
         '--config.xla_flags=--xla_cpu_use_xnnpack=true',
         f'--config.compilation_cache_dir={cache}',
         # Every program, so the set cached cannot depend on how long each
         # compile took on a loaded machine.
         '--config.compilation_cache_min_compile_secs=0'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout

  out = train('a')
  expected = ('tcmalloc' if runtime.tcmalloc_library() else 'glibc malloc')
  assert f'allocator: {expected}' in out, out
  assert f'compilation cache: {cache}' in out
  entries = set(os.listdir(cache))
  assert any(e.startswith('jit_train_step') for e in entries), entries
  train('b')
  assert set(os.listdir(cache)) == entries  # every program came from it
