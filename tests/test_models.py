"""Tests for multimodal.models: shapes, dtypes, masking, sharding names.

Small-model tests on CPU are dominated by compilation, so shape/dtype checks
trace abstractly (no compilation) and numeric checks run eagerly on models
of one size: eager ops are compiled once per shape and then shared by every
model, where jit would compile each model afresh.
"""
import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from multimodal import losses
from multimodal import registry
from multimodal.models import LOGICAL_AXES, build_model
from multimodal.models import sizes
from multimodal.models.attention import MultiHeadAttention

P = jax.sharding.PartitionSpec
TINY = dict(width=32, depth=1, num_heads=2, mlp_ratio=2)
B = 3
DEFAULTS = {
    'vit': dict(image_size=8, patch_size=4, channels=2),
    # Non-square (time, freq) patches: a [16, 8] spectrogram -> 2 x 2 grid.
    'audio_transformer': dict(num_frames=16, num_mels=8, patch_size=(8, 4)),
    'text_transformer': dict(vocab_size=50, max_len=12),
}
INPUTS = {
    'vit': jnp.ones((B, 8, 8, 2)),
    'audio_transformer': jnp.ones((B, 16, 8)),
}
RULES = (('embed', 'fsdp'), ('mlp', 'tensor'), ('heads', 'tensor'),
         ('kv', None), ('vocab', 'tensor'), ('patch', None), ('pos', None),
         ('norm', None), ('proj', None))


pytestmark = pytest.mark.usefixtures('fast_compiles')


def _tokens():
  # Right-padded with 0; the last real token of each row is its "eos" (49).
  return jnp.array([[5, 6, 7, 49, 0, 0, 0, 0],
                    [8, 49, 0, 0, 0, 0, 0, 0],
                    [1, 2, 3, 4, 5, 6, 7, 49]], jnp.int32)


def _config(name, **kw):
  return dict(TINY, name=name, **{**DEFAULTS[name], **kw})


@functools.lru_cache(maxsize=None)
def _cached(name, items):
  return build_model(_config(name, **dict(items)), rngs=nnx.Rngs(0))


def _model(name, **kw):
  """A built (cached, so never mutate it) model of tiny size."""
  return _cached(name, tuple(sorted(kw.items())))


def _apply(model, inputs, deterministic=True):
  return model(inputs, deterministic=deterministic)


def _abstract(name, inputs, **kw):
  """(abstract model, abstract outputs), traced without compiling."""
  config = _config(name, **kw)
  model = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, inputs)
  return model, out


def _params(model):
  return jax.tree.leaves(nnx.state(model, nnx.Param))


# ------------------------------------------------------------- shapes ---


@pytest.mark.parametrize('posemb', ['learned', 'sincos2d'])
@pytest.mark.parametrize('pool', ['cls', 'mean', 'map'])
@pytest.mark.parametrize('name', ['vit', 'audio_transformer'])
def test_patch_tower_shapes(name, pool, posemb):
  _, (pooled, tokens) = _abstract(name, INPUTS[name], pool=pool,
                                  posemb=posemb)
  assert pooled.shape == (B, 32) and pooled.dtype == jnp.float32
  assert tokens.shape == (B, 4, 32) and tokens.dtype == jnp.float32


@pytest.mark.parametrize('posemb', ['learned', 'sincos1d'])
@pytest.mark.parametrize('pool', ['eos', 'last', 'first', 'mean', 'map'])
def test_text_shapes(pool, posemb):
  _, (pooled, tokens) = _abstract('text_transformer', _tokens(), pool=pool,
                                  posemb=posemb)
  assert pooled.shape == (B, 32) and pooled.dtype == jnp.float32
  assert tokens.shape == (B, 8, 32) and tokens.dtype == jnp.float32


@pytest.mark.parametrize('name', ['vit', 'audio_transformer',
                                  'text_transformer'])
def test_bfloat16_compute_float32_params(name):
  inputs = INPUTS.get(name, _tokens())
  model, (pooled, tokens) = _abstract(name, inputs, dtype=jnp.bfloat16,
                                      pool='map')
  assert tokens.dtype == jnp.bfloat16 and pooled.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in _params(model))
  model, _ = _abstract(name, inputs, param_dtype=jnp.bfloat16)
  assert all(p.dtype == jnp.bfloat16 for p in _params(model))


def test_bad_configs_are_clear_errors():
  with pytest.raises(ValueError, match='Expected inputs'):
    _abstract('vit', jnp.ones((B, 16, 16, 2)))
  with pytest.raises(ValueError, match='divides exactly'):
    _abstract('audio_transformer', INPUTS['audio_transformer'], num_frames=15)
  with pytest.raises(ValueError, match='pool'):
    _abstract('text_transformer', _tokens(), pool='cls')
  with pytest.raises(ValueError, match='activation'):
    _abstract('text_transformer', _tokens(), activation='relu6')
  with pytest.raises(ValueError, match='attention_impl'):
    MultiHeadAttention(16, 4, attention_impl='flash', rngs=nnx.Rngs(0))


@pytest.mark.parametrize('activation', ['gelu', 'gelu_tanh', 'quick_gelu'])
def test_activations(activation):
  _abstract('text_transformer', _tokens(), activation=activation)


def test_cross_attention_shape():
  attn = nnx.eval_shape(lambda: MultiHeadAttention(16, 4, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(attn)
  out = jax.eval_shape(
      lambda s, x, c, m: nnx.merge(graphdef, s)(x, context=c, mask=m), state,
      jnp.ones((2, 3, 16)), jnp.ones((2, 5, 16)), jnp.ones((2, 1, 3, 5), bool))
  assert out.shape == (2, 3, 16)


# ------------------------------------------------------------ numbers ---


@pytest.mark.parametrize('name,pool', [('vit', 'cls'),
                                       ('audio_transformer', 'map')])
def test_patch_towers_run(name, pool):
  pooled, tokens = _apply(_model(name, pool=pool), INPUTS[name])
  assert pooled.shape == (B, 32) and tokens.shape == (B, 4, 32)
  assert np.all(np.isfinite(pooled)) and np.all(np.isfinite(tokens))


def test_bfloat16_runs():
  pooled, tokens = _apply(_model('text_transformer', dtype=jnp.bfloat16,
                                 pool='mean'), _tokens())
  assert tokens.dtype == jnp.bfloat16 and pooled.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(pooled, np.float32)))


def test_text_eos_pools_last_non_pad_token():
  pooled, tokens = _apply(_model('text_transformer', pool='eos'), _tokens())
  last = np.array([3, 1, 7])
  np.testing.assert_array_equal(pooled,
                                np.asarray(tokens)[np.arange(B), last])


@pytest.mark.parametrize('pool,causal', [('eos', False), ('mean', True),
                                         ('map', False), ('first', True)])
def test_text_padding_does_not_change_outputs(pool, causal):
  model = _model('text_transformer', pool=pool, causal=causal)
  short = _tokens()
  longer = jnp.pad(short, ((0, 0), (0, 4)))  # 4 more pad tokens
  pooled_short, tokens_short = _apply(model, short)
  pooled_long, tokens_long = _apply(model, longer)
  np.testing.assert_allclose(pooled_short, pooled_long, atol=1e-5)
  valid = np.asarray(short != 0)
  np.testing.assert_allclose(np.asarray(tokens_short)[valid],
                             np.asarray(tokens_long)[:, :8][valid], atol=1e-5)


def test_causal_earlier_outputs_ignore_later_tokens():
  a = jnp.array([[5, 6, 7, 8, 9, 10, 11, 12]], jnp.int32)
  b = a.at[0, 5:].set(jnp.array([20, 21, 22]))
  _, ta = _apply(_model('text_transformer', causal=True), a)
  _, tb = _apply(_model('text_transformer', causal=True), b)
  np.testing.assert_allclose(ta[:, :5], tb[:, :5], atol=1e-6)
  assert not np.allclose(ta[:, 5:], tb[:, 5:])
  # Without the causal mask, earlier positions do see the change.
  _, ta = _apply(_model('text_transformer'), a)
  _, tb = _apply(_model('text_transformer'), b)
  assert not np.allclose(ta[:, 0], tb[:, 0])


def test_dropout_train_mode():
  config = _config('vit', dropout=0.5, pool='mean')
  model = build_model(config, rngs=nnx.Rngs(0))
  x = INPUTS['vit']
  eval_a, _ = _apply(model, x)
  eval_b, _ = _apply(model, x, deterministic=True)
  train_a, _ = _apply(model, x, deterministic=False)
  train_b, _ = _apply(model, x, deterministic=False)
  np.testing.assert_array_equal(eval_a, eval_b)
  assert not np.allclose(eval_a, train_a)
  assert not np.allclose(train_a, train_b)  # the RNG state advanced


def test_library_rngs_are_nnx_rngs_quicker_to_trace(monkeypatch):
  """multimodal.models.rng.Rngs draws nnx.Rngs' keys (parameters, dropout
  masks, the lowered init program all equal) without the per-draw search
  of the trace that makes nnx.Rngs quadratic to trace (see rng.py)."""
  from jax._src.interpreters import partial_eval  # pylint: disable=g-import-not-at-top
  from multimodal.models import rng  # pylint: disable=g-import-not-at-top
  config = _config('vit', dropout=0.5, pool='mean')
  ours, stock = (build_model(config, rngs=r(0)) for r in (rng.Rngs, nnx.Rngs))
  def values(model):  # parameters, RNG keys (as their data) and counts
    return [jax.random.key_data(x) if jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x
            for x in jax.tree.leaves(nnx.state(model))]

  for a, b in zip(values(ours), values(stock), strict=True):
    np.testing.assert_array_equal(a, b)
  for _ in range(2):  # the dropout streams advance alike
    np.testing.assert_array_equal(
        _apply(ours, INPUTS['vit'], deterministic=False)[0],
        _apply(stock, INPUTS['vit'], deterministic=False)[0])
  programs = [jax.jit(lambda r=r: nnx.state(build_model(config, rngs=r(0)),
                                            nnx.Param)).lower().as_text()
              for r in (rng.Rngs, nnx.Rngs)]
  assert programs[0] == programs[1]

  searches = []
  search = partial_eval.JaxprStackFrame.find_progenitors
  monkeypatch.setattr(partial_eval.JaxprStackFrame, 'find_progenitors',
                      lambda self, t: searches.append(1) or search(self, t))
  nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
  assert searches  # the cost rng.Rngs avoids is real
  searches.clear()
  nnx.eval_shape(lambda: build_model(config, rngs=rng.Rngs(0)))
  assert not searches


# ------------------------------------------------- contrastive & build ---


def _contrastive_config(loss='sigmoid'):
  return dict(
      name='contrastive', embed_dim=16, loss=loss, temperature_init=10.0,
      bias_init=-10.0,
      towers=dict(image=_config('vit', pool='mean'),
                  audio=_config('audio_transformer', pool='map'),
                  text=_config('text_transformer', pool='eos')),
      inputs=dict(image='image', audio='audio', image_text='text',
                  audio_text='text'),
      pairs=[('image', 'image_text'), ('audio', 'audio_text'),
             ('image', 'audio')])


def _batch():
  rng = np.random.default_rng(0)
  return dict(image=jnp.asarray(rng.normal(size=(B, 8, 8, 2)), jnp.float32),
              audio=jnp.asarray(rng.normal(size=(B, 16, 8)), jnp.float32),
              image_text=_tokens(), audio_text=_tokens()[::-1],
              label=jnp.arange(B))


def test_a_registered_contrastive_loss_is_the_models_loss():
  """A loss of the user's own: named by the model's `loss`, given the
  learned bias it asks for, its value the model's per-pair loss."""

  @registry.register('contrastive_loss', '_test_margin')
  class Margin(losses.ContrastiveLoss):
    learns_bias = True

    def __call__(self, a, b, scale, bias):
      sims = scale * (a @ b.T) + bias
      pos = jnp.diagonal(sims)
      return jnp.mean(jax.nn.relu(1.0 - pos[:, None] + sims))

  model = build_model(_contrastive_config('_test_margin'), rngs=nnx.Rngs(0))
  assert isinstance(model.loss_fn, Margin)
  emb = model(_batch())
  total, metrics = model.loss(emb)
  a, b = np.asarray(emb['image']), np.asarray(emb['audio'])
  sims = 10.0 * a @ b.T - 10.0
  want = np.mean(np.maximum(0.0, 1.0 - np.diag(sims)[:, None] + sims))
  np.testing.assert_allclose(metrics['loss/image~audio'], want, rtol=1e-5)
  np.testing.assert_allclose(metrics['logit_bias/image~audio'], -10.0)
  softmax = build_model(_contrastive_config('softmax'), rngs=nnx.Rngs(0))
  assert not hasattr(softmax, 'bias')
  assert 'logit_bias/image~audio' not in softmax.loss(softmax(_batch()))[1]
  with pytest.raises(ValueError, match=r'loss must be a registered '
                     r'contrastive_loss \(.*sigmoid, softmax\), got .hinge'):
    build_model(_contrastive_config('hinge'), rngs=nnx.Rngs(0))


def test_params_carry_logical_axis_names():
  model = nnx.eval_shape(
      lambda: build_model(_contrastive_config(), rngs=nnx.Rngs(0)))
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata().get('out_sharding')
    assert names is not None and len(names) == var.ndim, (path, names)
    assert set(names) <= set(LOGICAL_AXES) | {None}, (path, names)
  specs = nnx.get_partition_spec(nnx.state(model))
  leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
  for spec in [P('embed', 'mlp'), P('embed', 'heads', 'kv'),
               P('heads', 'kv', 'embed'), P('vocab', 'embed'),
               P('patch', 'embed'), P('pos', 'embed'), P('norm'),
               P('embed', 'proj')]:
    assert spec in leaves, spec
  with nnx.logical_axis_rules(RULES):
    mapped = nnx.get_partition_spec(nnx.state(model))
  kernel = mapped['towers']['text']['encoder']['blocks'][0]['mlp']['fc1'][
      'kernel']
  assert kernel.get_value() == P('fsdp', 'tensor')


def test_contrastive_model_embeddings_loss_and_grads():
  model = build_model(_contrastive_config('sigmoid'), rngs=nnx.Rngs(0))
  scale, bias = model.logit_params(2)
  np.testing.assert_allclose(scale, 10.0, rtol=1e-6)
  np.testing.assert_allclose(bias, -10.0)
  batch = _batch()
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(params):
    m = nnx.merge(graphdef, params)
    embeddings = m(batch, deterministic=False)
    total, metrics = m.loss(embeddings)
    return total, (metrics, embeddings)

  (total, (metrics, emb)), grads = jax.jit(jax.value_and_grad(
      loss_fn, has_aux=True))(params)

  assert sorted(emb) == ['audio', 'audio_text', 'image', 'image_text']
  for e in emb.values():
    assert e.shape == (B, 16) and e.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, atol=1e-4)
  # One text tower serves both caption fields (audio_text = reversed rows).
  np.testing.assert_allclose(emb['audio_text'], emb['image_text'][::-1],
                             atol=1e-6)
  assert np.isfinite(total)
  names = ['image~image_text', 'audio~audio_text', 'image~audio']
  np.testing.assert_allclose(
      total, sum(metrics[f'loss/{n}'] for n in names), rtol=1e-5)
  for path, g in nnx.to_flat_state(grads):
    g = np.asarray(g.get_value())
    assert np.all(np.isfinite(g)), path
    if path[-2:] == ('key', 'bias'):
      continue  # softmax is invariant to it: its gradient is exactly 0
    assert np.any(g != 0), f'no gradient reaches {path}'


def test_contrastive_softmax_from_configdict():
  ml_collections = pytest.importorskip('ml_collections')
  cfg = ml_collections.ConfigDict(_contrastive_config('softmax'))
  model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
  assert sorted(model.towers) == ['audio', 'image', 'text']
  assert not hasattr(model, 'bias')
  graphdef, state = nnx.split(model)
  scale, bias = jax.eval_shape(
      lambda s: nnx.merge(graphdef, s).logit_params(0), state)
  assert scale.shape == () and bias is None
  batch = dict(_batch(), other=jnp.zeros(()))
  emb = jax.eval_shape(lambda s, b: nnx.merge(graphdef, s)(b), state, batch)
  assert sorted(emb) == ['audio', 'audio_text', 'image', 'image_text']
  total, metrics = jax.eval_shape(
      lambda s, e: nnx.merge(graphdef, s).loss(e), state, emb)
  assert total.shape == () and total.dtype == jnp.float32
  assert sorted(metrics) == sorted(
      [f'{k}/{p}' for k in ('loss', 'logit_scale')
       for p in ('image~image_text', 'audio~audio_text', 'image~audio')])


def test_build_model_errors():
  assert registry.get('model', 'vit').__name__ == 'ViT'
  with pytest.raises(ValueError, match=r"'vit'.*unknown.*\['widht'\]"
                     r".*Accepted arguments:.*width"):
    build_model(dict(name='vit', widht=32), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"missing.*\['vocab_size'\]"):
    build_model(dict(name='text_transformer'), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='`name`'):
    build_model(dict(width=3), rngs=nnx.Rngs(0))
  with pytest.raises(KeyError, match='Unknown model'):
    build_model(dict(name='nope'), rngs=nnx.Rngs(0))


def test_build_model_errors_name_unknown_tower_options():
  # The towers take their Encoder options as **options: still validated.
  for name in ('vit', 'audio_transformer', 'text_transformer'):
    with pytest.raises(ValueError, match=r"unknown.*\['num_layers'\]"
                       r'.*Accepted arguments:.*scan_layers.*variant'):
      build_model(_config(name, num_layers=3), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"Encoder 'vit'.*\['depht'\]"):
    build_model(_config('vit', depht=3), rngs=nnx.Rngs(0), kind='encoder')


# ------------------------------------------------------- named sizes ---


def _param_shapes(config, kind='model'):
  model = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0),
                                             kind=kind))
  return {'/'.join(map(str, p)): v.shape for p, v in nnx.to_flat_state(
      nnx.state(model, nnx.Param))}


def test_size_table_and_parser():
  table = {'Ti': (192, 12, 768, 3), 'S': (384, 12, 1536, 6),
           'M': (512, 12, 2048, 8), 'B': (768, 12, 3072, 12),
           'L': (1024, 24, 4096, 16), 'H': (1280, 32, 5120, 16)}
  for name, (width, depth, mlp_dim, heads) in table.items():
    assert sizes.parse_variant(f'{name}/16') == (dict(
        width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads), 16)
  assert {'mu', 'g', 'G'} <= set(sizes.SIZES)
  assert sizes.parse_variant('S')[1] is None
  with pytest.raises(ValueError, match=r"Unknown model variant 'Q/16'.*"
                     r'mu, Ti, S, M, B, L'):
    sizes.parse_variant('Q/16')
  with pytest.raises(ValueError, match='positive integer'):
    sizes.parse_variant('B/x')
  # Explicit keys win; an explicit mlp_ratio drops the variant's mlp_dim.
  got, _ = sizes.resolve('B', dict(depth=2, mlp_ratio=2), patches=False)
  assert (got['width'], got['depth'], got['mlp_dim'], got['mlp_ratio']) == (
      768, 2, None, 2)
  with pytest.raises(ValueError, match='cuts no patches'):
    sizes.resolve('B/16', {}, patches=False)


def test_vit_variant_b16():
  shapes = _param_shapes(dict(name='vit', variant='B/16', image_size=32,
                              channels=3))
  assert shapes['core/embed/kernel'] == (16 * 16 * 3, 768)
  assert shapes['core/posemb/embedding'] == (4, 768)
  assert shapes['core/encoder/blocks/11/mlp/fc1/kernel'] == (768, 3072)
  assert 'core/encoder/blocks/12/mlp/fc1/kernel' not in shapes
  attn = nnx.eval_shape(lambda: build_model(
      dict(name='vit', variant='B/16', image_size=32, channels=3),
      rngs=nnx.Rngs(0))).core.encoder.blocks[0].attn
  assert attn.num_heads == 12


def test_variants_of_every_tower_and_the_decoder_with_overrides():
  vit = _param_shapes(dict(name='vit', variant='mu/4', image_size=8,
                           depth=2, patch_size=2), 'encoder')
  assert vit['core/embed/kernel'] == (2 * 2 * 1, 32)  # explicit patch
  assert vit['core/encoder/blocks/1/mlp/fc1/kernel'] == (32, 128)
  audio = _param_shapes(dict(name='audio_transformer', variant='mu/4',
                             num_frames=16, num_mels=8), 'encoder')
  assert audio['core/embed/kernel'] == (4 * 4, 32)  # 4 x 4 patches
  assert 'core/encoder/blocks/1/norm1/scale' not in audio  # mu: depth 1
  text = _param_shapes(dict(name='text_transformer', variant='mu',
                            vocab_size=50, width=64), 'encoder')
  assert text['embed/embedding'] == (50, 64)
  assert text['encoder/blocks/0/mlp/fc1/kernel'] == (64, 128)
  decoder = _param_shapes(dict(name='text_decoder', variant='mu',
                               vocab_size=50, mlp_ratio=2), 'decoder')
  assert decoder['blocks/0/mlp/fc1/kernel'] == (32, 64)
  decoder = _param_shapes(dict(name='text_decoder', variant='S',
                               vocab_size=50, depth=1), 'decoder')
  assert decoder['blocks/0/mlp/fc1/kernel'] == (384, 1536)
  for name in ('text_transformer', 'text_decoder'):
    with pytest.raises(ValueError, match='cuts no patches'):
      build_model(dict(name=name, variant='mu/4', vocab_size=50),
                  rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="Unknown model variant 'XL'"):
    build_model(dict(name='vit', variant='XL'), rngs=nnx.Rngs(0))


# ---------------------------------------------------------- sharding ---


def test_builds_without_rules_under_a_mesh_and_shards_with_rules():
  config = _config('text_transformer')
  mesh = jax.make_mesh((1, 1, 1), ('data', 'fsdp', 'tensor'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  # How the trainer builds: a mesh but no logical rules -> no eager sharding.
  # (nnx.eval_shape, unlike jax.eval_shape, would need rules here: it turns
  # logical names into shardings on the mesh in context.)
  with jax.set_mesh(mesh):
    jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(
        build_model(config, rngs=nnx.Rngs(0)), nnx.Param)))
  # Mesh and rules: parameters are sharded as they are created. (Eagerly:
  # on one device a jit output's sharding is normalised to P().)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):
    model = build_model(config, rngs=nnx.Rngs(0))
  kernel = model.encoder.blocks[0].mlp.fc1.kernel
  assert kernel.sharding.spec == P('fsdp', 'tensor')


_EIGHT_DEVICE_SCRIPT = textwrap.dedent('''
    import jax
    jax.config.update('jax_num_cpu_devices', 8)
    jax.config.update('jax_disable_most_optimizations', True)
    from flax import nnx
    from multimodal.models import build_model
    from tests.test_models import RULES, TINY
    mesh = jax.make_mesh((2, 2, 2), ('data', 'fsdp', 'tensor'),
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
    config = dict(TINY, name='text_transformer', vocab_size=64, max_len=8)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):
      model = nnx.jit(lambda: build_model(config, rngs=nnx.Rngs(0)))()
      kernel = model.encoder.blocks[0].mlp.fc1.kernel
      assert len(jax.devices()) == 8
      assert kernel.sharding.spec == jax.sharding.PartitionSpec(
          'fsdp', 'tensor'), kernel.sharding
      tokens = jax.numpy.ones((8, 8), jax.numpy.int32)
      pooled, _ = nnx.jit(lambda m, t: m(t))(model, tokens)
      assert pooled.shape == (8, 32)
    print('OK')
''')


def test_builds_and_runs_under_eight_device_mesh():
  # jax_num_cpu_devices must be set before JAX starts: use a fresh process.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _EIGHT_DEVICE_SCRIPT],
                        cwd=root, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0 and 'OK' in proc.stdout, proc.stderr[-3000:]


# ------------------------------------------------- remat and scan over layers


def _encoder(**kw):
  from multimodal.models.transformer import Encoder  # pylint: disable=g-import-not-at-top
  return Encoder(16, 3, 2, rngs=nnx.Rngs(0), **kw)


def _loss_and_grads(enc, x):
  def loss(enc):
    return jnp.sum(enc(x) ** 2)
  return nnx.value_and_grad(loss)(enc)


@pytest.mark.parametrize('policy', ['full', 'dots', 'dots_no_batch'])
def test_remat_policies_keep_values_and_grads(policy):
  x = jax.random.normal(jax.random.key(1), (2, 5, 16))
  want_loss, want_grads = _loss_and_grads(_encoder(), x)
  got_loss, got_grads = _loss_and_grads(_encoder(remat=policy), x)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               nnx.to_pure_dict(nnx.state(got_grads)),
               nnx.to_pure_dict(nnx.state(want_grads)))


def test_unknown_remat_policy_is_a_clear_error():
  with pytest.raises(ValueError, match='remat must be one of'):
    _encoder(remat='everything')


@pytest.mark.parametrize('remat', ['none', 'full'])
def test_scanned_layers_equal_the_unrolled_stack(remat):
  x = jax.random.normal(jax.random.key(1), (2, 5, 16))
  loop = _encoder()
  scan = _encoder(scan_layers=True, remat=remat)
  kernel = nnx.state(scan.blocks, nnx.Param)['mlp']['fc1']['kernel']
  assert kernel.shape == (3, 16, 64)
  assert kernel.get_metadata()['out_sharding'] == ('layers', 'embed', 'mlp')
  # Give the scanned stack the unrolled stack's weights, layer by layer.
  layers = [nnx.state(b, nnx.Param) for b in loop.blocks]
  nnx.update(scan.blocks, jax.tree.map(lambda *xs: jnp.stack(xs), *layers))
  nnx.update(scan.norm, nnx.state(loop.norm))
  np.testing.assert_allclose(scan(x), loop(x), atol=1e-5)
  np.testing.assert_allclose(_loss_and_grads(scan, x)[0],
                             _loss_and_grads(loop, x)[0], rtol=1e-5)
