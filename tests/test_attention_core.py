"""models/attention_core.py: the 'einsum' attention core and its own
backward pass, against jax.nn.dot_product_attention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal.models import attention_core
from multimodal.testing import jaxprs

F32 = jnp.float32


def _inputs(dtype, b=3, length=5, s=7, h=2, k=8, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(keys[0], (b, length, h, k), F32).astype(dtype)
  kv = [jax.random.normal(x, (b, s, h, k), F32).astype(dtype)
        for x in keys[1:3]]
  g = jax.random.normal(keys[3], (b, length, h, k), F32).astype(dtype)
  return q, kv[0], kv[1], g


def _masks(b=3, length=5, s=7):
  keys = jax.random.bernoulli(jax.random.PRNGKey(1), 0.6, (b, 1, 1, s))
  keys = keys.at[0].set(False)  # a batch row with no key allowed at all
  causal = jnp.tril(jnp.ones((length, s), bool))[None, None]
  return [None, keys, causal]


def _vjp(fn, q, k, v, g):
  out, pullback = jax.vjp(fn, q, k, v)
  return (out, *pullback(g))


@pytest.mark.parametrize('mask_index', [0, 1, 2])
def test_float32_matches_jax(mask_index):
  q, k, v, g = _inputs(F32)
  mask = _masks()[mask_index]
  ours = _vjp(lambda *a: attention_core.dot_product_attention(
      *a, mask=mask, implementation='einsum'), q, k, v, g)
  theirs = _vjp(lambda *a: jax.nn.dot_product_attention(*a, mask=mask),
                q, k, v, g)
  for name, a, b in zip(('out', 'dq', 'dk', 'dv'), ours, theirs):
    np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize('mask_index', [0, 1])
def test_bfloat16_matches_float32_to_bfloat16_rounding(mask_index):
  q, k, v, g = _inputs(jnp.bfloat16, length=16, s=16, k=32)
  mask = [None, _masks(length=16, s=16)[1]][mask_index]
  ours = _vjp(lambda *a: attention_core.dot_product_attention(
      *a, mask=mask, implementation='einsum'), q, k, v, g)
  f32 = [t.astype(F32) for t in (q, k, v, g)]
  want = _vjp(lambda *a: jax.nn.dot_product_attention(*a, mask=mask), *f32)
  for name, a, b in zip(('out', 'dq', 'dk', 'dv'), ours, want):
    assert a.dtype == jnp.bfloat16, name
    scale = float(jnp.max(jnp.abs(b)))
    err = float(jnp.max(jnp.abs(a.astype(F32) - b)))
    assert err <= 2 ** -7 * scale, (name, err, scale)


def test_every_bfloat16_product_accumulates_in_float32():
  q, k, v, g = _inputs(jnp.bfloat16)
  core = lambda *b: attention_core.dot_product_attention(
      *b, implementation='einsum')
  dots = jaxprs.dots(lambda *a: _vjp(core, *a), q, k, v, g)
  assert len(dots) == 6  # logits, output; dv, dp, dq, dk
  assert set(dots) == {(('bfloat16', 'bfloat16'), 'float32')}, dots


def test_implementations():
  q, k, v, _ = _inputs(F32)
  assert jax.default_backend() == 'cpu'
  default = jax.make_jaxpr(lambda *a: attention_core.dot_product_attention(
      *a))(q, k, v)
  assert 'custom_vjp' in str(default)  # None is 'einsum' on CPU
  np.testing.assert_array_equal(
      attention_core.dot_product_attention(q, k, v, implementation='xla'),
      jax.nn.dot_product_attention(q, k, v, implementation='xla'))
  with pytest.raises(ValueError, match='einsum'):
    attention_core.dot_product_attention(q, k, v, implementation='flash')
