"""optax optimizer from config: warmup + cosine schedule, AdamW, clipping."""
from __future__ import annotations

import optax


def schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to opt_cfg.lr, then cosine decay to lr * final_fraction."""
  warmup = min(opt_cfg.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=opt_cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=opt_cfg.lr * opt_cfg.final_fraction)


def _decay_mask(params):
  # Decay matrices only: biases, norms and scalars (temperature) stay free.
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda p: getattr(p, 'ndim', 0) > 1, params)


def make_optimizer(opt_cfg, total_steps: int) -> optax.GradientTransformation:
  if opt_cfg.name != 'adamw':
    raise ValueError(f'Unknown optimizer {opt_cfg.name!r}; supported: adamw.')
  parts = []
  if opt_cfg.clip_norm:
    parts.append(optax.clip_by_global_norm(opt_cfg.clip_norm))
  parts.append(optax.adamw(schedule(opt_cfg, total_steps), b1=opt_cfg.b1,
                           b2=opt_cfg.b2, weight_decay=opt_cfg.weight_decay,
                           mask=_decay_mask))
  return optax.chain(*parts)
