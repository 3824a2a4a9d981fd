"""models/activations.py: the exact GELU's own VJP against jax.nn.gelu, and
activations as a registry kind."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from multimodal import config_checks
from multimodal import registry
from multimodal.models import activations
from multimodal.models import transformer

X = np.concatenate([np.linspace(-10, 10, 2001),
                    np.random.default_rng(0).normal(0, 3, 4000)])


def _reference(x):
  return jax.nn.gelu(x, approximate=False)


def test_gelu_matches_jax_in_float32():
  x = jnp.asarray(X, jnp.float32)
  np.testing.assert_allclose(activations.gelu(x), _reference(x), atol=1e-6,
                             rtol=1e-6)
  ours = jax.vmap(jax.grad(activations.gelu))(x)
  theirs = jax.vmap(jax.grad(_reference))(x)
  np.testing.assert_allclose(ours, theirs, atol=2e-6, rtol=1e-6)
  assert float(activations.gelu(jnp.float32(-30.0))) == 0.0


def test_gelu_in_bfloat16_is_the_float32_value_rounded():
  x = jnp.asarray(X, jnp.bfloat16)
  xf = x.astype(jnp.float32)
  y = activations.gelu(x)
  assert y.dtype == jnp.bfloat16
  # Within one bfloat16 rounding of the float32 value (erf's tail below
  # x = -5 gives 0 where erfc gives ~1e-7 x: an absolute, not relative, error).
  np.testing.assert_allclose(np.asarray(y, np.float32), _reference(xf),
                             rtol=2 ** -8, atol=2e-6)
  g = jnp.asarray(np.random.default_rng(1).normal(size=X.shape), jnp.bfloat16)
  _, vjp = jax.vjp(activations.gelu, x)
  (dx,) = vjp(g)
  assert dx.dtype == jnp.bfloat16
  want = g.astype(jnp.float32) * jax.vmap(jax.grad(_reference))(xf)
  np.testing.assert_allclose(np.asarray(dx, np.float32), want, rtol=8e-3,
                             atol=1e-6)


def test_gelu_backward_is_one_float32_pass():
  """No erfc and one conversion back to bfloat16 in the backward pass."""
  x = jnp.ones((4, 8), jnp.bfloat16)
  jaxpr = str(jax.make_jaxpr(
      lambda x, g: jax.vjp(activations.gelu, x)[1](g))(x, x))
  assert 'erfc' not in jaxpr and 'erf' in jaxpr
  assert jaxpr.count('convert_element_type[new_dtype=bfloat16') == 2


def test_activations_are_a_registry_kind():
  assert {'gelu', 'gelu_tanh', 'quick_gelu'} <= set(
      registry.names('activation'))
  with pytest.raises(ValueError, match='Registered activations: .*gelu'):
    activations.get_activation('relu6')

  def squared_relu(x):
    return jnp.square(jax.nn.relu(x))

  registry.register('activation', 'test_squared_relu')(squared_relu)
  try:
    mlp = transformer.Mlp(4, 8, activation='test_squared_relu',
                          rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 2, 4)),
                    jnp.float32)
    want = mlp.fc2(squared_relu(mlp.fc1(x)))
    np.testing.assert_allclose(mlp(x), want, rtol=1e-6)
  finally:
    registry._REGISTRY['activation'].pop('test_squared_relu')


def test_config_check_names_an_unknown_activation():
  from projects.digits.configs import contrastive
  c = contrastive.get_config('tiny')
  c.model.towers.image.activation = 'swish9'
  problems = config_checks._registry_names(c)
  assert any('model.towers.image.activation' in p and 'swish9' in p
             for p in problems), problems
