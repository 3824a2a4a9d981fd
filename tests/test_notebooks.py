"""The Colab notebooks (colab/*.ipynb) run top to bottom.

Each notebook runs in a fresh Jupyter kernel that is this test's own Python
(`sys.executable`, so the venv of `make setup`, whatever kernels Jupyter has
registered elsewhere) with its working directory at the repository root and
MULTIMODAL_NOTEBOOK_SMOKE=1, which makes the notebook train its tiny
settings for a few steps: it still builds (here: reuses) the dataset,
trains, evaluates, restores the checkpoint and plots. A failing cell fails
the test with that cell's source and traceback.

Run alone with:  pytest tests/test_notebooks.py
"""
import json
import os
import pathlib
import sys
import time

import nbclient
from nbclient.exceptions import CellExecutionError
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COLAB = REPO / 'colab'
KERNEL_NAME = 'multimodal-test-python'
# Per notebook; the smoke runs take about a minute on 2 idle cores.
CELL_TIMEOUT_S = 600

pytestmark = pytest.mark.notebooks


def _kernel_manager(tmp_path: pathlib.Path) -> KernelManager:
  """A kernel manager whose only kernel runs ipykernel on sys.executable."""
  kernels = tmp_path / 'kernels'
  spec_dir = kernels / KERNEL_NAME
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f',
               '{connection_file}'],
      'display_name': f'Python ({sys.executable})',
      'language': 'python',
  }))
  specs = KernelSpecManager(kernel_dirs=[str(kernels)])
  return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs,
                       transport='ipc',
                       connection_file=str(tmp_path / 'kernel.json'))


def run_notebook(name: str, tmp_path: pathlib.Path, env: dict[str, str]):
  """Executes colab/<name>; returns (executed notebook, seconds)."""
  nb = nbformat.read(COLAB / name, as_version=4)
  # Jupyter's and IPython's own state (connection files, history) stays in
  # the test's tmp dir.
  env = dict(os.environ, **env,
             MULTIMODAL_NOTEBOOK_SMOKE='1',
             JUPYTER_RUNTIME_DIR=str(tmp_path / 'jupyter_runtime'),
             IPYTHONDIR=str(tmp_path / 'ipython'),
             PYTHONPATH=os.pathsep.join(
                 p for p in (str(REPO), os.environ.get('PYTHONPATH')) if p))
  km = _kernel_manager(tmp_path)
  client = nbclient.NotebookClient(
      nb, km=km, timeout=CELL_TIMEOUT_S,
      resources={'metadata': {'path': str(REPO)}})
  start = time.perf_counter()
  try:
    client.execute(env=env)
  except CellExecutionError as e:
    # The message holds the failing cell's source and its traceback.
    pytest.fail(f'{name} failed:\n{e}', pytrace=False)
  finally:
    # The client leaves a kernel it did not start itself running.
    if km.has_kernel:
      km.shutdown_kernel(now=True)
    # The executed notebook, outputs and all, for a look after a failure.
    nbformat.write(nb, tmp_path / name)
  return nb, time.perf_counter() - start


def _outputs(nb, output_type=None):
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if output_type is None or out['output_type'] == output_type:
        yield out


def _text(nb) -> str:
  return ''.join(out.get('text', '') for out in _outputs(nb, 'stream'))


def _num_images(nb) -> int:
  return sum('image/png' in out.get('data', {})
             for out in _outputs(nb, 'display_data'))


def test_notebooks_are_committed_without_outputs():
  for path in sorted(COLAB.glob('*.ipynb')):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
      if cell.cell_type == 'code':
        assert not cell.outputs and cell.execution_count is None, (
            f'{path.name}: clear the outputs before committing')


def test_quickstart(digits_data_dir, tmp_path):
  workdir = tmp_path / 'workdir'
  nb, seconds = run_notebook('quickstart.ipynb', tmp_path, {
      'MULTIMODAL_DATA_DIR': digits_data_dir,
      'MULTIMODAL_NOTEBOOK_WORKDIR': str(workdir)})
  print(f'quickstart.ipynb ran in {seconds:.0f} s')
  text = _text(nb)
  assert 'smoke mode: True' in text
  assert 'Zero-shot accuracy (test split, step 24)' in text
  assert 'Loaded contrastive model from' in text
  assert 'Validation images vs text prompts:' in text and 'of 179' in text
  # Training really ran: a loss every 2 steps, then the final evaluation.
  history = [json.loads(line)
             for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [m['step'] for m in history if 'train/loss' in m] == list(
      range(2, 25, 2))
  assert json.loads((workdir / 'final_test.json').read_text())[
      'test/num_examples'] == 360
  # Curves, similarity matrices and digit thumbnails, shown and saved.
  assert _num_images(nb) == 3
  for png in ('training_curves.png', 'similarity.png'):
    assert (workdir / png).stat().st_size > 10_000


def test_tpu(digits_data_dir, tmp_path):
  workdir = tmp_path / 'workdir'
  nb, seconds = run_notebook('tpu.ipynb', tmp_path, {
      'MULTIMODAL_DATA_DIR': digits_data_dir,
      'MULTIMODAL_NOTEBOOK_WORKDIR': str(workdir)})
  print(f'tpu.ipynb ran in {seconds:.0f} s')
  text = _text(nb)
  # Without a TPU: 8 CPU devices on a 2 x 2 x 2 mesh, all three axes used.
  assert '8 x cpu (cpu)' in text
  assert "Mesh: {'data': 2, 'fsdp': 2, 'tensor': 2} (rules: fsdp_tensor)" in text
  assert 'parameter arrays are split' in text
  assert 'Restored step 6' in text
  assert 'on 8 devices' in text
  history = [json.loads(line)
             for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [m['step'] for m in history if 'train/loss' in m] == list(range(1, 7))
  final = json.loads((workdir / 'final_validation.json').read_text())
  assert final['validation/num_examples'] == 179


def test_finetune(digits_data_dir, tmp_path):
  workdir = tmp_path / 'workdir'
  nb, seconds = run_notebook('finetune.ipynb', tmp_path, {
      'MULTIMODAL_DATA_DIR': digits_data_dir,
      'MULTIMODAL_NOTEBOOK_WORKDIR': str(workdir)})
  print(f'finetune.ipynb ran in {seconds:.0f} s')
  text = _text(nb)
  # Smoke mode pretrains and exports its own tiny contrastive model.
  assert (workdir / 'contrastive_export' / 'model.safetensors').exists()
  assert 'init_from ' in text and 'parameter arrays' in text
  final = json.loads((workdir / 'vqa' / 'final_validation.json').read_text())
  assert 0 <= final['validation/exact_match/full/all'] <= 1
  assert 'of 20 answers right with both modalities' in text
  # Four records: each an HTML table (image and answers) and an audio player.
  html = [out['data']['text/html'] for out in _outputs(nb, 'display_data')
          if 'text/html' in out.get('data', {})]
  assert sum('data:image/png;base64' in h for h in html) == 4
  assert sum('<audio' in h for h in html) == 4
