"""optax optimizer from config: warmup and a registered schedule, a
registered optimizer, clipping, frozen parameters and per-group learning
rates.

config.optimizer holds the keys every optimizer shares (GENERIC_KEYS) and
the named optimizer's own arguments beside them:
  name            a registered optimizer: 'adamw', 'lion', 'sgd' or yours
  lr, warmup_steps, schedule, final_fraction
                  linear warmup to lr, then a registered schedule: 'cosine'
                  (the default) or 'linear' decay to lr * final_fraction at
                  the last step, 'rsqrt' (inverse square root) or
                  'constant'; yours: @registry.register('schedule', NAME)
  weight_decay    decay of the matrices (ndim > 1); biases, norms and
                  scalars are never decayed
  clip_norm       global gradient norm clip (0: none); the train step hands
                  it the norm it logs (clip_by_global_norm)
  frozen, lr_mults
                  parameter groups (below)
  anything else   the optimizer's own arguments, e.g. adamw's b1, b2, eps,
                  mu_dtype; a value of None leaves the optimizer's default.

An optimizer of your own is one function registered as ('optimizer', NAME)
in a module listed in config.imports:

    @registry.register('optimizer', 'my_opt')
    def my_opt(learning_rate, *, weight_decay, decay_mask, beta=0.9):
      return optax.chain(...)      # an optax.GradientTransformation

learning_rate is an optax schedule (step -> lr), weight_decay a float,
decay_mask a function params -> bool tree (True: decay it); the config
check rejects arguments the function does not take. The train step calls
the whole chain's update with the optax extra argument grad_norm (for the
clipping): a plain GradientTransformation never sees it, an optax
GradientTransformationExtraArgs of yours must take **extra_args.

Parameter groups are chosen by regexes over '/'-joined parameter paths (as
in multimodal.tree, e.g. 'towers/image/core/embed/kernel'):
  config.optimizer.frozen    (regex, ...): parameters that never change
                             (LiT: a locked image tower). They get no
                             gradient computation, no update, no weight
                             decay and no optimizer state, and do not count
                             in the clipping norm.
  config.optimizer.lr_mults  ((regex, multiplier), ...): the first match
                             scales that parameter's learning rate (e.g. a
                             pretrained tower at 0.1x); the rest get 1x.
"""
from __future__ import annotations

import inspect
import re
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from multimodal import registry
from multimodal import tree as tree_lib

FROZEN = 'frozen'
GENERIC_KEYS = ('name', 'lr', 'schedule', 'warmup_steps', 'final_fraction',
                'weight_decay', 'clip_norm', 'frozen', 'lr_mults')


# ------------------------------------------------- registered optimizers ---

@registry.register('optimizer', 'adamw')
def adamw(learning_rate, *, weight_decay: float, decay_mask: Callable,
          b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          mu_dtype: str | None = None) -> optax.GradientTransformation:
  """AdamW (decoupled weight decay). mu_dtype='bfloat16' keeps the first
  moment in bfloat16 (as big_vision's configs do): a quarter less optimizer
  memory and traffic; the second moment stays float32."""
  return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps,
                     weight_decay=weight_decay, mask=decay_mask,
                     mu_dtype=_dtype(mu_dtype))


@registry.register('optimizer', 'lion')
def lion(learning_rate, *, weight_decay: float, decay_mask: Callable,
         b1: float = 0.9, b2: float = 0.99,
         mu_dtype: str | None = None) -> optax.GradientTransformation:
  """Lion (Chen et al. 2023): the sign of an interpolated momentum; it
  wants a 3-10x smaller lr and a larger weight_decay than AdamW."""
  return optax.lion(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay,
                    mask=decay_mask, mu_dtype=_dtype(mu_dtype))


@registry.register('optimizer', 'sgd')
def sgd(learning_rate, *, weight_decay: float, decay_mask: Callable,
        momentum: float = 0.9,
        nesterov: bool = False) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum; weight_decay is added to the gradient
  before the momentum (PyTorch's SGD weight_decay), so it scales with lr."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay, decay_mask),
      optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))


def _dtype(name):
  return None if name is None else jnp.dtype(name)


def own_arguments(opt_cfg) -> dict:
  """The named optimizer's own arguments: config.optimizer's keys beyond
  GENERIC_KEYS whose value is not None."""
  return {k: v for k, v in opt_cfg.items()
          if k not in GENERIC_KEYS and v is not None}


def unknown_arguments(opt_cfg) -> list[str]:
  """Own arguments the registered optimizer does not take (sorted)."""
  params = inspect.signature(
      registry.get('optimizer', opt_cfg['name'])).parameters
  if any(p.kind is p.VAR_KEYWORD for p in params.values()):
    return []
  return sorted(set(own_arguments(opt_cfg)) - set(params))


# ------------------------------------------------- registered schedules ---
# A schedule is what follows the linear warmup: fn(peak, *, end, decay_steps,
# warmup_steps) -> optax schedule of the steps counted from the warmup's end
# (decay_steps of them to the end of the run).

@registry.register('schedule', 'cosine')
def cosine(peak: float, *, end: float, decay_steps: int, warmup_steps: int):
  """Cosine decay from peak to end over decay_steps."""
  del warmup_steps
  return optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak)


@registry.register('schedule', 'linear')
def linear(peak: float, *, end: float, decay_steps: int, warmup_steps: int):
  """Linear decay from peak to end over decay_steps."""
  del warmup_steps
  return optax.linear_schedule(peak, end, decay_steps)


@registry.register('schedule', 'rsqrt')
def rsqrt(peak: float, *, end: float, decay_steps: int, warmup_steps: int):
  """Inverse square root of the step, continuous with the warmup: peak *
  sqrt(w / (w + s)) at s steps after a warmup of w (w >= 1); end unused."""
  del end, decay_steps
  w = max(warmup_steps, 1)
  return lambda s: peak * jnp.sqrt(w / (w + jnp.asarray(s, jnp.float32)))


@registry.register('schedule', 'constant')
def constant(peak: float, *, end: float, decay_steps: int,
             warmup_steps: int):
  """peak until the end of the run; end unused."""
  del end, decay_steps, warmup_steps
  return optax.constant_schedule(peak)


# ------------------------------------------------------------- assembly ---

def schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to opt_cfg.lr over warmup_steps (clamped to the
  run), then the registered opt_cfg.schedule (default 'cosine') down to
  lr * final_fraction at total_steps."""
  warmup = min(opt_cfg.warmup_steps, max(total_steps - 1, 0))
  peak = opt_cfg.lr
  decay = registry.get('schedule', opt_cfg.get('schedule') or 'cosine')(
      peak, end=peak * opt_cfg.final_fraction,
      decay_steps=max(total_steps - warmup, 1), warmup_steps=warmup)
  if warmup == 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _decay_mask(params):
  # Decay matrices only: biases, norms and scalars (temperature) stay free.
  return jax.tree.map(lambda p: getattr(p, 'ndim', 0) > 1, params)


def _group(mult: float) -> str:
  # String labels: optax keeps group states in a dict, whose keys must sort.
  return f'lr x{mult:g}'


def _label_fn(opt_cfg):
  """params -> tree of group labels: 'frozen' or 'lr x<multiplier>'."""
  frozen = tuple(opt_cfg.get('frozen', ()))
  mults = tuple((p, float(m)) for p, m in opt_cfg.get('lr_mults', ()))

  def label(path, _):
    key = tree_lib.path_str(path)
    if any(re.search(p, key) for p in frozen):
      return FROZEN
    for pattern, mult in mults:
      if re.search(pattern, key):
        return _group(mult)
    return _group(1.0)

  return lambda params: jax.tree_util.tree_map_with_path(label, params)


def frozen_mask(opt_cfg, params):
  """bool tree: True for the parameters config.optimizer.frozen names."""
  return jax.tree.map(lambda l: l == FROZEN, _label_fn(opt_cfg)(params))


def group_sizes(opt_cfg, params) -> dict:
  """{label: number of values} for logging which groups a config makes."""
  sizes = {}
  for label, p in zip(jax.tree.leaves(_label_fn(opt_cfg)(params)),
                      jax.tree.leaves(params)):
    sizes[label] = sizes.get(label, 0) + p.size
  return sizes


def clip_by_global_norm(max_norm: float
                        ) -> optax.GradientTransformationExtraArgs:
  """Scales the updates by max_norm / their global norm where that is
  above max_norm (optax.clip_by_global_norm, with the same empty state).

  update(updates, state, params, grad_norm=None): a caller that has the
  norm already (the train step logs it) passes it as `grad_norm`, so the
  gradients are not reduced a second time inside the step's conditional
  update. The scale is one scalar multiplied in, so XLA fuses it into the
  optimizer's own elementwise update; optax's divide is materialised as a
  clipped copy of every gradient (ViT-B/32 SigLIP: 632 MB written and read
  again per step).
  """

  def update(updates, state, params=None, *, grad_norm=None, **extra_args):
    del params, extra_args
    if grad_norm is None:
      grad_norm = optax.tree.norm(updates)
    scale = jnp.where(grad_norm < max_norm, 1.0, max_norm / grad_norm)
    return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates), state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state,
                                               update)


def make_optimizer(opt_cfg, total_steps: int
                   ) -> optax.GradientTransformationExtraArgs:
  """The whole update of config.optimizer: frozen parameters zeroed,
  global-norm clipping, then the registered optimizer per lr group.

  update(grads, state, params, grad_norm=None): `grad_norm`, the global
  norm of the (unfrozen) gradients where the caller has it, spares the
  clipping its own reduction."""
  base = registry.get('optimizer', opt_cfg.name)
  unknown = unknown_arguments(opt_cfg)
  if unknown:
    raise ValueError(f'config.optimizer: {opt_cfg.name!r} takes no '
                     f'argument(s) {unknown}; remove them or set them to '
                     'None.')
  sched = schedule(opt_cfg, total_steps)
  labels = _label_fn(opt_cfg)

  def build(mult: float):
    lr = sched if mult == 1.0 else (lambda step: mult * sched(step))
    return base(lr, weight_decay=float(opt_cfg.get('weight_decay') or 0.0),
                decay_mask=_decay_mask, **own_arguments(opt_cfg))

  groups = {_group(1.0): build(1.0), FROZEN: optax.set_to_zero()}
  for _, mult in opt_cfg.get('lr_mults', ()):
    groups.setdefault(_group(float(mult)), build(float(mult)))
  parts = []
  if opt_cfg.get('frozen'):
    # Frozen gradients are zero before clipping, so they do not shrink the
    # others' updates through the global norm.
    parts.append(optax.masked(optax.set_to_zero(),
                              lambda p: frozen_mask(opt_cfg, p)))
  if opt_cfg.clip_norm:
    parts.append(clip_by_global_norm(opt_cfg.clip_norm))
  if len(groups) == 2 and not opt_cfg.get('frozen'):
    parts.append(groups[_group(1.0)])  # one group: the plain optimizer state layout
  else:
    parts.append(optax.multi_transform(groups, labels))
  return optax.chain(*parts)
