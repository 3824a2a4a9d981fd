#!/usr/bin/env python3
"""Runs N copies of a command as one multi-process JAX job on this machine.

For developing and testing multi-host code without a cluster:

  python launch/local.py --num_processes 2 --devices_per_process 2 --cpu -- \
      python -m multimodal.train \
      --config projects/digits/configs/contrastive.py:tiny \
      --workdir workdirs/local2

Each child gets MULTIMODAL_COORDINATOR=127.0.0.1:PORT (a free port),
MULTIMODAL_NUM_PROCESSES=N and MULTIMODAL_PROCESS_ID=i, which
`multimodal.distributed.initialize` turns into `jax.distributed.initialize`.
With --devices_per_process K the children also get
XLA_FLAGS=--xla_force_host_platform_device_count=K, so that a CPU-only machine
looks like N hosts with K devices each; --cpu adds JAX_PLATFORMS=cpu.

Output lines are prefixed with the rank ("[1] ..."). If any child exits
non-zero (or is killed), the others are stopped (SIGTERM, then SIGKILL after
--grace seconds) and the launcher exits with that child's status, so a failed
run never leaves the rest waiting on a dead peer. Standard library only.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

_POLL_SECONDS = 0.1


def free_port(host: str) -> int:
  """Asks the OS for a port that is free right now on `host`.

  There is a small window before process 0 binds it; acceptable for a dev
  launcher, and the bind error would be explicit if another program won.
  """
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def child_env(rank: int, args: argparse.Namespace, port: int) -> dict:
  """The environment for child `rank`: ours plus the distributed settings."""
  env = dict(os.environ)
  env['MULTIMODAL_COORDINATOR'] = f'{args.host}:{port}'
  env['MULTIMODAL_NUM_PROCESSES'] = str(args.num_processes)
  env['MULTIMODAL_PROCESS_ID'] = str(rank)
  # JAX binds the coordination service to [::]:PORT (all interfaces) unless
  # told otherwise; a dev job should not listen beyond this machine.
  env.setdefault('JAX_COORDINATOR_BIND_ADDRESS', f'{args.host}:{port}')
  # Children write through a pipe, where Python would block-buffer; unbuffered
  # output keeps the ranks' lines interleaved in real time.
  env['PYTHONUNBUFFERED'] = '1'
  if args.devices_per_process:
    flag = ('--xla_force_host_platform_device_count='
            f'{args.devices_per_process}')
    env['XLA_FLAGS'] = ' '.join(
        f for f in [env.get('XLA_FLAGS', ''), flag] if f)
  if args.cpu:
    env['JAX_PLATFORMS'] = 'cpu'
  return env


def _pump(rank: int, stream, lock: threading.Lock) -> None:
  """Copies a child's output to ours, one prefixed line at a time."""
  prefix = f'[{rank}] '.encode()
  out = sys.stdout.buffer
  for line in iter(stream.readline, b''):
    if not line.endswith(b'\n'):
      line += b'\n'
    with lock:
      out.write(prefix + line)
      out.flush()
  stream.close()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
  # Each child leads its own process group (start_new_session), so this also
  # reaches anything it spawned (data-loader workers, shells) and nothing else.
  try:
    os.killpg(proc.pid, sig)
  except ProcessLookupError:
    pass


def stop_all(procs: list[subprocess.Popen], grace: float) -> None:
  """SIGTERM every child still running; SIGKILL whatever is left after grace.

  Signals go to the group even if the leader has exited, because a leader
  dying can leave its own children behind.
  """
  for p in procs:
    _signal_group(p, signal.SIGTERM)
  deadline = time.monotonic() + grace
  while time.monotonic() < deadline and any(p.poll() is None for p in procs):
    time.sleep(_POLL_SECONDS)
  for p in procs:
    _signal_group(p, signal.SIGKILL)
  for p in procs:
    p.wait()


def exit_status(returncode: int) -> int:
  """Popen's -SIGNAL becomes the shell's 128+SIGNAL."""
  return 128 - returncode if returncode < 0 else returncode


def describe(returncode: int) -> str:
  if returncode < 0:
    return f'was killed by {signal.Signals(-returncode).name}'
  return f'exited with status {returncode}'


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      usage='%(prog)s [options] -- COMMAND [ARGS...]')
  parser.add_argument('--num_processes', '-n', type=int, default=2,
                      help='processes to start (default 2)')
  parser.add_argument('--devices_per_process', type=int, default=0,
                      help='fake CPU devices per process via XLA_FLAGS '
                      '(default: leave XLA_FLAGS alone)')
  parser.add_argument('--cpu', action='store_true',
                      help='set JAX_PLATFORMS=cpu in the children')
  parser.add_argument('--host', default='127.0.0.1',
                      help='coordinator host (default 127.0.0.1)')
  parser.add_argument('--port', type=int, default=0,
                      help='coordinator port (default: a free one)')
  parser.add_argument('--grace', type=float, default=10.0,
                      help='seconds between SIGTERM and SIGKILL when '
                      'stopping children (default 10)')
  parser.add_argument('--timeout', type=float, default=0.0,
                      help='stop everything and fail after this many seconds '
                      '(default 0: no limit)')
  parser.add_argument('command', nargs=argparse.REMAINDER,
                      help='the command each process runs, after --')
  args = parser.parse_args(argv)
  if args.command and args.command[0] == '--':
    args.command = args.command[1:]
  if not args.command:
    parser.error('no command given; put it after --')
  if args.num_processes < 1:
    parser.error('--num_processes must be at least 1')
  return args


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  port = args.port or free_port(args.host)
  log = lambda msg: print(f'[launch] {msg}', file=sys.stderr, flush=True)
  log(f'{args.num_processes} processes, coordinator {args.host}:{port}: '
      f'{" ".join(args.command)}')

  # The launcher's own SIGTERM/SIGINT (Ctrl-C, a scheduler) must take the
  # children down too; turning them into an exception reuses the clean-up
  # path below.
  class _Stop(Exception):
    pass

  def _on_signal(signum, frame):  # pylint: disable=unused-argument
    raise _Stop(signum)

  signal.signal(signal.SIGTERM, _on_signal)
  signal.signal(signal.SIGINT, _on_signal)

  lock = threading.Lock()
  procs: list[subprocess.Popen] = []
  pumps: list[threading.Thread] = []
  status = 0
  try:
    for rank in range(args.num_processes):
      proc = subprocess.Popen(
          args.command, env=child_env(rank, args, port),
          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, start_new_session=True)
      procs.append(proc)
      pump = threading.Thread(target=_pump, args=(rank, proc.stdout, lock),
                              daemon=True)
      pump.start()
      pumps.append(pump)

    deadline = time.monotonic() + args.timeout if args.timeout else None
    while True:
      codes = [p.poll() for p in procs]
      failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        rank, code = failed[0]
        log(f'process {rank} {describe(code)}; stopping the others.')
        status = exit_status(code)
        break
      if all(c == 0 for c in codes):
        break
      if deadline is not None and time.monotonic() > deadline:
        log(f'timed out after {args.timeout:g}s; stopping all processes.')
        status = 124  # What coreutils `timeout` returns.
        break
      time.sleep(_POLL_SECONDS)
  except _Stop as stop:
    signum = stop.args[0]
    log(f'received {signal.Signals(signum).name}; stopping all processes.')
    status = 128 + signum
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # After a clean finish every leader is reaped and its group may be gone;
    # signalling a stale group id is what we must not do, so only stop on
    # failure (or if anything is, unexpectedly, still running).
    if status != 0 or any(p.poll() is None for p in procs):
      stop_all(procs, args.grace)
    for pump in pumps:
      # Output still in the pipes is worth showing (often the real error);
      # the bound only matters if a grandchild kept a pipe open.
      pump.join(timeout=5)

  if status == 0:
    log('all processes finished successfully.')
  return status


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
