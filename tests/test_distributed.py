"""Multi-process start-up: mode selection, the local launcher, failures.

The end-to-end tests start real 2-process JAX jobs on CPU through
launch/local.py (2 processes x 2 fake devices). They take a few seconds each;
every subprocess has a hard timeout so a regression shows up as a failure,
never as a hung test run.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import jax
import pytest

from multimodal import distributed

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO / 'launch' / 'local.py'

# Variables that would make a child (or the in-process tests) think it runs
# under a cluster manager or with another device setup.
_CLUSTER_VARS = (
    'SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
    'SLURM_LOCALID', 'OMPI_MCA_orte_hnp_uri', 'OMPI_COMM_WORLD_SIZE',
    'KUBERNETES_SERVICE_HOST', 'JOB_COMPLETION_INDEX',
    distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
    distributed.ENV_PROCESS_ID, 'JAX_COORDINATOR_ADDRESS', 'XLA_FLAGS',
    'JAX_PLATFORMS')


def _clean_env() -> dict:
  env = {k: v for k, v in os.environ.items() if k not in _CLUSTER_VARS}
  # Children run `python -c` from the repo root, which puts it on sys.path;
  # PYTHONPATH covers an uninstalled checkout run from elsewhere.
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (str(REPO), env.get('PYTHONPATH', '')) if p)
  return env


def _launch(program: str, *launcher_args: str, timeout: float = 60):
  """Runs `program` (python source) under launch/local.py; returns
  (CompletedProcess, seconds)."""
  cmd = [sys.executable, str(LAUNCHER), '--num_processes', '2',
         '--devices_per_process', '2', '--cpu', *launcher_args, '--',
         sys.executable, '-c', textwrap.dedent(program)]
  start = time.monotonic()
  proc = subprocess.run(cmd, cwd=REPO, env=_clean_env(), capture_output=True,
                        text=True, timeout=timeout, check=False)
  return proc, time.monotonic() - start


def _lines(stdout: str, rank: int) -> list[str]:
  prefix = f'[{rank}] '
  return [l[len(prefix):] for l in stdout.splitlines() if l.startswith(prefix)]


# The child side of the end-to-end tests: the same start-up the trainer does.
_PREAMBLE = """
import sys
from multimodal import distributed
cfg = distributed.default_config()
cfg.heartbeat_timeout = 5
mode = distributed.initialize(cfg)
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
rank = jax.process_index()
"""


def test_two_processes_collectives():
  program = _PREAMBLE + """
assert mode == 'env', mode
assert jax.process_count() == 2, jax.process_count()
assert jax.device_count() == 4 and jax.local_device_count() == 2
# One value per device, summed over all 4 devices of both processes.
mesh = jax.make_mesh((4,), ('d',))
sharding = jax.sharding.NamedSharding(mesh, jax.P('d'))
local = np.arange(2, dtype=np.float32) + 10 * rank
x = jax.make_array_from_process_local_data(sharding, local)
total = jax.jit(jnp.sum, out_shardings=jax.sharding.NamedSharding(mesh, jax.P()))(x)
gathered = multihost_utils.process_allgather(np.array([rank]))
distributed.sync('end')
print(f'RESULT rank={rank} coordinator={distributed.is_coordinator()} '
      f'sum={float(total)} gathered={gathered.ravel().tolist()}')
"""
  proc, seconds = _launch(program)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for rank in (0, 1):
    results = [l for l in _lines(proc.stdout, rank) if l.startswith('RESULT')]
    # 0+1 + 10+11 over the four devices; every rank sees the global value.
    assert results == [f'RESULT rank={rank} coordinator={rank == 0} '
                       'sum=22.0 gathered=[0, 1]'], proc.stdout
  assert 'all processes finished successfully' in proc.stderr
  assert seconds < 60


def test_preemption_of_one_process_stops_all_at_the_same_step():
  program = _PREAMBLE + """
import os, signal
from multimodal import checkpoint
guard = checkpoint.PreemptionGuard()
seen = []
for step in range(4):
  if rank == 1 and step == 2:
    os.kill(os.getpid(), signal.SIGTERM)  # only process 1 is told
  seen.append(guard.agreed())
print(f'RESULT rank={rank} requested={guard.requested} agreed={seen}')
"""
  proc, _ = _launch(program)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for rank in (0, 1):
    results = [l for l in _lines(proc.stdout, rank) if l.startswith('RESULT')]
    assert results == [f'RESULT rank={rank} requested={rank == 1} '
                       'agreed=[False, False, True, True]'], proc.stdout


def test_launcher_stops_everyone_when_one_process_fails():
  # Rank 1 dies before connecting: rank 0 would wait in initialize() for
  # initialization_timeout (300 s); the launcher must stop it right away.
  program = """
import os, sys
if os.environ['MULTIMODAL_PROCESS_ID'] == '1':
  sys.exit('rank 1 failing on purpose')
""" + _PREAMBLE + """
print('rank 0 should never get here')
"""
  proc, seconds = _launch(program, '--grace', '3')
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert 'rank 1 failing on purpose' in '\n'.join(_lines(proc.stdout, 1))
  assert 'process 1 exited with status 1; stopping the others' in proc.stderr
  assert 'should never get here' not in proc.stdout
  assert seconds < 30, seconds


def test_launcher_timeout_and_signal_status():
  proc, seconds = _launch('import time; time.sleep(60)', '--timeout', '2',
                          '--grace', '1')
  assert proc.returncode == 124, proc.stderr
  assert 'timed out' in proc.stderr
  assert seconds < 20


def test_survivor_aborts_when_peer_dies_after_startup():
  """JAX's heartbeat, not the launcher, ends the surviving process.

  Started without the launcher, which would otherwise kill the survivor
  itself. Rank 1 vanishes without any clean-up (os._exit) once both are
  connected; rank 0 is busy outside any collective. It must be aborted by
  the coordination service within about heartbeat_timeout (5 s here).
  """
  program = _PREAMBLE + """
import os, time
multihost_utils.sync_global_devices('started')
print('STARTED', rank, flush=True)
if rank == 1:
  os._exit(7)
time.sleep(50)
print('SURVIVED', flush=True)
"""
  (code0, out0), (code1, out1), seconds = _run_pair(program)
  assert code1 == 7, out1
  assert 'STARTED 0' in out0 and 'SURVIVED' not in out0, out0
  assert code0 in (-signal.SIGABRT, 128 + signal.SIGABRT), out0
  assert 'detected fatal errors' in out0, out0
  assert seconds < 30, seconds


def test_uncaught_exception_ends_the_job_quickly():
  """fail_fast: one process raises, every process exits within seconds.

  Without it the failed process would wait in JAX's shutdown barrier and the
  other in its next collective, for shutdown_timeout (300 s).
  """
  program = _PREAMBLE + """
import time
distributed.sync('started')
if rank == 1:
  raise RuntimeError('rank 1 failing on purpose')
for i in range(200):
  distributed.sync(f'step{i}')
  time.sleep(0.1)
print('SURVIVED', flush=True)
"""
  (code0, out0), (code1, out1), seconds = _run_pair(program)
  assert code1 == 1 and 'rank 1 failing on purpose' in out1, out1
  assert 'fail_fast' in out1, out1
  assert code0 != 0 and 'SURVIVED' not in out0, out0
  assert seconds < 30, seconds


def _run_pair(program: str, timeout: float = 40):
  """Runs `program` as ranks 0 and 1 without the launcher.

  Returns ((returncode, output) of rank 0, same for rank 1, seconds from the
  first exit to the last).
  """
  env = _clean_env()
  env.update({distributed.ENV_COORDINATOR: f'127.0.0.1:{_free_port()}',
              distributed.ENV_NUM_PROCESSES: '2', 'JAX_PLATFORMS': 'cpu',
              'PYTHONUNBUFFERED': '1'})
  # Output goes to files, not pipes: nobody reads a pipe while we poll, and
  # a full one would block the child.
  logs = [tempfile.TemporaryFile(mode='w+') for _ in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, '-c', textwrap.dedent(program)], cwd=REPO,
      env={**env, distributed.ENV_PROCESS_ID: str(rank)},
      stdout=logs[rank], stderr=subprocess.STDOUT) for rank in (0, 1)]
  outputs = [''] * 2
  first_exit = None
  deadline = time.monotonic() + timeout
  try:
    while any(p.poll() is None for p in procs):
      if first_exit is None and any(p.poll() is not None for p in procs):
        first_exit = time.monotonic()
      assert time.monotonic() < deadline, 'processes still running'
      time.sleep(0.05)
  finally:
    for i, p in enumerate(procs):
      if p.poll() is None:
        p.kill()
      p.wait()
      logs[i].seek(0)
      outputs[i] = logs[i].read()
      logs[i].close()
  seconds = time.monotonic() - (first_exit or time.monotonic())
  return ((procs[0].returncode, outputs[0]), (procs[1].returncode, outputs[1]),
          seconds)


def _free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# ---- Mode selection, in process, with jax.distributed.initialize faked. ----


@pytest.fixture
def fake_init(monkeypatch):
  """Records what initialize() would pass to jax.distributed.initialize."""
  for var in _CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(distributed, '_mode', None)
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda **kwargs: calls.append(kwargs))
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  return calls


def test_single_process_by_default(fake_init):
  assert distributed.initialize(distributed.default_config()) == 'single'
  assert distributed.initialize(None) == 'single'  # Second call: no-op.
  assert not fake_init


def test_env_mode_and_config_precedence(fake_init, monkeypatch):
  monkeypatch.setenv(distributed.ENV_COORDINATOR, 'envhost:1')
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, '4')
  monkeypatch.setenv(distributed.ENV_PROCESS_ID, '3')
  cfg = distributed.default_config()
  cfg.process_id = 2
  cfg.heartbeat_timeout = 9
  cfg.local_device_ids = '0,1'
  assert distributed.initialize(cfg) == 'env'
  (call,) = fake_init
  assert call['coordinator_address'] == 'envhost:1'
  assert call['num_processes'] == 4
  assert call['process_id'] == 2  # The config wins over the environment.
  assert call['heartbeat_timeout_seconds'] == 9
  assert call['local_device_ids'] == [0, 1]
  assert call['cluster_detection_method'] == 'deactivate'


def test_explicit_mode_needs_counts(fake_init):
  cfg = distributed.default_config()
  cfg.coordinator_address = 'h:1'
  with pytest.raises(ValueError, match='num_processes'):
    distributed.initialize(cfg)
  cfg.num_processes, cfg.process_id = 2, 0
  assert distributed.initialize(cfg) == 'explicit'


@pytest.mark.parametrize('ntasks,expected', [('4', 'auto:slurm'),
                                             ('1', 'single')])
def test_slurm_auto_detection(fake_init, monkeypatch, ntasks, expected):
  for k, v in dict(SLURM_JOB_ID='12', SLURM_STEP_NODELIST='n[1-2]',
                   SLURM_NTASKS=ntasks, SLURM_PROCID='0',
                   SLURM_LOCALID='0').items():
    monkeypatch.setenv(k, v)
  assert distributed.initialize({}) == expected
  if expected == 'single':
    assert not fake_init
  else:
    # No coordinator from us: JAX derives it from the Slurm variables.
    (call,) = fake_init
    assert 'coordinator_address' not in call
    assert call['initialization_timeout'] == 300


def test_auto_off_stays_single(fake_init, monkeypatch):
  for k, v in dict(SLURM_JOB_ID='12', SLURM_STEP_NODELIST='n1',
                   SLURM_NTASKS='2', SLURM_PROCID='0',
                   SLURM_LOCALID='0').items():
    monkeypatch.setenv(k, v)
  assert distributed.initialize(dict(auto=False)) == 'single'
  assert not fake_init


def test_helpers_single_process():
  assert distributed.is_coordinator()
  distributed.sync('nothing to wait for')
