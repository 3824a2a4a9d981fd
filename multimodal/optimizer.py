"""optax optimizer from config: warmup + cosine schedule, AdamW, clipping,
frozen parameters and per-group learning rates.

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

import re

import jax
import optax

from multimodal import tree as tree_lib

FROZEN = 'frozen'


def schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to opt_cfg.lr, then cosine decay to lr * final_fraction."""
  warmup = min(opt_cfg.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=opt_cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=opt_cfg.lr * opt_cfg.final_fraction)


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


def make_optimizer(opt_cfg, total_steps: int) -> optax.GradientTransformation:
  if opt_cfg.name != 'adamw':
    raise ValueError(f'Unknown optimizer {opt_cfg.name!r}; supported: adamw.')
  sched = schedule(opt_cfg, total_steps)
  labels = _label_fn(opt_cfg)

  def adamw(mult: float):
    lr = sched if mult == 1.0 else (lambda step: mult * sched(step))
    return optax.adamw(lr, b1=opt_cfg.b1, b2=opt_cfg.b2,
                       weight_decay=opt_cfg.weight_decay, mask=_decay_mask)

  groups = {_group(1.0): adamw(1.0), FROZEN: optax.set_to_zero()}
  for _, mult in opt_cfg.get('lr_mults', ()):
    groups.setdefault(_group(float(mult)), adamw(float(mult)))
  parts = []
  if opt_cfg.get('frozen'):
    # Frozen gradients are zero before clipping, so they do not shrink the
    # others' updates through the global norm.
    parts.append(optax.masked(optax.set_to_zero(),
                              lambda p: frozen_mask(opt_cfg, p)))
  if opt_cfg.clip_norm:
    parts.append(optax.clip_by_global_norm(opt_cfg.clip_norm))
  if len(groups) == 2 and not opt_cfg.get('frozen'):
    parts.append(groups[_group(1.0)])  # one group: the plain optimizer state layout
  else:
    parts.append(optax.multi_transform(groups, labels))
  return optax.chain(*parts)
