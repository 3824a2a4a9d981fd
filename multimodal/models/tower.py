"""What every transformer tower shares: its Encoder (and MAP head) options.

ViT, the audio transformer and the text transformer take these options as
keyword arguments (`**options`) next to their own input geometry, plus a
named size `variant` (see sizes.py) that explicit options override. They
list `OPTIONS = EncoderOptions` so that build_model accepts exactly these
names and names any other as unknown.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp
from flax import nnx

from multimodal.models import sizes
from multimodal.models.pooling import MAPHead
from multimodal.models.transformer import Encoder


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
  """Size and computation of a tower's pre-LN Encoder and MAP head.

  width: token width D. depth: number of EncoderBlocks. num_heads: attention
    heads. mlp_ratio / mlp_dim: MLP hidden size int(width * mlp_ratio),
    unless mlp_dim is given. activation: a registered activation
    (models/activations.py). dropout: rate on residual branches and
    embeddings. layernorm_epsilon: of every LayerNorm. attention_impl: the
    attention core, one of attention_core.IMPLEMENTATIONS (None: 'einsum'
    on CPU, jax.nn.dot_product_attention's choice elsewhere). remat: a
    transformer.REMAT_POLICIES name. scan_layers: stacked blocks run by
    nnx.scan (another parameter layout). dtype: compute dtype. param_dtype:
    parameter dtype.
  """
  width: int = sizes.DEFAULT_SIZE['width']
  depth: int = sizes.DEFAULT_SIZE['depth']
  num_heads: int = sizes.DEFAULT_SIZE['num_heads']
  mlp_ratio: float = sizes.DEFAULT_SIZE['mlp_ratio']
  mlp_dim: int | None = sizes.DEFAULT_SIZE['mlp_dim']
  activation: str = 'gelu'
  dropout: float = 0.0
  layernorm_epsilon: float = 1e-6
  attention_impl: str | None = None
  remat: str = 'none'
  scan_layers: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @classmethod
  def names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))

  @classmethod
  def resolve(cls, owner: str, variant: str | None,
              options: Mapping[str, Any], *, patches: bool = False
              ) -> tuple[EncoderOptions, int | None]:
    """(options over the variant's sizes, the variant's patch size or None).

    `owner` names the module in errors, e.g. 'vit'.
    """
    unknown = sorted(set(options) - set(cls.names()))
    if unknown:
      raise ValueError(f'{owner}: unknown argument(s) {unknown}. Encoder '
                       f'options: {", ".join(cls.names())}.')
    values, patch = sizes.resolve(variant, options, patches=patches)
    return cls(**values), patch

  def encoder(self, rngs: nnx.Rngs, **overrides) -> Encoder:
    """The Encoder; `overrides` are Encoder arguments (e.g. depth,
    final_norm) that replace these options'."""
    kw = dict(activation=self.activation, dropout=self.dropout,
              layernorm_epsilon=self.layernorm_epsilon,
              attention_impl=self.attention_impl, remat=self.remat,
              scan_layers=self.scan_layers, mlp_dim=self.mlp_dim,
              dtype=self.dtype, param_dtype=self.param_dtype)
    kw.update(overrides)
    depth = kw.pop('depth', self.depth)
    return Encoder(self.width, depth, self.num_heads, self.mlp_ratio,
                   rngs=rngs, **kw)

  def map_head(self, rngs: nnx.Rngs) -> MAPHead:
    return MAPHead(self.width, self.num_heads, self.mlp_ratio,
                   activation=self.activation,
                   layernorm_epsilon=self.layernorm_epsilon,
                   attention_impl=self.attention_impl, mlp_dim=self.mlp_dim,
                   dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
