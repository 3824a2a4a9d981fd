"""Mesh construction errors, command-line config errors, and the model
switches (dtype, remat, scan_layers) every experiment config exposes."""
import importlib
import pathlib
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import pytest

from multimodal import mesh as mesh_lib
from multimodal.models import build_model

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_axis_sizes_fill_and_errors():
  assert mesh_lib.axis_sizes(dict(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
  with pytest.raises(ValueError, match='needs 6 devices but JAX sees 8'):
    mesh_lib.axis_sizes(dict(data=3, fsdp=2, tensor=1), 8)
  with pytest.raises(ValueError, match='does not divide 8'):
    mesh_lib.axis_sizes(dict(data=-1, fsdp=3), 8)
  with pytest.raises(ValueError, match='Unknown mesh axes'):
    mesh_lib.axis_sizes(dict(model=2), 8)


def test_build_mesh_single_device_and_batch_check():
  mesh = mesh_lib.build_mesh(dict(data=-1, fsdp=1, tensor=1))
  assert dict(mesh.shape) == {'data': jax.device_count(), 'fsdp': 1,
                              'tensor': 1}
  mesh_lib.check_batch_size(8 * jax.device_count(), mesh)


def _fake_devices(n, per_slice, tpu):
  from types import SimpleNamespace  # pylint: disable=g-import-not-at-top
  devices = []
  for i in range(n):
    d = SimpleNamespace(id=i, process_index=i // per_slice, platform='cpu',
                        device_kind='cpu')
    if tpu:
      d.slice_index = i // per_slice
    devices.append(d)
  return devices


@pytest.mark.parametrize('tpu', [True, False])
def test_hybrid_mesh_keeps_dcn_axes_across_slices(tpu):
  devices = _fake_devices(16, 8, tpu)
  grid = mesh_lib.device_grid(dict(data=1, fsdp=-1, tensor=2, dcn_data=2),
                              devices)
  assert grid.shape == (2, 4, 2)
  for i in range(2):  # each data index is one whole slice
    assert {d.process_index for d in grid[i].flat} == {i}
  with pytest.raises(ValueError, match='need 4 slices but the devices come '
                     'from 2'):
    mesh_lib.device_grid(dict(data=-1, dcn_data=2, dcn_fsdp=2), devices)
  with pytest.raises(ValueError, match='does not divide 16 devices'):
    mesh_lib.device_grid(dict(data=-1, dcn_data=3), devices)


@pytest.mark.parametrize('flag,message', [
    ('--config.totl_steps=3', 'Unknown config key \'totl_steps\''),
    ('--config.optimizer.lrr=3', 'Did you mean "lr"'),
    ('--config.total_steps=abc', 'invalid literal'),
])
def test_bad_config_flags_exit_with_one_clear_line(tmp_path, flag, message):
  proc = subprocess.run(
      [sys.executable, '-m', 'multimodal.train',
       '--config=projects/digits/configs/contrastive.py:tiny',
       f'--workdir={tmp_path}', flag], capture_output=True, text=True,
      timeout=120, cwd=REPO)
  assert proc.returncode == 2
  assert message in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_unknown_variant_is_named(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'multimodal.train',
       '--config=projects/digits/configs/contrastive.py:huge',
       f'--workdir={tmp_path}'], capture_output=True, text=True, timeout=120,
      cwd=REPO)
  assert proc.returncode == 2 and "Unknown variant 'huge'" in proc.stderr


# Every experiment config with a model, as (module, variant).
MODEL_CONFIGS = [
    ('experiments.image_text', 'siglip,tiny'),
    ('experiments.image_text', 'clip,tiny'),
    ('experiments.image_text', 'caption,tiny'),
    ('experiments.speech_text', 'siglip,tiny'),
    ('experiments.speech_text', 'asr,tiny'),
    ('experiments.public_datasets', 'clevr'),
    ('experiments.public_datasets', 'coco_captions'),
    ('experiments.public_datasets', 'librispeech'),
    ('projects.digits.configs.contrastive', 'tiny'),
    ('projects.digits.configs.captioning', 'tiny'),
    ('projects.digits.configs.vqa', 'tiny,perceiver'),
]


@pytest.mark.parametrize('module,variant', MODEL_CONFIGS)
def test_model_switches_reach_every_part(module, variant):
  """--config.model.dtype=bfloat16 (with one tower kept in float32), and the
  towers' and decoder's remat/scan_layers, set as the command line sets
  them: on the locked config, so the keys must exist."""
  from multimodal.models.transformer import Encoder  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(module).get_config(variant)
  config.lock()
  config.model.dtype = 'bfloat16'
  kept = sorted(config.model.towers)[0]
  config.model.towers[kept].dtype = 'float32'
  for tower in config.model.towers.values():
    tower.remat, tower.scan_layers = 'dots', True
  if 'decoder' in config.model:
    config.model.decoder.remat = 'full'
    config.model.decoder.scan_layers = True
  model = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
  assert {v.dtype for v in jax.tree.leaves(nnx.state(model, nnx.Param))} == {
      jnp.dtype('float32')}
  layers = (nnx.Linear, nnx.LinearGeneral, nnx.LayerNorm, nnx.Embed)
  for path, node in nnx.iter_graph(model):
    if isinstance(node, layers):
      want = 'float32' if path[:2] == ('towers', kept) else 'bfloat16'
      assert jnp.dtype(node.dtype) == want, path
  encoders = [n for _, n in nnx.iter_graph(model) if isinstance(n, Encoder)]
  assert len(encoders) >= len(config.model.towers)
  assert all(e.remat == 'dots' and e.scan_layers for e in encoders)
  if 'decoder' in config.model:
    assert model.decoder.remat == 'full' and model.decoder.scan_layers
