"""Contrastive multi-tower model (CLIP / SigLIP style) over modality pairs."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal import registry
from multimodal import sharded_losses
from multimodal.models import matmul
from multimodal.models.builder import (build_model, config_to_dict,
                                       with_defaults)
from multimodal.models.partitioning import axes

PROJECTIONS = ('linear', 'linear_bias', 'identity')


class Identity(nnx.Module):
  """A projection that returns its input (no parameters)."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return x


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Unit-norm rows of x [..., E], in float32."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def pair_name(pair: Sequence[str]) -> str:
  return f'{pair[0]}~{pair[1]}'


@registry.register('model', 'contrastive')
class ContrastiveModel(nnx.Module):
  """Named encoder towers, a linear projection per tower, per-pair logit
  scale (and bias for the sigmoid loss).

  Batch fields map to towers through `inputs`, so one tower (e.g. 'text')
  can embed several fields ('image_text', 'audio_text'). Projections
  [width, embed_dim] are named ('embed', 'proj') (a bias [embed_dim]
  ('proj',)); the per-pair log-scale and bias vectors [num_pairs] are
  replicated (axis name None).
  """

  def __init__(self, *, towers: Mapping[str, Any], embed_dim: int,
               pairs: Sequence[Sequence[str]], inputs: Mapping[str, str],
               loss: str = 'sigmoid', temperature_init: float = 10.0,
               bias_init: float = -10.0, sharded_loss: bool = True,
               projection: Mapping[str, str] | None = None,
               dtype=None, param_dtype=None, rngs: nnx.Rngs):
    """Builds every tower.

    Args:
      towers: tower name -> config dict with `name` (the registered encoder)
        and that encoder's kwargs. Each encoder has a `width` attribute and
        returns (pooled [B, width], tokens).
      embed_dim: shared embedding size E.
      pairs: batch-field pairs to contrast, e.g. [('image', 'image_text')].
      inputs: batch field -> tower name.
      loss: a registered contrastive loss (multimodal/losses.py): 'softmax'
        (CLIP), 'sigmoid' (SigLIP) or your own.
      temperature_init: initial logit scale, i.e. the learned log-scale
        starts at log(temperature_init).
      bias_init: initial logit bias (losses that learn one: sigmoid).
      sharded_loss: when a mesh in context splits the batch over several
        devices, compute the loss with the loss's `sharded` form (for the
        built-ins `multimodal.sharded_losses`: SigLIP ring / CLIP local
        rows, whose memory does not grow with the device count). Same value
        and gradients as the plain loss.
      projection: tower name -> its projection head: 'linear' (the default
        for towers not named: a bias-free [width, embed_dim] kernel, as
        CLIP), 'linear_bias' (kernel and bias, as SigLIP's text `head`) or
        'identity' (none; the tower's width must equal embed_dim, as
        SigLIP's image tower, whose attention-pooled output is the
        embedding).
      dtype: compute dtype given to towers that do not set their own (or set
        None); the projections use it too (default float32).
      param_dtype: parameter dtype, likewise (default float32).
      rngs: random streams.
    """
    known = registry.names('contrastive_loss')
    if loss not in known:
      raise ValueError(
          f'loss must be a registered contrastive_loss ({", ".join(known)}), '
          f'got {loss!r}; your own registers with @registry.register('
          "'contrastive_loss', NAME) in a module listed in config.imports.")
    self.loss_fn = registry.get('contrastive_loss', loss)()
    towers = config_to_dict(towers)
    self.inputs = dict(config_to_dict(inputs))
    self.pairs = tuple(tuple(p) for p in pairs)
    self.sharded_loss = sharded_loss
    for field, tower in self.inputs.items():
      if tower not in towers:
        raise ValueError(f'inputs[{field!r}] names tower {tower!r}, but the '
                         f'towers are {sorted(towers)}.')
    for pair in self.pairs:
      if len(pair) != 2 or any(f not in self.inputs for f in pair):
        raise ValueError(f'Pair {pair} must name two fields of inputs '
                         f'{sorted(self.inputs)}.')
    projection = dict(config_to_dict(projection or {}))
    for name, kind in projection.items():
      if name not in towers:
        raise ValueError(f'projection names tower {name!r}, but the towers '
                         f'are {sorted(towers)}.')
      if kind not in PROJECTIONS:
        raise ValueError(f'projection[{name!r}] must be one of '
                         f'{PROJECTIONS}, got {kind!r}.')

    self.towers = nnx.Dict()
    self.heads = nnx.Dict()
    for name, tower_cfg in towers.items():
      cfg = with_defaults(tower_cfg, dtype=dtype, param_dtype=param_dtype)
      self.towers[name] = build_model(cfg, rngs=rngs, kind='encoder')
      kind = projection.get(name, 'linear')
      width = self.towers[name].width
      if kind == 'identity':
        if width != embed_dim:
          raise ValueError(f'projection[{name!r}]="identity" needs the '
                           f'tower width ({width}) to equal embed_dim '
                           f'({embed_dim}).')
        self.heads[name] = Identity()
        continue
      self.heads[name] = matmul.Dense(
          width, embed_dim, use_bias=kind == 'linear_bias',
          dtype=dtype or jnp.float32, param_dtype=param_dtype or jnp.float32,
          rngs=rngs,
          kernel_metadata=axes('embed', 'proj'), bias_metadata=axes('proj'))

    num_pairs = len(self.pairs)
    pdt = param_dtype or jnp.float32
    self.log_scale = nnx.Param(
        jnp.full((num_pairs,), math.log(temperature_init), pdt), **axes(None))
    if self.loss_fn.learns_bias:
      self.bias = nnx.Param(jnp.full((num_pairs,), bias_init, pdt),
                            **axes(None))

  def embed(self, field: str, x: jax.Array, *,
            attention_mask: jax.Array | None = None,
            deterministic: bool = True) -> jax.Array:
    """Embeds batch field `field` (inputs as its tower expects).

    attention_mask: [B, L] (1 = token, 0 = padding) for a text tower (see
    TextEncoder), e.g. HF tokenizer output for an imported CLIP / SigLIP;
    None: the tower's own padding rule.

    Returns:
      float32 [B, embed_dim], L2-normalised rows.
    """
    if field not in self.inputs:
      raise KeyError(f'Field {field!r} has no tower; inputs map '
                     f'{sorted(self.inputs)}.')
    tower = self.inputs[field]
    kwargs = {} if attention_mask is None else {
        'attention_mask': attention_mask}
    pooled, _ = self.towers[tower](x, deterministic=deterministic, **kwargs)
    return l2_normalize(self.heads[tower](pooled))

  def __call__(self, batch: Mapping[str, jax.Array], *,
               deterministic: bool = True) -> dict[str, jax.Array]:
    """Embeds every field of `batch` found in `inputs` (others ignored).

    Returns:
      field -> float32 [B, embed_dim] L2-normalised embeddings.
    """
    return {f: self.embed(f, x, deterministic=deterministic)
            for f, x in batch.items() if f in self.inputs}

  def logit_params(self, pair_index: int
                   ) -> tuple[jax.Array, jax.Array | None]:
    """(scale, bias) float32 scalars for pair `pair_index`.

    scale = exp(learned log-scale) > 0; bias is None unless the loss
    learns one (sigmoid).
    """
    scale = jnp.exp(self.log_scale[pair_index].astype(jnp.float32))
    if not self.loss_fn.learns_bias:
      return scale, None
    return scale, self.bias[pair_index].astype(jnp.float32)

  def _pair_loss(self):
    """The loss function (a, b, scale, bias) for the mesh in context: the
    registered loss's sharded form when the batch is split."""
    mesh = jax.sharding.get_abstract_mesh()
    axes_ = tuple(a for a in sharded_losses.DEFAULT_BATCH_AXES
                  if not mesh.empty and a in mesh.shape)
    if (not self.sharded_loss or not axes_
        or math.prod(mesh.shape[a] for a in axes_) == 1):
      return self.loss_fn
    return lambda a, b, s, t: self.loss_fn.sharded(
        a, b, s, t, mesh=mesh, batch_axes=axes_)

  def loss(self, embeddings: Mapping[str, jax.Array]
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sum over pairs of the configured contrastive loss.

    Args:
      embeddings: field -> [B, embed_dim] (as returned by __call__); must hold
        both fields of every pair.

    Returns:
      (total float32 scalar, metrics) with metrics 'loss/A~B' per pair, and
      'logit_scale/A~B' (and 'logit_bias/A~B' for a loss with a bias).
    """
    total = jnp.zeros((), jnp.float32)
    metrics = {}
    pair_loss = self._pair_loss()
    for i, (a, b) in enumerate(self.pairs):
      missing = [f for f in (a, b) if f not in embeddings]
      if missing:
        raise KeyError(f'Pair {a}~{b} needs embeddings for {missing}; got '
                       f'{sorted(embeddings)}.')
      scale, bias = self.logit_params(i)
      name = pair_name((a, b))
      value = pair_loss(embeddings[a], embeddings[b], scale, bias)
      if bias is not None:
        metrics[f'logit_bias/{name}'] = bias
      metrics[f'loss/{name}'] = value
      metrics[f'logit_scale/{name}'] = scale
      total = total + value
    return total, metrics
