"""Vision Transformer (ViT) image tower."""
from __future__ import annotations

import jax
from flax import nnx

from multimodal import registry
from multimodal.models.patch_transformer import PatchTransformer
from multimodal.models.tower import EncoderOptions

DEFAULT_PATCH = 4


# Also a whole model on its own (e.g. an imported HF ViT).
@registry.register('model', 'vit')
@registry.register('encoder', 'vit')
class ViT(nnx.Module):
  """ViT over square images [B, image_size, image_size, channels].

  Sizes: `variant` names one ('B/16': base size, 16 x 16 patches; see
  sizes.py) and `**options` (EncoderOptions: width, depth, num_heads,
  mlp_ratio, mlp_dim, activation, dropout, layernorm_epsilon,
  attention_impl, remat, scan_layers, dtype, param_dtype) override it.
  Without either, width 128, depth 2, 4 heads, mlp_ratio 4.
  patch_size: side of the square patches; default the variant's, else 4.
  pool, posemb, patch_bias, pre_norm, posemb_cls: see PatchTransformer
  (the last three match HF ViT / CLIP / SigLIP checkpoints, see
  multimodal.hf_import).
  """
  OPTIONS = EncoderOptions  # the **options build_model accepts

  def __init__(self, *, image_size: int = 16, patch_size: int | None = None,
               channels: int = 1, pool: str = 'cls', posemb: str = 'learned',
               patch_bias: bool = True, pre_norm: bool = False,
               posemb_cls: bool = False, variant: str | None = None,
               rngs: nnx.Rngs, **options):
    encoder, patch = EncoderOptions.resolve('vit', variant, options,
                                            patches=True)
    patch_size = patch_size or patch or DEFAULT_PATCH
    self.width = encoder.width  # size of the pooled output
    self.core = PatchTransformer(
        input_size=(image_size, image_size), patch_size=(patch_size,) * 2,
        channels=channels, encoder=encoder, pool=pool, posemb=posemb,
        patch_bias=patch_bias, pre_norm=pre_norm, posemb_cls=posemb_cls,
        rngs=rngs)

  def __call__(self, images: jax.Array, *, deterministic: bool = True
               ) -> tuple[jax.Array, jax.Array]:
    """images: float [B, H, W, C] -> (pooled [B, width], tokens [B, N, width]).

    N = (H / patch_size) * (W / patch_size); outputs in the compute dtype.
    """
    return self.core(images, deterministic=deterministic)
