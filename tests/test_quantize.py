"""INT8 exports (multimodal/quantize.py, qwix) and evaluating an export
(multimodal/evaluate.py)."""
import json
import os
import pathlib
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

import multimodal
from multimodal import config_checks
from multimodal import evaluate as evaluate_lib
from multimodal import export as export_lib
from multimodal import pretrained
from multimodal import quantize
from multimodal import train
from multimodal import tree as tree_lib
from multimodal.models import build_model
from multimodal.models import generate

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures('fast_compiles')


@pytest.fixture(scope='module')
def trained(fast_compiles, digits_data_dir, tmp_path_factory):
  """A 2-step tiny contrastive run, its export and final test metrics."""
  from projects.digits.configs import contrastive  # pylint: disable=g-import-not-at-top
  config = contrastive.get_config('tiny')
  config.dataset.data_dir = digits_data_dir
  config.total_steps = config.checkpoint_every = 2
  config.input.validate_records = 0
  workdir = str(tmp_path_factory.mktemp('run'))
  final = train.train_and_evaluate(config, workdir)
  return export_lib.export(workdir, os.path.join(workdir, 'export')), final


@pytest.fixture(scope='module')
def source(tiny_exports):
  """The untrained tiny contrastive export: quantization needs no training
  (the trained run is for the evaluation tests alone)."""
  return tiny_exports['contrastive']


@pytest.fixture(scope='module')
def int8(source, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('q') / 'int8')
  return out, quantize.quantize_export(source, out)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  text = rng.integers(4, 320, size=(4, 24)).astype(np.int32)
  text[:, 10], text[:, 11:] = 3, 0
  return {'image': rng.uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32),
          'audio': rng.normal(size=(4, 96, 64)).astype(np.float32),
          'image_text': text}


@jax.jit
def _embed(model, batch):
  return model(batch)


def test_int8_export_is_complete_smaller_and_recorded(source, int8):
  src, (out, record) = source, int8
  for name in quantize.COPIED:
    assert open(os.path.join(out, name), 'rb').read() == open(
        os.path.join(src, name), 'rb').read()
  float_flat = tree_lib.flatten(pretrained.read_params(src))
  kernels = [k for k in float_flat if k.endswith('/kernel')]
  on_disk = json.load(open(os.path.join(out, 'quantization.json')))
  assert on_disk == json.loads(json.dumps(record))
  assert record['qtype'] == 'int8' and record['library'].startswith('qwix')
  # Every Linear / LinearGeneral kernel (attention, MLP, patch stems,
  # projection heads) is quantized; nothing else is.
  assert sorted(record['quantized']) == sorted(kernels)
  assert set(record['kept_float']) == set(float_flat) - set(kernels)
  stored = safetensors.numpy.load_file(os.path.join(out, 'model.safetensors'))
  for key, info in record['quantized'].items():
    q, s = stored[f'{key}/array/qvalue'], stored[f'{key}/array/scale']
    assert q.dtype == np.int8 and list(q.shape) == info['shape']
    # One scale per output channel: contracted (input) axes collapse to 1.
    w = float_flat[key]
    n_in = 1 if 'attn/out' not in key else 2
    assert s.shape == (1,) * n_in + w.shape[n_in:] == tuple(
        info['scale_shape'])
    # absmax: qwix maps each output channel's largest |weight| to 127.5
    # (rounded and clipped into [-128, 127]).
    np.testing.assert_allclose(
        s.reshape(-1), np.abs(w).reshape(-1, s.size).max(0) / 127.5,
        rtol=1e-6)
    assert np.abs(q.astype(np.float32) * s - w).max() <= 0.5 * s.max() + 1e-7
  for key in record['kept_float']:
    np.testing.assert_array_equal(stored[key], float_flat[key])
  b = record['bytes']
  assert b['disk_params'] < 0.75 * b['disk_float_params']
  assert b['disk_safetensors'] < 0.5 * b['disk_float_safetensors']
  assert b['disk_safetensors'] == os.path.getsize(
      os.path.join(out, 'model.safetensors'))
  assert 'INT8 weights' in open(os.path.join(out, 'README.md')).read()


def test_int8_model_runs_int8_weights_close_to_float(source, int8):
  src, (out, record) = source, int8
  loaded = multimodal.load_pretrained(out)
  assert loaded.quantization == record
  model = loaded.build_model()
  fc1 = model.towers['image'].core.encoder.blocks[0].mlp.fc1
  assert fc1.kernel.array.qvalue.value.dtype == jnp.int8  # held as int8
  batch = _inputs()
  got = _embed(model, batch)
  want = _embed(pretrained.load_pretrained(src).build_model(), batch)
  # Against the float model: per-channel int8 rounds each weight by at most
  # half a step (absmax / 255 of its channel); over these few layers that
  # moved the unit-norm embeddings by < 0.01 (measured 0.005-0.006), so
  # 0.03 leaves room for other seeds and still fails a wrong scale axis.
  for f in batch:
    diff = np.abs(np.asarray(got[f]) - np.asarray(want[f])).max()
    assert 0 < diff < 0.03, (f, diff)
  # Against float weights equal to qvalue * scale: the same function up to
  # float rounding, which shows the model computes with the stored int8.
  deq = pretrained.model_with_params(
      loaded.model_config, quantize.dequantize_params(loaded.params),
      where='dequantized')
  ref = _embed(deq, batch)
  for f in batch:
    np.testing.assert_allclose(got[f], ref[f], atol=2e-6)


def test_include_and_exclude_select_kernels(source, tmp_path):
  src = source
  record = quantize.quantize_export(src, str(tmp_path / 'q'),
                                    include=['^towers/image/'],
                                    exclude=['attn/(query|key)'])
  quantized = set(record['quantized'])
  assert quantized and all(k.startswith('towers/image/') for k in quantized)
  assert not any('attn/query' in k or 'attn/key' in k for k in quantized)
  assert any('attn/value' in k for k in quantized)
  reasons = record['kept_float']
  assert reasons['heads/text/kernel'] == 'matched no --include'
  assert reasons[
      'towers/image/core/encoder/blocks/0/attn/query/kernel'] == (
          'matched --exclude')
  model = multimodal.load_pretrained(str(tmp_path / 'q')).build_model()
  batch = _inputs(1)
  got = _embed(model, batch)
  want = _embed(pretrained.load_pretrained(src).build_model(), batch)
  # Text and audio towers untouched: their embeddings are bit for bit the
  # float model's; the image tower's are not.
  for f in ('image_text', 'audio'):
    np.testing.assert_array_equal(got[f], want[f])
  assert np.abs(np.asarray(got['image']) - np.asarray(want['image'])).max() > 0


def test_clear_errors(source, int8, tmp_path):
  src, (out, _) = source, int8
  with pytest.raises(FileNotFoundError, match='is not an export'):
    quantize.quantize_export(str(tmp_path / 'nothing'), str(tmp_path / 'a'))
  with pytest.raises(quantize.QuantizationError, match="qtype 'int3'.*int8"):
    quantize.quantize_export(src, str(tmp_path / 'b'), qtype='int3')
  with pytest.raises(quantize.QuantizationError, match='already quantized'):
    quantize.quantize_export(out, str(tmp_path / 'c'))
  with pytest.raises(FileExistsError, match='exists'):
    quantize.quantize_export(src, out)
  with pytest.raises(quantize.QuantizationError, match='select none'):
    quantize.quantize_export(src, str(tmp_path / 'd'), include=['^nope/'])
  with pytest.raises(quantize.QuantizationError, match='not a valid regex'):
    quantize.quantize_export(src, str(tmp_path / 'e'), exclude=['attn('])
  assert not os.listdir(tmp_path)  # no half-written export left behind
  cfg = multimodal.load_pretrained(src).config
  cfg.init_from.path = out
  with pytest.raises(ValueError, match='quantized export'):
    pretrained.init_from(cfg.init_from, cfg.model, None)
  with pytest.raises(config_checks.ConfigError,
                     match='init_from.path.*is a quantized export'):
    config_checks.check(cfg)


def test_cli_quantizes_and_reports_errors(source, tmp_path):
  cmd = [sys.executable, '-m', 'multimodal.quantize', '--pretrained',
         source, '--out', str(tmp_path / 'q'),
         '--include', 'encoder/blocks/0/mlp', '--include', '^heads/']
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'Quantized 9 weight matrices to int8' in proc.stdout
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'exists' in proc.stderr


def test_scanned_layers_are_refused_clearly(tiny_config):
  config = tiny_config.model
  for t in config.towers.values():
    t.scan_layers = True
  # Refused from the model's structure, before any parameter is read.
  with pytest.raises(quantize.QuantizationError, match='scan_layers'):
    quantize.quantize_params({}, config)


def test_encoder_decoder_generates_with_int8_weights(vqa_tiny_config):
  """Encoding and cached greedy decoding (the decoder's own methods, not the
  model's __call__) run through the quantized modules."""
  config = vqa_tiny_config.model
  params = nnx.to_pure_dict(nnx.state(
      build_model(config, rngs=nnx.Rngs(0)), nnx.Param))
  qparams, record = quantize.quantize_params(params, config)
  assert any(k.startswith('decoder/') for k in record['quantized'])
  model = quantize.build_model(config, qparams, record, where='test')
  deq = pretrained.model_with_params(
      config, quantize.dequantize_params(qparams), where='dequantized')
  rng = np.random.default_rng(0)
  media = {'image': rng.uniform(-1, 1, (2, 16, 16, 1)).astype(np.float32),
           'audio': rng.normal(size=(2, 96, 64)).astype(np.float32)}
  prompt = np.full((2, 3), 2, np.int32)

  @jax.jit
  def run(model):
    memory, mask = model.encode(media)
    return generate.greedy(model.decoder, prompt, memory=memory,
                           memory_mask=mask, max_new_tokens=4, eos_id=3,
                           pad_id=0, return_logits=True)

  got, want = run(model), run(deq)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_allclose(got.logits, want.logits, atol=1e-4)


def test_evaluate_reproduces_the_trainers_final_metrics(trained, tmp_path):
  export, final = trained
  assert evaluate_lib.evaluate_pretrained(export) == final
  int8_export = str(tmp_path / 'int8')
  quantize.quantize_export(export, int8_export)
  got = evaluate_lib.evaluate_pretrained(int8_export)
  assert set(got) == set(final) and got != final
  for k in got:
    if 'zeroshot' in k:
      assert abs(got[k] - final[k]) <= 0.05, k

  # The command line, with an override of the recorded config and a typo
  # (in this test: the trained run is built once per test worker).
  out = tmp_path / 'metrics.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'multimodal.evaluate', '--pretrained',
       trained[0], '--config.eval_batch_size=24', f'--out={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  metrics = json.loads(out.read_text())
  assert metrics == pytest.approx(trained[1], abs=1e-6)  # another batching
  assert f'test/zeroshot/image: {metrics["test/zeroshot/image"]:.4f}' in (
      proc.stdout)
  proc = subprocess.run(
      [sys.executable, '-m', 'multimodal.evaluate', '--pretrained',
       trained[0], '--config.eval_bach_size=24'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert 'Did you mean "eval_batch_size"' in proc.stderr


def test_benchmark_prints_the_float_and_int8_rows(source, int8, tmp_path):
  # The INT8 export is taken from --int8_root when it is there.
  root = os.path.dirname(int8[0])
  os.symlink(int8[0], os.path.join(root, 'export'))
  out = tmp_path / 'bench.json'
  proc = subprocess.run(
      [sys.executable, 'benchmarks/quantize.py', '--exports', source,
       '--int8_root', root, '--batch', '8', '--repeats', '1',
       '--no_accuracy', '--json', str(out)],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(out.read_text())
  assert [r['int8'] for r in rows] == [False, True]
  fp, q = rows
  for key in ('disk_params', 'disk_safetensors', 'weights_bytes',
              'xla_argument_bytes'):
    assert 0 < q[key] < fp[key], key
  for r in rows:
    assert r['batch'] == 8 and r['latency_s'] > 0
    assert r['rss_peak'] >= r['rss_loaded'] > 0
  assert '| export | weights |' in proc.stdout, proc.stdout
  assert '| int8 |' in proc.stdout and '| float32 |' in proc.stdout, proc.stdout
