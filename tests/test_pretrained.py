"""Export, load_pretrained, init_from (another image size, another mesh),
freezing and per-group learning rates."""
import json
import os
import pathlib
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest
import safetensors.numpy

import multimodal
from multimodal import export as export_lib
from multimodal import optimizer as optim_lib
from multimodal import pretrained
from multimodal import train
from multimodal import tree as tree_lib
from multimodal.models import build_model

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tiny(data_dir):
  from projects.digits.configs import contrastive  # pylint: disable=g-import-not-at-top
  config = contrastive.get_config('tiny')
  config.dataset.data_dir = data_dir
  return config


@pytest.fixture(scope='module')
def trained(digits_data_dir, tmp_path_factory):
  """A tiny contrastive run (6 steps, checkpoints at 3 and 6) and its export."""
  workdir = str(tmp_path_factory.mktemp('run'))
  final = train.train_and_evaluate(_tiny(digits_data_dir), workdir)
  out = export_lib.export(workdir, os.path.join(workdir, 'export'))
  return workdir, out, final


def _inputs(seed=0, image_size=16):
  rng = np.random.default_rng(seed)
  text = rng.integers(4, 320, size=(4, 24)).astype(np.int32)
  text[:, 10], text[:, 11:] = 3, 0
  return {'image': rng.uniform(-1, 1, (4, image_size, image_size, 1)
                               ).astype(np.float32),
          'audio': rng.normal(size=(4, 96, 64)).astype(np.float32),
          'image_text': text}


def _embed(model, batch):
  return {f: np.asarray(model.embed(f, jnp.asarray(x)))
          for f, x in batch.items()}


def test_export_holds_everything_to_reuse_the_model(trained):
  workdir, out, final = trained
  names = set(os.listdir(out))
  assert {'params', 'model.safetensors', 'model.json', 'config.json',
          'preprocess.json', 'tokenizer.model', 'metrics.json',
          'README.md'} <= names
  metrics = json.load(open(os.path.join(out, 'metrics.json')))
  assert metrics['test/zeroshot/image'] == pytest.approx(
      final['test/zeroshot/image'])
  assert 'step 6' in open(os.path.join(out, 'README.md')).read()
  pre = json.load(open(os.path.join(out, 'preprocess.json')))
  assert pre['image']['size'] == 16 and pre['audio']['log_mel'][
      'num_mels'] == 64

  # The export's parameters are the checkpoint's, in both formats.
  ckpt = tree_lib.flatten(pretrained.read_params(workdir))
  exported = tree_lib.flatten(pretrained.read_params(out))
  tensors = safetensors.numpy.load_file(os.path.join(out,
                                                     'model.safetensors'))
  assert set(ckpt) == set(exported) == set(tensors)
  for k in ckpt:
    np.testing.assert_array_equal(ckpt[k], exported[k])
    np.testing.assert_array_equal(ckpt[k], tensors[k])

  with pytest.raises(FileExistsError, match='choose a new --out'):
    export_lib.export(workdir, out)
  with pytest.raises(FileNotFoundError, match=r'has steps \[3, 6\]'):
    export_lib.export(workdir, out + '_x', step=5)


def test_loaded_export_computes_what_the_trained_model_did(trained):
  workdir, out, _ = trained
  loaded = multimodal.load_pretrained(out)
  model = loaded.build_model()
  config = _tiny('unused')
  reference = nnx.eval_shape(lambda: train.build_model(
      config.model, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(reference, nnx.Param)
  nnx.replace_by_pure_dict(state, pretrained.read_params(workdir))
  reference = nnx.merge(graphdef, state)
  batch = _inputs()
  got, want = _embed(model, batch), _embed(reference, batch)
  for f in batch:
    np.testing.assert_array_equal(got[f], want[f])
  assert os.path.exists(loaded.tokenizer)
  assert loaded.config.task == 'contrastive'


SUBPROCESS = r'''
import json, sys
import jax, numpy as np
from flax import nnx
import multimodal
from multimodal import mesh as mesh_lib, pretrained, sharding
out, inputs, result = sys.argv[1:4]
mesh = mesh_lib.build_mesh(dict(data=1, fsdp=4, tensor=1))
rules = sharding.get_rules('fsdp', ())
model_config = json.load(open(out + '/model.json'))
abstract = pretrained.abstract_model(model_config)
shardings = sharding.param_shardings(nnx.state(abstract, nnx.Param), mesh,
                                     rules)
loaded = multimodal.load_pretrained(out, shardings=shardings)
leaf = loaded.params['towers']['text']['embed']['embedding']
model = loaded.build_model()
batch = dict(np.load(inputs))
with jax.set_mesh(mesh):
  emb = {f: np.asarray(model.embed(f, jax.numpy.asarray(x)))
         for f, x in batch.items()}
np.savez(result, **emb)
print(json.dumps({'devices': len(leaf.sharding.device_set),
                  'spec': str(leaf.sharding.spec)}))
'''


def test_export_loads_sharded_on_another_device_count(trained, tmp_path):
  _, out, _ = trained
  batch = _inputs(1)
  np.savez(tmp_path / 'inputs.npz', **batch)
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-c', SUBPROCESS, out, str(tmp_path / 'inputs.npz'),
       str(tmp_path / 'result.npz')], env=env, capture_output=True,
      text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  # The vocab table ('vocab', 'embed') is split over the 4 fsdp devices.
  assert report['devices'] == 4 and 'fsdp' in report['spec'], report
  want = _embed(multimodal.load_pretrained(out).build_model(), batch)
  got = np.load(tmp_path / 'result.npz')
  for f in batch:
    np.testing.assert_allclose(got[f], want[f], atol=2e-5)


def test_init_from_resamples_positions_and_finetunes(trained, tmp_path,
                                                    digits_data_dir):
  _, out, _ = trained
  config = _tiny(digits_data_dir)
  config.input.image_size = 32
  config.model.towers.image.image_size = 32  # 8x8 patches instead of 4x4
  config.init_from.path = out
  config.init_from.exclude = ('^towers/image/',)
  config.init_from.include = ('^towers/', '^heads/')
  tx = optim_lib.make_optimizer(config.optimizer, config.total_steps)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  ts = train.make_train_state(config, tx, mesh)
  arrays = train.read_init_from(config, ts)
  assert not any(k.startswith('towers/image/') for k in arrays)

  # Now the image tower too: its position table is resampled 4x4 -> 8x8.
  config.init_from.exclude = ()
  arrays = train.read_init_from(config, ts)
  source = tree_lib.flatten(pretrained.read_params(out))
  posemb = 'towers/image/core/posemb/embedding'
  assert source[posemb].shape == (16, 32) and arrays[posemb].shape == (64, 32)
  grid = source[posemb].reshape(4, 4, 32)
  up = arrays[posemb].reshape(8, 8, 32)
  # Bilinear upsampling keeps the mean and the corners' neighbourhood.
  np.testing.assert_allclose(up.mean((0, 1)), grid.mean((0, 1)), atol=0.02)
  assert np.corrcoef(up[::2, ::2].ravel(), grid.ravel())[0, 1] > 0.9
  for k, v in arrays.items():
    if k != posemb:
      np.testing.assert_array_equal(v, source[k])

  # Text towers are unchanged, so text embeddings equal the export's (the
  # weights are bit-identical, checked above; the two models' arrays are
  # placed differently, on the mesh and not, and XLA's CPU kernels may
  # round the last bit differently: seen once in a full-suite run).
  state = train.init_state(ts)
  state = train.place_init_from(arrays, ts, state)
  model = nnx.merge(ts.graphdef, state['params'])
  exported = multimodal.load_pretrained(out).build_model()
  text = _inputs()['image_text']
  np.testing.assert_allclose(
      rtol=0, atol=1e-6,
      actual=np.asarray(model.embed('image_text', jnp.asarray(text))),
      desired=np.asarray(exported.embed('image_text', jnp.asarray(text))))

  # And the whole run trains from there, with the image tower locked (LiT).
  config.total_steps = 4
  config.checkpoint_every = 1000
  config.optimizer.frozen = ('^towers/image/',)
  final = train.train_and_evaluate(config, str(tmp_path / 'ft'))
  assert 0.0 <= final['test/zeroshot/image'] <= 1.0
  tuned = tree_lib.flatten(pretrained.read_params(str(tmp_path / 'ft')))
  moved = [k for k in arrays if not np.array_equal(tuned[k], arrays[k])]
  assert moved and all(not k.startswith('towers/image/') for k in moved)
  assert any(k.startswith('towers/text/') for k in moved)


def test_init_from_names_every_problem(trained):
  _, out, _ = trained
  source = tree_lib.flatten(pretrained.read_params(out))
  target = dict(source)
  del target['heads/image/kernel']  # the source has it: unexpected
  target['towers/new/kernel'] = np.zeros((2, 2))  # missing in source
  target['heads/audio/kernel'] = np.zeros((3, 3))  # another shape
  with pytest.raises(ValueError) as err:
    pretrained.select_params(target, source, where='EXPORT')
  msg = str(err.value)
  assert 'init_from EXPORT does not fit the model' in msg
  assert '1 missing' in msg and 'towers/new/kernel' in msg
  assert '1 unexpected' in msg and 'heads/image/kernel' in msg
  assert 'heads/audio/kernel: (32, 32) -> (3, 3)' in msg
  # Renaming and narrowing fix it.
  got, _ = pretrained.select_params(
      {'heads/picture/kernel': np.zeros((32, 32))}, source,
      include=('^heads/picture/',), rename=(('^heads/image/',
                                             'heads/picture/'),))
  np.testing.assert_array_equal(got['heads/picture/kernel'],
                                source['heads/image/kernel'])
  with pytest.raises(ValueError, match='select no parameter'):
    pretrained.select_params(target, source, include=('^nothing',))
  with pytest.raises(FileNotFoundError, match='expected an export'):
    pretrained.read_params('/nonexistent/export')


def test_scan_layers_layouts_load_and_mismatch_clearly():
  """Stacked (scan_layers) parameters load into a stacked model; either
  layout into the other is refused, naming scan_layers."""
  def config(scan):
    return dict(name='encoder_decoder', width=16,
                towers=dict(image=dict(name='vit', image_size=8, patch_size=4,
                                       channels=1, width=16, depth=2,
                                       num_heads=2, pool='mean',
                                       scan_layers=scan)),
                decoder=dict(name='text_decoder', vocab_size=11, max_len=6,
                             width=16, depth=2, num_heads=2,
                             scan_layers=scan))

  def params(scan):
    model = nnx.eval_shape(lambda: build_model(
        config(scan), rngs=nnx.Rngs(0)))
    return jax.tree.map(lambda v: np.zeros(v.shape, v.dtype),
                        nnx.to_pure_dict(nnx.state(model, nnx.Param)))

  stacked = params(True)
  assert stacked['decoder']['blocks']['mlp']['fc1']['kernel'].shape == (
      2, 16, 64)
  model = pretrained.model_with_params(config(True), stacked, where='X')
  assert model.decoder.scan_layers
  with pytest.raises(ValueError) as err:
    pretrained.model_with_params(config(True), params(False), where='X')
  assert ('decoder/blocks, towers/image/core/encoder/blocks: the source '
          'holds them per layer, the model stacked (scan_layers=True)'
          ) in str(err.value)
  with pytest.raises(ValueError, match=r'stacked, the model per layer '
                     r'\(scan_layers=False\)'):
    pretrained.select_params(tree_lib.flatten(params(False)),
                             tree_lib.flatten(stacked), where='X')


def test_init_from_inflates_an_image_tower_into_a_video_tower(tmp_path):
  from multimodal.testing import exports  # pylint: disable=g-import-not-at-top
  from projects.digits.configs import contrastive  # pylint: disable=g-import-not-at-top
  out = exports.untrained_export(contrastive.get_config('tiny'),
                                 str(tmp_path / 'image'))
  exported = multimodal.load_pretrained(out).build_model()
  frames = _inputs()['image']  # [4, 16, 16, 1]
  want = np.asarray(exported.embed('image', jnp.asarray(frames)))
  clips = np.repeat(frames[:, None], 4, axis=1)  # identical frames
  moving = clips.copy()
  moving[:, 2:] = frames[::-1, None]
  source = tree_lib.flatten(pretrained.read_params(out))
  source = source['towers/image/core/embed/kernel']  # [4*4*1, 32]
  for attention, inflate in (('factorised', 'average'),
                             ('joint', 'center')):
    # The same model with a video tower (4 frames, tubelets of 2) where the
    # image tower was (its pool: 'map'), initialised from the image export.
    config = contrastive.get_config('tiny')
    towers = config.model.towers.to_dict()
    towers['video'] = dict(towers.pop('image'), name='vivit', num_frames=4,
                           tubelet_time=2, attention=attention)
    config.model.towers = towers
    config.model.inputs = dict(video='video', audio='audio',
                               image_text='text', audio_text='text')
    config.model.pairs = (('video', 'image_text'), ('audio', 'audio_text'))
    config.init_from.update(
        path=out, rename=(('^(towers|heads)/image/', r'\1/video/'),),
        exclude=('/temporal',),  # new parameters: identity-initialised
        include=('^towers/', '^heads/'), inflate=inflate)
    model = build_model(config.model, rngs=nnx.Rngs(1))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    arrays, notes = pretrained.init_from(config.init_from, config.model,
                                         params)
    assert any('inflated' in n for n in notes), notes
    kernel = arrays['towers/video/core/embed/kernel'].reshape(16, 2, 1, 32)
    if inflate == 'average':
      np.testing.assert_allclose(kernel.sum(1)[:, 0], source, rtol=1e-6)
    else:
      np.testing.assert_array_equal(kernel[:, 1, 0], source)
      np.testing.assert_array_equal(kernel[:, 0], 0)
    flat = tree_lib.flatten(params)
    flat.update(arrays)
    model = pretrained.model_with_params(
        config.model, tree_lib.unflatten_like(flat, params), where=out)
    got = np.asarray(model.embed('video', jnp.asarray(clips)))
    np.testing.assert_allclose(got, want, atol=1e-6, err_msg=attention)
    # A clip that moves is not the image: the tower does see every frame.
    assert np.abs(np.asarray(model.embed('video', jnp.asarray(moving)))
                  - want).max() > 1e-3


def test_resample_posemb_cases():
  table = np.arange(12, dtype=np.float32).reshape(12, 1)
  np.testing.assert_array_equal(pretrained.resample_posemb(
      table, (3, 4), (3, 4)), table)
  # A class-token row in front is kept as is.
  with_cls = np.concatenate([[[-5.0]], table]).astype(np.float32)
  out = pretrained.resample_posemb(with_cls, (3, 4), (6, 8))
  assert out.shape == (49, 1) and out[0, 0] == -5.0
  np.testing.assert_array_equal(
      pretrained.resample_posemb(table, (12,), (5,)), table[:5])
  with pytest.raises(ValueError, match='Cannot lengthen'):
    pretrained.resample_posemb(table, (12,), (20,))


def _params():
  return {'towers': {'image': {'w': jnp.ones((3, 3)), 'b': jnp.ones((3,))},
                     'text': {'w': jnp.ones((3, 3))}},
          'head': {'w': jnp.ones((3, 3))}}


def _opt_cfg(**kw):
  return mlc.ConfigDict(dict(name='adamw', lr=0.1, b1=0.9, b2=0.95,
                             weight_decay=0.0, warmup_steps=0, clip_norm=1.0,
                             final_fraction=1.0, **kw))


def test_frozen_parameters_do_not_move_and_hold_no_state():
  cfg = _opt_cfg(frozen=('^towers/image/',), lr_mults=(('^towers/text/',
                                                        0.1),))
  tx = optim_lib.make_optimizer(cfg, 10)
  params = _params()
  state = tx.init(params)
  # Adam's moments exist for the trainable leaves only.
  moments = [x for x in jax.tree.leaves(state) if getattr(x, 'ndim', 0) > 0]
  assert sum(m.size for m in moments) == 2 * (9 + 9)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  updates, _ = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  for leaf in jax.tree.leaves(new['towers']['image']):
    np.testing.assert_array_equal(leaf, 1.0)
  head_step = 1.0 - new['head']['w']
  text_step = 1.0 - new['towers']['text']['w']
  # First Adam step moves by ~lr per unit gradient; text at 0.1x of that.
  np.testing.assert_allclose(head_step, 0.1, rtol=1e-3)
  np.testing.assert_allclose(text_step, 0.01, rtol=1e-3)
  assert optim_lib.group_sizes(cfg, params) == {
      'frozen': 12, 'lr x0.1': 9, 'lr x1': 9}



def test_probe_reads_tower_features_of_an_export(trained, digits_data_dir):
  from multimodal import probe  # pylint: disable=g-import-not-at-top
  _, out, _ = trained
  # The test split as both pool and evaluation set keeps this quick; the
  # CLI uses train -> test.
  result = probe.probe(out, digits_data_dir, shots=(1, 5), repeats=2,
                       train_split='test', test_split='test')
  assert set(result) == {'image/1shot', 'image/5shot', 'audio/1shot',
                         'audio/5shot'}
  assert all(0.0 <= v <= 1.0 for v in result.values())
