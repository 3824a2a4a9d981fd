"""The encoder-decoder model: fusions, missing modalities, modality dropout."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from multimodal import registry
from multimodal.models import LOGICAL_AXES, build_model
from multimodal.models.modality_dropout import drop_modalities

B, V, W = 3, 17, 16
TOWER = dict(width=8, depth=1, num_heads=2, mlp_ratio=2)
FUSION_ARGS = {
    'concat': {},
    'perceiver_resampler': dict(depth=1, num_heads=2, num_latents=3),
    'bottleneck': dict(depth=1, num_heads=2, num_latents=2),
}
IMAGE = jax.random.normal(jax.random.key(0), (B, 8, 8, 1))
AUDIO = jax.random.normal(jax.random.key(1), (B, 16, 8))
TOKENS = jnp.array([[2, 5, 6, 3], [2, 7, 3, 0], [2, 9, 9, 9]], jnp.int32)


pytestmark = pytest.mark.usefixtures('fast_compiles')


def _config(fusion='concat', **kw):
  return dict(
      name='encoder_decoder', width=W,
      towers=dict(
          image=dict(name='vit', image_size=8, patch_size=4, channels=1,
                     pool='mean', **TOWER),
          audio=dict(name='audio_transformer', num_frames=16, num_mels=8,
                     patch_size=(8, 4), pool='mean', **TOWER)),
      fusion=dict(FUSION_ARGS[fusion], name=fusion),
      decoder=dict(name='text_decoder', vocab_size=V, max_len=8, width=W,
                   depth=1, num_heads=2, mlp_ratio=2),
      **kw)


@functools.lru_cache(maxsize=None)
def _model(fusion='concat'):
  """A built (cached, so never mutate it) tiny model."""
  return build_model(_config(fusion), rngs=nnx.Rngs(0))


def _with_dropout(rate):
  model = nnx.clone(_model('concat'))
  model.modality_dropout = rate  # a static attribute: no rebuild needed
  return model


@functools.partial(nnx.jit, static_argnames='deterministic')
def _logits(model, media, present=None, seeds=None, deterministic=True):
  return model(media, TOKENS, present, deterministic=deterministic,
               seeds=seeds)


def test_registered_with_logical_axis_names():
  assert 'encoder_decoder' in registry.names('model')
  model = nnx.eval_shape(lambda: build_model(_config('bottleneck'),
                                             rngs=nnx.Rngs(0)))
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata().get('out_sharding')
    assert names is not None and len(names) == var.ndim, (path, names)
    assert set(names) <= set(LOGICAL_AXES) | {None}, (path, names)


@pytest.mark.parametrize('fusion', sorted(FUSION_ARGS))
def test_missing_and_masked_modalities(fusion):
  """Runs on either modality alone. An example whose audio is masked gets
  the logits it would get with no audio input at all, whatever its audio
  values; the others still use theirs."""
  model = _model(fusion)
  present = dict(audio=jnp.array([False, True, True]))
  media = dict(image=IMAGE, audio=AUDIO)
  out = _logits(model, media, present)
  assert out.shape == (B, 4, V) and out.dtype == jnp.float32
  image_only = _logits(model, dict(image=IMAGE))
  audio_only = _logits(model, dict(audio=AUDIO))
  assert np.all(np.isfinite(audio_only))
  assert not np.allclose(audio_only[1:], out[1:], atol=1e-4)
  assert not np.allclose(image_only[1:], out[1:], atol=1e-4)
  np.testing.assert_allclose(out[0], image_only[0], atol=1e-5)
  noisy = dict(image=IMAGE, audio=AUDIO.at[0].set(1e3 * AUDIO[0] + 7.0))
  np.testing.assert_allclose(_logits(model, noisy, present)[0], out[0],
                             atol=1e-5)
  # The present audio of examples 1 and 2 does matter.
  changed = dict(image=IMAGE, audio=AUDIO.at[1:].set(-AUDIO[1:]))
  assert not np.allclose(_logits(model, changed, present)[1:], out[1:],
                         atol=1e-4)


def test_every_modality_masked_reads_no_memory():
  model = _model('concat')
  none = dict(image=jnp.zeros(B, bool), audio=jnp.zeros(B, bool))
  out = _logits(model, dict(image=IMAGE, audio=AUDIO), none)
  other = _logits(model, dict(image=-IMAGE, audio=2 * AUDIO), none)
  np.testing.assert_allclose(out, other, atol=1e-5)
  decoder_alone = nnx.jit(lambda d, t: d(t))(model.decoder, TOKENS)
  np.testing.assert_allclose(out, decoder_alone, atol=1e-5)


def test_drop_modalities_never_drops_everything():
  present = jnp.array([[True, True, True]] * 4000 + [[True, False, True],
                                                    [False, False, False]])
  seeds = jnp.arange(len(present), dtype=jnp.int32)
  kept = np.asarray(drop_modalities(present, 0.5, seeds))
  assert np.all(kept <= np.asarray(present))
  assert np.all(kept[:-1].any(axis=1))
  assert not kept[-1].any()  # nothing to keep
  # Each modality is dropped about half the time, slightly less because of
  # the fallback (3 modalities: P(kept) = 1/2 + 1/8 * 1/3).
  np.testing.assert_allclose(kept[:4000].mean(axis=0), 0.5 + 1 / 24,
                             atol=0.03)
  # Determined by the seed alone, not the row's position.
  again = np.asarray(drop_modalities(present[::-1], 0.5, seeds[::-1]))
  np.testing.assert_array_equal(again[::-1], kept)
  np.testing.assert_array_equal(drop_modalities(present, 0.0, seeds),
                                present)


def test_modality_dropout_applies_only_in_training():
  model = _with_dropout(0.5)
  media = dict(image=IMAGE, audio=AUDIO)
  seeds = jnp.arange(B, dtype=jnp.int32)
  flags = model.presence(media, deterministic=False, seeds=seeds)
  # Training logits equal evaluation logits under the dropped-out presence.
  train = _logits(model, media, seeds=seeds, deterministic=False)
  np.testing.assert_allclose(train, _logits(model, media, flags), atol=1e-5)
  keep_all = np.asarray(jnp.stack(list(flags.values()), 1))
  assert keep_all.any(axis=1).all()
  np.testing.assert_array_equal(_logits(model, media),
                                _logits(model, media, seeds=seeds))
  with pytest.raises(ValueError, match='seeds'):
    model.presence(media, deterministic=False)


def test_some_examples_lose_a_modality_under_dropout():
  model = _with_dropout(0.5)
  media = dict(image=jnp.zeros((64, 8, 8, 1)), audio=jnp.zeros((64, 16, 8)))
  flags = model.presence(media, deterministic=False,
                         seeds=jnp.arange(64, dtype=jnp.int32))
  kept = np.stack([np.asarray(f) for f in flags.values()], 1)
  assert 0 < kept.sum() < kept.size and kept.any(axis=1).all()


def test_bad_config_and_inputs_are_clear_errors():
  with pytest.raises(KeyError, match=r"Unknown fusion 'sum'. Registered "
                     r'fusions: bottleneck, concat, .*perceiver_resampler'):
    build_model(_config() | dict(fusion=dict(name='sum')), rngs=nnx.Rngs(0))
  with pytest.raises(KeyError, match=r"Unknown encoder 'vitt'.*Registered "
                     r'encoders: audio_transformer, text_transformer, vit'):
    build_model(_config() | dict(towers=dict(image=dict(name='vitt'))),
                rngs=nnx.Rngs(0))
  with pytest.raises(KeyError, match="Unknown encoder 'contrastive'"):
    build_model(_config() | dict(towers=dict(image=dict(name='contrastive'))),
                rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"Fusion 'concat'.*unknown.*depth"):
    build_model(_config() | dict(fusion=dict(name='concat', depth=1)),
                rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"fusion sets \['width'\]"):
    build_model(_config() | dict(fusion=dict(name='concat', width=4)),
                rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='modality_dropout'):
    build_model(_config(modality_dropout=1.0), rngs=nnx.Rngs(0))
  model = _model('concat')
  with pytest.raises(ValueError, match='video'):
    model.encode(dict(video=IMAGE))
  with pytest.raises(ValueError, match='present'):
    model.encode(dict(image=IMAGE), dict(audio=jnp.ones(B, bool)))
