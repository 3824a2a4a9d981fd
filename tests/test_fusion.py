"""Tests for the fusion modules: shapes, masks and gate initialisation.

The fusion contract itself (every registered fusion, one from outside the
package) is tested in test_model_registry.py.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from multimodal import registry
from multimodal.models import LOGICAL_AXES, build_model

B, L, M, D, DM = 3, 5, 4, 16, 8
TINY = dict(width=D, num_heads=2, mlp_ratio=2)
CONFIGS = {
    'gated_xattn': dict(TINY, media_width=DM),
    'bottleneck': dict(TINY, modalities=('image', 'audio'), depth=2,
                       num_latents=3),
    'perceiver_resampler': dict(TINY, media_width=DM, depth=2,
                                num_latents=6),
}
X = jax.random.normal(jax.random.key(0), (B, L, D))
MEDIA = jax.random.normal(jax.random.key(1), (B, M, DM))
# Example 0: two media; example 1: all four; example 2: none.
MASK = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
NOISE = 5 * jax.random.normal(jax.random.key(2), (B, M, DM))
KINDS = {'gated_xattn': 'layer', 'bottleneck': 'fusion',
         'perceiver_resampler': 'layer'}


pytestmark = pytest.mark.usefixtures('fast_compiles')


@functools.lru_cache(maxsize=None)
def _model(name):
  """A built (cached) tiny fusion model; tests that change it copy it."""
  return build_model(dict(CONFIGS[name], name=name), rngs=nnx.Rngs(0),
                     kind=KINDS[name])


@nnx.jit
def _apply(model, *args):
  # One compile per input structure; eager ops would each compile.
  return model(*args)


@nnx.jit
def _fuse(model, *args):
  return model.fuse(*args)


def _open_gates(model, attn=1.0, mlp=1.0):
  model = nnx.clone(model)
  model.attn_gate[...] = jnp.asarray(attn)
  model.mlp_gate[...] = jnp.asarray(mlp)
  return model


def _masked_noise(media, mask, noise=NOISE):
  """media with every masked-out token replaced by noise."""
  return jnp.where(mask[..., None], media, noise[..., :media.shape[-1]])


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_registered_with_logical_axis_names(name):
  assert name in registry.names(KINDS[name])
  model = nnx.eval_shape(
      lambda: build_model(dict(CONFIGS[name], name=name), rngs=nnx.Rngs(0),
                          kind=KINDS[name]))
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata().get('out_sharding')
    assert names is not None and len(names) == var.ndim, (path, names)
    assert set(names) <= set(LOGICAL_AXES) | {None}, (path, names)


# ------------------------------------------------------- gated xattn ---


def test_gated_block_is_identity_at_init():
  model = _model('gated_xattn')
  out = _apply(model, X, MEDIA, MASK)
  assert out.shape == (B, L, D) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, X)
  # Opening the gates makes it a real layer.
  assert not np.allclose(_apply(_open_gates(model), X, MEDIA, MASK), X)


def test_gated_block_ignores_masked_media():
  model = _open_gates(_model('gated_xattn'))
  out = _apply(model, X, MEDIA, MASK)
  np.testing.assert_allclose(_apply(model, X, _masked_noise(MEDIA, MASK),
                                    MASK), out, atol=1e-5)
  changed = _apply(model, X, _masked_noise(MEDIA, ~MASK), MASK)
  assert not np.allclose(changed[:2], out[:2], atol=1e-4)  # valid media
  np.testing.assert_allclose(changed[2], out[2], atol=1e-5)  # has none


def test_gated_block_query_without_media_gets_zero_attention():
  # Attention gate open, MLP gate shut: rows without media pass unchanged.
  model = _open_gates(_model('gated_xattn'), attn=1.0, mlp=0.0)
  per_query = jnp.broadcast_to(MASK[:, None], (B, L, M))
  per_query = per_query.at[1, 2:].set(False)  # queries 2.. of example 1
  out = np.asarray(_apply(model, X, MEDIA, per_query))
  assert np.all(np.isfinite(out))
  np.testing.assert_array_equal(out[2], X[2])
  np.testing.assert_array_equal(out[1, 2:], X[1, 2:])
  assert not np.allclose(out[1, :2], X[1, :2])

  def loss(media):
    return jnp.sum(model(X, media, per_query) ** 2)

  grad = jax.jit(jax.grad(loss))(MEDIA)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[2], 0)  # no media used


# -------------------------------------------------------- bottleneck ---


def _streams():
  image = jax.random.normal(jax.random.key(3), (B, 4, D))
  audio = jax.random.normal(jax.random.key(4), (B, 6, D))
  image_mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], bool)
  # Example 0 has no audio at all; the others have some padding.
  audio_mask = jnp.array([[0] * 6, [1, 1, 1, 1, 0, 0], [1] * 6], bool)
  return (dict(image=image, audio=audio),
          dict(image=image_mask, audio=audio_mask))


def test_bottleneck_shapes_and_masked_tokens():
  model = _model('bottleneck')
  tokens, masks = _streams()
  out, latents = _fuse(model, tokens, masks)
  assert latents.shape == (B, 3, D) and latents.dtype == jnp.float32
  assert {k: v.shape for k, v in out.items()} == {
      'image': (B, 4, D), 'audio': (B, 6, D)}
  for m in out:
    assert np.all(np.asarray(out[m])[~np.asarray(masks[m])] == 0)
  noisy = {m: jnp.where(masks[m][..., None], tokens[m], 9.0) for m in tokens}
  out2, latents2 = _fuse(model, noisy, masks)
  np.testing.assert_allclose(latents2, latents, atol=1e-5)
  for m in out:
    np.testing.assert_allclose(out2[m], out[m], atol=1e-5)
  # Real tokens do reach the latents and the other stream.
  real = {m: jnp.where(masks[m][..., None], 9.0, tokens[m]) for m in tokens}
  out3, latents3 = _fuse(model, dict(tokens, audio=real['audio']), masks)
  assert not np.allclose(latents3[1:], latents[1:], atol=1e-4)
  assert not np.allclose(out3['image'][1:], out['image'][1:], atol=1e-4)


def test_bottleneck_missing_modality_does_not_touch_latents():
  model = _model('bottleneck')
  tokens, masks = _streams()
  _, latents = _fuse(model, tokens, masks)
  image_only, latents_image_only = _fuse(
      model, dict(image=tokens['image']), dict(image=masks['image']))
  # Example 0 has no audio: exactly as if the audio stream were absent.
  np.testing.assert_allclose(latents[0], latents_image_only[0], atol=1e-5)
  assert not np.allclose(latents[1:], latents_image_only[1:], atol=1e-4)
  assert sorted(image_only) == ['image']
  with pytest.raises(ValueError, match='streams'):
    model.fuse(dict(video=tokens['image']))


# --------------------------------------------------------- resampler ---


def test_resampler_shapes_and_mask():
  model = _model('perceiver_resampler')
  out = _apply(model, MEDIA, MASK)
  assert out.shape == (B, 6, D) and out.dtype == jnp.float32
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(_apply(model, _masked_noise(MEDIA, MASK), MASK),
                             out, atol=1e-5)
  changed = _apply(model, _masked_noise(MEDIA, ~MASK), MASK)
  assert not np.allclose(changed[:2], out[:2], atol=1e-4)
  np.testing.assert_allclose(changed[2], out[2], atol=1e-5)
  # All media valid by default.
  np.testing.assert_allclose(_apply(model, MEDIA, None)[1], out[1],
                             atol=1e-5)


def test_bfloat16_compute_float32_params():
  config = dict(CONFIGS['perceiver_resampler'], name='perceiver_resampler',
                dtype=jnp.bfloat16)
  model = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0),
                                             kind='layer'))
  graphdef, state = nnx.split(model)
  out = jax.eval_shape(lambda s: nnx.merge(graphdef, s)(MEDIA, MASK), state)
  assert out.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32
             for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
