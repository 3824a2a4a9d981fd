"""Pre-LayerNorm transformer encoder: Mlp, EncoderBlock, Encoder."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal.models import matmul
from multimodal.models.activations import get_activation
from multimodal.models import pipeline_parallel as pipeline
from multimodal.models.attention import MultiHeadAttention
from multimodal.models.partitioning import axes, constrain


def layer_norm(width: int, *, epsilon: float = 1e-6, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """LayerNorm over the last axis; scale and bias [width] named ('norm',)."""
  return nnx.LayerNorm(width, epsilon=epsilon, dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs,
                       scale_metadata=axes('norm'), bias_metadata=axes('norm'))


def make_dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
  # Without dropout, keep no RNG state in the module, so that a model's state
  # is its parameters alone (the trainer re-merges graphdef + params).
  return nnx.Dropout(rate, rngs=rngs if rate > 0 else None)


class Mlp(nnx.Module):
  """Dense -> activation -> dropout -> Dense.

  Kernels [D, hidden] ('embed', 'mlp') and [hidden, D] ('mlp', 'embed').
  """

  def __init__(self, width: int, hidden: int, *, activation: str = 'gelu',
               dropout_rate: float = 0.0, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.act = get_activation(activation)
    self.fc1 = matmul.Dense(width, hidden, dtype=dtype, param_dtype=param_dtype,
                          kernel_init=nnx.initializers.xavier_uniform(),
                          rngs=rngs, kernel_metadata=axes('embed', 'mlp'),
                          bias_metadata=axes('mlp'))
    self.drop = make_dropout(dropout_rate, rngs)
    self.fc2 = matmul.Dense(hidden, width, dtype=dtype, param_dtype=param_dtype,
                          kernel_init=nnx.initializers.xavier_uniform(),
                          rngs=rngs, kernel_metadata=axes('mlp', 'embed'),
                          bias_metadata=axes('embed'))

  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """[..., D] -> [..., D] in the compute dtype."""
    x = self.act(self.fc1(x))
    x = constrain(x, ('act_batch', 'act_length', 'act_mlp'))
    x = self.drop(x, deterministic=deterministic)
    return self.fc2(x)


def mlp_hidden(width: int, mlp_ratio: float, mlp_dim: int | None) -> int:
  """MLP hidden units: `mlp_dim` when given, else int(width * mlp_ratio).

  An explicit size exists because imported checkpoints have hidden sizes
  (e.g. SigLIP So400m: 1152 -> 4304) that a float ratio need not reproduce
  exactly after int().
  """
  if mlp_dim is not None:
    if mlp_dim <= 0:
      raise ValueError(f'mlp_dim must be positive, got {mlp_dim}.')
    return int(mlp_dim)
  return int(width * mlp_ratio)


class EncoderBlock(nnx.Module):
  """x + Attn(LN(x)), then x + Mlp(LN(x)); dropout on both residual branches.

  mlp_dim: MLP hidden size; None means int(width * mlp_ratio).
  """

  def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4, *,
               activation: str = 'gelu', dropout: float = 0.0,
               layernorm_epsilon: float = 1e-6, dtype=jnp.float32,
               param_dtype=jnp.float32, attention_impl: str | None = None,
               mlp_dim: int | None = None, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.attn = MultiHeadAttention(width, num_heads,
                                   attention_impl=attention_impl, **kw)
    self.norm2 = layer_norm(width, epsilon=layernorm_epsilon, **kw)
    self.mlp = Mlp(width, mlp_hidden(width, mlp_ratio, mlp_dim),
                   activation=activation, dropout_rate=dropout, **kw)
    self.drop = make_dropout(dropout, rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    """[B, L, D] -> [B, L, D]; `mask` as in MultiHeadAttention."""
    x = constrain(x, ('act_batch', 'act_length', 'act_embed'))
    y = self.attn(self.norm1(x), mask=mask)
    x = x + self.drop(y, deterministic=deterministic)
    y = self.mlp(self.norm2(x), deterministic=deterministic)
    return x + self.drop(y, deterministic=deterministic)


# Rematerialisation policies for Encoder(remat=...): what the backward pass may
# keep from the forward pass of a block instead of recomputing it.
REMAT_POLICIES = {
    'none': None,  # no remat: keep everything (fastest, most memory)
    'full': jax.checkpoint_policies.nothing_saveable,  # recompute the block
    'dots': jax.checkpoint_policies.dots_saveable,  # keep matmul outputs
    'dots_no_batch':  # keep only weight matmuls (not attention scores)
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def make_blocks(block, depth: int, scan_layers: bool, rngs: nnx.Rngs):
  """`depth` blocks from `block(rngs)`: an nnx.List, or with scan_layers one
  block whose parameters are stacked along a leading axis named 'layers'
  (for nnx.scan)."""
  if scan_layers:
    stack = nnx.split_rngs(splits=depth)(nnx.vmap(
        block, in_axes=0, out_axes=0,
        transform_metadata={nnx.PARTITION_NAME: 'layers'}))
    return stack(rngs)
  return nnx.List([block(rngs) for _ in range(depth)])


class Encoder(nnx.Module):
  """A stack of `depth` pre-LN EncoderBlocks followed by a final LayerNorm.

  remat: a REMAT_POLICIES name, applied per block.
  scan_layers: store the blocks stacked (leading axis named 'layers') and run
    them with `nnx.scan`, so compile time does not grow with depth. The
    parameters then have a different layout from the unrolled stack. Under
    a mesh with a `stage` axis, the stack runs as a pipeline over it
    (models/pipeline_parallel.py).
  mlp_dim: MLP hidden size; None means int(width * mlp_ratio).
  final_norm: False leaves out the final LayerNorm, so that a stack whose
    residual branches are zero is the identity (a video tower's temporal
    stage, models/video.py).
  """

  def __init__(self, width: int, depth: int, num_heads: int,
               mlp_ratio: float = 4, *, activation: str = 'gelu',
               dropout: float = 0.0, layernorm_epsilon: float = 1e-6,
               dtype=jnp.float32, param_dtype=jnp.float32,
               attention_impl: str | None = None, remat: str = 'none',
               scan_layers: bool = False, mlp_dim: int | None = None,
               final_norm: bool = True, rngs: nnx.Rngs):
    if remat not in REMAT_POLICIES:
      raise ValueError(f'remat must be one of {sorted(REMAT_POLICIES)}, got '
                       f'{remat!r}.')
    self.remat = remat
    self.scan_layers = scan_layers

    def block(rngs):
      return EncoderBlock(width, num_heads, mlp_ratio, activation=activation,
                          dropout=dropout, layernorm_epsilon=layernorm_epsilon,
                          dtype=dtype, param_dtype=param_dtype,
                          attention_impl=attention_impl, mlp_dim=mlp_dim,
                          rngs=rngs)

    self.blocks = make_blocks(block, depth, scan_layers, rngs)
    self.norm = layer_norm(width, epsilon=layernorm_epsilon, dtype=dtype,
                           param_dtype=param_dtype,
                           rngs=rngs) if final_norm else None

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    """Encodes x: [B, L, D] -> [B, L, D] in the compute dtype.

    Args:
      x: token features [B, L, D].
      mask: bool attention mask broadcastable to [B, heads, L, L], True where
        a query may attend to a key; None attends everywhere.
      deterministic: disables dropout when True.
    """
    def apply(x, block, mask):
      return block(x, mask, deterministic=deterministic)

    if self.remat != 'none':
      apply = nnx.remat(apply, policy=REMAT_POLICIES[self.remat])
    if self.scan_layers and pipeline.num_stages() > 1:
      x = pipeline.run(apply, self.blocks, x, mask)
    elif self.scan_layers:
      x = nnx.scan(lambda x, block: apply(x, block, mask),
                   in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, self.blocks)
    else:
      for block in self.blocks:
        x = apply(x, block, mask)
    return x if self.norm is None else self.norm(x)
