"""Optimizers and learning-rate schedules are registry kinds: the built-ins
against optax and hand computation, mu_dtype, a user's own, and the config
check of their names and arguments."""
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest

from multimodal import base_config
from multimodal import config_checks
from multimodal import optimizer as optim_lib
from multimodal import registry

PARAMS = {'dense': {'kernel': jnp.array([[0.5, -1.0], [2.0, 0.25]]),
                    'bias': jnp.array([0.1, -0.2])}}
GRADS = {'dense': {'kernel': jnp.array([[0.3, -0.6], [0.0, 1.2]]),
                   'bias': jnp.array([-0.5, 0.05])}}


def _opt_cfg(**changes):
  cfg = base_config.base().optimizer
  cfg.warmup_steps = 0
  cfg.final_fraction = 1.0  # a constant lr: the updates are easy to check
  cfg.clip_norm = 0.0
  for key, value in changes.items():
    cfg[key] = value
  return cfg


def _steps(tx, n=3, params=PARAMS):
  state = tx.init(params)
  out = []
  for _ in range(n):
    updates, state = tx.update(GRADS, state, params)
    out.append(updates)
    params = optax.apply_updates(params, updates)
  return out, state


def test_adamw_is_optax_adamw_with_the_same_state_layout():
  """The registered adamw gives optax.adamw's updates and state tree, so
  checkpoints written before the registry restore unchanged."""
  cfg = _opt_cfg(lr=0.01, weight_decay=0.1)
  ours, state = _steps(optim_lib.make_optimizer(cfg, 10))
  ref_tx = optax.adamw(optax.constant_schedule(0.01), b1=0.9, b2=0.95,
                       weight_decay=0.1,
                       mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
  ref, ref_state = _steps(ref_tx)
  for a, b in zip(ours, ref):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), a,
                 b)
  assert (jax.tree.structure(state[-1]) ==
          jax.tree.structure(ref_state))


def test_adamw_mu_dtype_keeps_the_first_moment_in_bfloat16():
  cfg = _opt_cfg(lr=0.01, mu_dtype='bfloat16')
  updates, state = _steps(optim_lib.make_optimizer(cfg, 10))
  adam_state = state[-1][0]
  assert adam_state.mu['dense']['kernel'].dtype == jnp.bfloat16
  assert adam_state.nu['dense']['kernel'].dtype == jnp.float32
  full, _ = _steps(optim_lib.make_optimizer(_opt_cfg(lr=0.01), 10))
  # The same updates to bfloat16 precision of the first moment.
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-2,
                                                       atol=1e-5),
               updates[-1], full[-1])


def test_lion_first_step_by_hand():
  """Lion's first update: -lr * (sign((1 - b1) g) + wd * p) on matrices,
  -lr * sign(g) on biases (never decayed)."""
  cfg = _opt_cfg(name='lion', lr=0.01, weight_decay=0.5, b1=0.9, b2=0.99)
  (first, *_), _ = _steps(optim_lib.make_optimizer(cfg, 10), n=1)
  k, g = PARAMS['dense']['kernel'], GRADS['dense']['kernel']
  np.testing.assert_allclose(first['dense']['kernel'],
                             -0.01 * (np.sign(g) + 0.5 * k), rtol=1e-6)
  np.testing.assert_allclose(first['dense']['bias'],
                             -0.01 * np.sign(GRADS['dense']['bias']),
                             rtol=1e-6)


def test_sgd_with_momentum_by_hand():
  """Two steps of SGD, momentum 0.5, weight decay 0.1 added to the
  gradient: v1 = g + wd p0, v2 = 0.5 v1 + g + wd p1; update = -lr v."""
  cfg = _opt_cfg(name='sgd', lr=0.1, weight_decay=0.1, b1=None, b2=None,
                 momentum=0.5)
  (u1, u2), _ = _steps(optim_lib.make_optimizer(cfg, 10), n=2)
  k, g = np.asarray(PARAMS['dense']['kernel']), np.asarray(
      GRADS['dense']['kernel'])
  v1 = g + 0.1 * k
  k1 = k - 0.1 * v1
  v2 = 0.5 * v1 + g + 0.1 * k1
  np.testing.assert_allclose(u1['dense']['kernel'], -0.1 * v1, rtol=1e-6)
  np.testing.assert_allclose(u2['dense']['kernel'], -0.1 * v2, rtol=1e-6)
  b = np.asarray(GRADS['dense']['bias'])
  np.testing.assert_allclose(u2['dense']['bias'], -0.1 * (0.5 * b + b),
                             rtol=1e-6)


def test_a_registered_optimizer_gets_its_arguments_and_the_groups():
  seen = []

  @registry.register('optimizer', '_test_scaled_sgd')
  def scaled(learning_rate, *, weight_decay, decay_mask, scale=1.0):
    seen.append((scale, weight_decay))
    del decay_mask
    return optax.chain(optax.scale(scale),
                       optax.scale_by_learning_rate(learning_rate))

  cfg = _opt_cfg(name='_test_scaled_sgd', lr=0.1, b1=None, b2=None,
                 lr_mults=(('bias', 0.5),))
  cfg.scale = 2.0
  (first,), _ = _steps(optim_lib.make_optimizer(cfg, 10), n=1)
  assert seen == [(2.0, 1e-4), (2.0, 1e-4)]  # one per lr group
  np.testing.assert_allclose(first['dense']['kernel'],
                             -0.2 * GRADS['dense']['kernel'], rtol=1e-6)
  np.testing.assert_allclose(first['dense']['bias'],
                             -0.1 * GRADS['dense']['bias'], rtol=1e-6)
  # An argument it does not take is refused, naming it.
  cfg.b1 = 0.9
  with pytest.raises(ValueError, match=r"takes no argument\(s\) \['b1'\]"):
    optim_lib.make_optimizer(cfg, 10)


@pytest.mark.parametrize('changes,expected', [
    (dict(name='adam'), ["config.optimizer.name='adam'",
                         'adamw, lion, sgd']),
    (dict(name='sgd'), ["config.optimizer='sgd'",
                        "takes no argument(s) ['b1', 'b2']"]),
    (dict(mu_dtype='bf16'), ["config.optimizer.mu_dtype='bf16'",
                             "'bfloat16'"]),
    (dict(b1=1.5), ['config.optimizer.b1=1.5']),
    (dict(schedule='cosin'), ["config.optimizer.schedule='cosin'",
                              'constant, cosine, linear, rsqrt']),
])
def test_optimizer_config_problems_name_the_key(changes, expected):
  config = mlc.ConfigDict({'optimizer': _opt_cfg(**changes).to_dict()})
  problems = config_checks._optimizer(config)  # pylint: disable=protected-access
  assert len(problems) == 1, problems
  for piece in expected:
    assert piece in problems[0], (piece, problems[0])


@pytest.mark.parametrize('warmup,total', [(50, 200), (0, 10), (5, 6),
                                          (60, 40), (3, 1)])
def test_cosine_schedule_is_optax_warmup_cosine(warmup, total):
  """The default schedule is the one runs used before schedules were a
  registry (a resumed run keeps its learning rates)."""
  cfg = _opt_cfg(lr=0.3, warmup_steps=warmup, final_fraction=0.01)
  ours = optim_lib.schedule(cfg, total)
  w = min(warmup, max(total - 1, 0))
  ref = optax.warmup_cosine_decay_schedule(
      0.0, 0.3, w, max(total, w + 1), end_value=0.003)
  steps = np.arange(total + 3)
  np.testing.assert_allclose([ours(s) for s in steps],
                             [ref(s) for s in steps], rtol=1e-6, atol=1e-9)


def test_linear_rsqrt_and_constant_schedules_by_hand():
  def lrs(name, steps=(0, 5, 10, 15, 20, 30)):
    cfg = _opt_cfg(lr=1.0, warmup_steps=10, final_fraction=0.1,
                   schedule=name)
    return np.array([optim_lib.schedule(cfg, 30)(s) for s in steps])

  np.testing.assert_allclose(lrs('linear'),
                             [0, 0.5, 1.0, 1 - 0.9 * 5 / 20,
                              1 - 0.9 * 10 / 20, 0.1], rtol=1e-6)
  np.testing.assert_allclose(lrs('rsqrt'),
                             [0, 0.5, 1.0, np.sqrt(10 / 15), np.sqrt(0.5),
                              np.sqrt(10 / 30)], rtol=1e-6)
  np.testing.assert_allclose(lrs('constant'), [0, 0.5, 1, 1, 1, 1],
                             rtol=1e-6)


def test_a_registered_schedule_is_used():
  @registry.register('schedule', '_test_step_down')
  def step_down(peak, *, end, decay_steps, warmup_steps):
    del warmup_steps
    return lambda s: jnp.where(s < decay_steps // 2, peak, end)

  cfg = _opt_cfg(lr=2.0, warmup_steps=0, final_fraction=0.25,
                 schedule='_test_step_down')
  lr = optim_lib.schedule(cfg, 10)
  assert [float(lr(s)) for s in (0, 4, 5, 9)] == [2.0, 2.0, 0.5, 0.5]


@pytest.mark.parametrize('max_norm', [0.5, 100.0])  # clipped / not clipped
def test_clipping_is_optax_clip_with_its_state_layout(max_norm):
  ours = optim_lib.clip_by_global_norm(max_norm)
  ref = optax.clip_by_global_norm(max_norm)
  state = ours.init(PARAMS)
  assert jax.tree.structure(state) == jax.tree.structure(ref.init(PARAMS))
  got, _ = ours.update(GRADS, state, PARAMS)
  want, _ = ref.update(GRADS, ref.init(PARAMS), PARAMS)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6),
               got, want)


def test_clipping_uses_the_norm_the_caller_gives():
  """The train step passes the norm it logs; the clip then scales by it
  instead of reducing the gradients again."""
  norm = float(optax.tree.norm(GRADS))
  tx = optim_lib.clip_by_global_norm(norm / 4)
  given, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS, grad_norm=2 * norm)
  jax.tree.map(lambda g, u: np.testing.assert_allclose(u, g / 8, rtol=1e-6),
               GRADS, given)
  # Through the whole chain (make_optimizer), groups and all.
  cfg = _opt_cfg(lr=1.0, name='sgd', b1=None, b2=None, weight_decay=0.0,
                 clip_norm=norm / 4, lr_mults=(('bias', 0.5),))
  tx = optim_lib.make_optimizer(cfg, 10)
  own, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  given, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS, grad_norm=2 * norm)
  jax.tree.map(lambda o, g: np.testing.assert_allclose(g, o / 2, rtol=1e-6),
               own, given)
