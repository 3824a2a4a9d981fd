"""Registry kinds of models and the fusion contract, including a fusion
registered from outside the package and used by config alone."""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from multimodal import registry
from multimodal.models import build_model
from multimodal.models.pooling import masked_mean

import test_encoder_decoder

# The encoder-decoder tests' tiny model and inputs, plus the user fusion.
FUSION_ARGS = dict(test_encoder_decoder.FUSION_ARGS, mean_per_modality={})
B, V, W = test_encoder_decoder.B, test_encoder_decoder.V, test_encoder_decoder.W
IMAGE, AUDIO, TOKENS = (test_encoder_decoder.IMAGE, test_encoder_decoder.AUDIO,
                        test_encoder_decoder.TOKENS)

pytestmark = pytest.mark.usefixtures('fast_compiles')


# A user's fusion, as a module outside the package would define it.
@registry.register('fusion', 'mean_per_modality')
class MeanPerModality(nnx.Module):
  """One token per modality: the mean of its real tokens, then a Linear."""

  def __init__(self, *, modalities, width, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs):
    self.modalities = tuple(modalities)
    self.out = nnx.Linear(width, width, dtype=dtype, param_dtype=param_dtype,
                          rngs=rngs)

  def __call__(self, tokens, masks, *, deterministic=True):
    del deterministic
    pooled = [masked_mean(tokens[m], masks[m]) for m in tokens]
    memory = self.out(jnp.stack(pooled, axis=1))  # [B, num modalities, W]
    mask = jnp.stack([jnp.any(masks[m], axis=1) for m in tokens], axis=1)
    return memory, mask


def _config(fusion):
  config = test_encoder_decoder._config()  # pylint: disable=protected-access
  config['fusion'] = dict(FUSION_ARGS[fusion], name=fusion)
  return config


@functools.lru_cache(maxsize=None)
def _model(fusion):
  return build_model(_config(fusion), rngs=nnx.Rngs(0))


@nnx.jit
def _encode(model, media, present):
  return model.encode(media, present)


def test_kinds():
  assert registry.names('encoder') == ['audio_transformer',
                                       'text_transformer', 'vit', 'vivit']
  assert registry.names('decoder') == ['text_decoder']
  assert {'concat', 'perceiver_resampler', 'bottleneck'} <= set(
      registry.names('fusion'))
  assert registry.names('layer') == ['gated_xattn', 'perceiver_resampler']
  # Whole models; a tower or decoder alone is one too (e.g. an imported ViT).
  assert registry.names('model') == [
      'audio_transformer', 'contrastive', 'encoder_decoder', 'text_decoder',
      'text_transformer', 'tts', 'vit', 'vivit']
  assert 'gated_xattn' not in registry.names('fusion')


def test_build_model_looks_up_the_given_kind():
  tower = dict(name='text_transformer', vocab_size=V,
               **test_encoder_decoder.TOWER)
  assert build_model(tower, rngs=nnx.Rngs(0), kind='encoder').width == 8
  with pytest.raises(KeyError, match=r"Unknown fusion 'text_transformer'. "
                     r'Registered fusions: .*concat'):
    build_model(tower, rngs=nnx.Rngs(0), kind='fusion')
  with pytest.raises(ValueError, match=r'A fusion config needs a `name`'):
    build_model({}, rngs=nnx.Rngs(0), kind='fusion')
  with pytest.raises(ValueError, match='media_width'):
    build_model(dict(FUSION_ARGS['perceiver_resampler'],
                     name='perceiver_resampler', modalities=('image',),
                     width=W, media_width=4), rngs=nnx.Rngs(0), kind='fusion')


@pytest.mark.parametrize('fusion', sorted(FUSION_ARGS))
def test_every_fusion_keeps_the_contract(fusion):
  """(memory [B, M, W], mask bool [B, M]); no dependence on masked tokens;
  an example with no modality gets a fully masked memory."""
  model = _model(fusion)
  present = dict(image=jnp.array([True, True, False]),
                 audio=jnp.array([True, False, False]))
  memory, mask = _encode(model, dict(image=IMAGE, audio=AUDIO), present)
  assert memory.ndim == 3 and memory.shape[::2] == (B, W)
  assert mask.shape == memory.shape[:2] and mask.dtype == jnp.bool_
  assert mask[0].any() and mask[1].any() and not mask[2].any()
  other, other_mask = _encode(model, dict(image=IMAGE, audio=-3 * AUDIO),
                              present)
  np.testing.assert_array_equal(other_mask, mask)
  np.testing.assert_allclose(other[1][mask[1]], memory[1][mask[1]],
                             atol=1e-5)


def test_a_fusion_registered_outside_the_package_is_used_by_config():
  model = _model('mean_per_modality')
  assert isinstance(model.fusion, MeanPerModality)
  assert model.fusion.modalities == ('image', 'audio')
  present = dict(audio=jnp.array([True, False, True]))
  memory, mask = _encode(model, dict(image=IMAGE, audio=AUDIO), present)
  assert memory.shape == (B, 2, W)
  np.testing.assert_array_equal(mask, [[1, 1], [1, 0], [1, 1]])
  logits = model(dict(image=IMAGE), TOKENS)
  assert logits.shape == (B, TOKENS.shape[1], V)
  assert np.all(np.isfinite(logits))
  # Its parameters live under fusion/ like the built-in ones'.
  paths = {'/'.join(map(str, p)) for p, _ in nnx.to_flat_state(
      nnx.state(model, nnx.Param))}
  assert {'fusion/out/kernel', 'fusion/out/bias'} <= paths
