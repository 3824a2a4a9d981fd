"""Vision Transformer (ViT) image tower."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal import registry
from multimodal.models.patch_transformer import PatchTransformer


@registry.register('model', 'vit')
class ViT(nnx.Module):
  """ViT over square images [B, image_size, image_size, channels].

  See PatchTransformer for the layers and for the options mlp_dim,
  patch_bias, pre_norm and posemb_cls (used to match HF ViT / CLIP / SigLIP
  checkpoints, see multimodal.hf_import); this class only fixes the geometry.
  """

  def __init__(self, *, image_size: int = 16, patch_size: int = 4,
               channels: int = 1, width: int = 128, depth: int = 2,
               num_heads: int = 4, mlp_ratio: float = 4, pool: str = 'cls',
               posemb: str = 'learned', dropout: float = 0.0,
               activation: str = 'gelu', layernorm_epsilon: float = 1e-6,
               dtype=jnp.float32, param_dtype=jnp.float32,
               attention_impl: str | None = None, remat: str = 'none',
               scan_layers: bool = False, mlp_dim: int | None = None,
               patch_bias: bool = True, pre_norm: bool = False,
               posemb_cls: bool = False, rngs: nnx.Rngs):
    self.width = width  # size of the pooled output
    self.core = PatchTransformer(
        input_size=(image_size, image_size), patch_size=(patch_size,) * 2,
        channels=channels, width=width, depth=depth, num_heads=num_heads,
        mlp_ratio=mlp_ratio, pool=pool, posemb=posemb, dropout=dropout,
        activation=activation, layernorm_epsilon=layernorm_epsilon,
        dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl,
        remat=remat, scan_layers=scan_layers, mlp_dim=mlp_dim,
        patch_bias=patch_bias, pre_norm=pre_norm, posemb_cls=posemb_cls,
        rngs=rngs)

  def __call__(self, images: jax.Array, *, deterministic: bool = True
               ) -> tuple[jax.Array, jax.Array]:
    """images: float [B, H, W, C] -> (pooled [B, width], tokens [B, N, width]).

    N = (H / patch_size) * (W / patch_size); outputs in the compute dtype.
    """
    return self.core(images, deterministic=deterministic)
