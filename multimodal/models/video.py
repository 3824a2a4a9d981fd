"""Video tower (ViViT): tubelet embedding, then a factorised space-then-time
encoder or one joint space-time encoder; inflation from an image ViT."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from multimodal import registry
from multimodal.models import posemb as posemb_lib
from multimodal.models.patch_transformer import PatchTransformer
from multimodal.models.pooling import masked_mean
from multimodal.models.tower import EncoderOptions
from multimodal.models.transformer import EncoderBlock

DEFAULT_PATCH = 4
ATTENTIONS = ('factorised', 'joint')
TEMPORAL_POOLS = ('mean', 'map')
TEMPORAL_INITS = ('identity', 'random')
INFLATIONS = ('average', 'center')


def to_tubelets(clips: jax.Array, time: int) -> jax.Array:
  """[B, T, H, W, C] -> [B * T/time, H, W, time * C]: each group of `time`
  frames as one image whose pixels hold (frame, channel) features, so that
  a patch of it is a (time, ph, pw) tubelet, flattened in (ph, pw, time, C)
  order."""
  b, t, h, w, c = clips.shape
  x = clips.reshape(b, t // time, time, h, w, c)
  x = x.transpose(0, 1, 3, 4, 2, 5)
  return x.reshape(b * (t // time), h, w, time * c)


def inflate_kernel(kernel: np.ndarray, time: int, channels: int,
                   method: str = 'average') -> np.ndarray:
  """An image patch kernel [ph*pw*C, D] -> a tubelet kernel [ph*pw*time*C,
  D] (to_tubelets' order).

  'average': the image kernel / time at every frame of the tubelet;
  'center': the image kernel at the central frame (index time // 2), zeros
  elsewhere. Either way a tubelet of identical frames embeds as the image
  patch does.
  """
  if method not in INFLATIONS:
    raise ValueError(f'inflate must be one of {INFLATIONS}, got {method!r}.')
  kernel = np.asarray(kernel)
  d = kernel.shape[-1]
  k = kernel.reshape(-1, 1, channels, d)  # [ph*pw, 1, C, D]
  if method == 'average':
    out = np.repeat(k / time, time, axis=1)
  else:
    out = np.zeros((k.shape[0], time, channels, d), kernel.dtype)
    out[:, time // 2] = k[:, 0]
  return out.reshape(-1, d).astype(kernel.dtype)


# Also a whole model on its own, like ViT.
@registry.register('model', 'vivit')
@registry.register('encoder', 'vivit')
class VideoViT(nnx.Module):
  """ViViT over clips [B, num_frames, image_size, image_size, channels].

  Tubelets of (tubelet_time, patch, patch) are embedded linearly (kernel
  [patch*patch*tubelet_time*channels, D], ('patch', 'embed')) with the
  spatial position table of a ViT; the frames' tokens are then encoded:
    attention='factorised' (ViViT model 2): the spatial encoder (a ViT's,
      `pool` per tubelet step) turns each step into one vector; a learned
      temporal position table [T', D] is added and a temporal transformer of
      `temporal_depth` pre-LN blocks (no final norm) runs over the T' =
      num_frames / tubelet_time steps; `temporal_pool` ('mean' or 'map')
      pools them. Tokens out: [B, T', D].
    attention='joint' (ViViT model 1): the temporal table is added to every
      token of its step and one encoder (the ViT's) attends over all
      T' * N tokens; `pool` pools them. Tokens out: [B, T' * N, D].
  The spatial stage is a PatchTransformer stored as `core`, as ViT's, so an
  image ViT's parameters load by the same paths (init_from; the tubelet
  kernel is inflated, see inflate_kernel).

  temporal_init='identity' (default) starts the temporal position table
  and the temporal blocks' output projections (attention out, MLP fc2) at
  zero, so the temporal stage starts as the identity and an inflated image
  tower embeds a clip of identical frames as the image (exactly for
  factorised; for joint with pool 'mean' or 'map', whose result does not
  change when every token is repeated T' times; not with 'cls'). 'random'
  initialises them as any layer.

  Sizes: `variant` and `**options` (EncoderOptions: width, depth, ...,
  remat, scan_layers, attention_impl, dtype) as for ViT, shared by the
  spatial and temporal stages. pool, posemb, patch_bias, pre_norm,
  posemb_cls: as ViT's.
  """
  OPTIONS = EncoderOptions  # the **options build_model accepts

  def __init__(self, *, num_frames: int = 8, image_size: int = 16,
               patch_size: int | None = None, tubelet_time: int = 2,
               channels: int = 1, attention: str = 'factorised',
               temporal_depth: int = 1, temporal_pool: str = 'mean',
               temporal_init: str = 'identity', pool: str = 'cls',
               posemb: str = 'learned', patch_bias: bool = True,
               pre_norm: bool = False, posemb_cls: bool = False,
               variant: str | None = None, rngs: nnx.Rngs, **options):
    encoder, patch = EncoderOptions.resolve('vivit', variant, options,
                                            patches=True)
    for key, value, valid in (('attention', attention, ATTENTIONS),
                              ('temporal_pool', temporal_pool,
                               TEMPORAL_POOLS),
                              ('temporal_init', temporal_init,
                               TEMPORAL_INITS)):
      if value not in valid:
        raise ValueError(f'{key} must be one of {valid}, got {value!r}.')
    if tubelet_time < 1 or num_frames % tubelet_time:
      raise ValueError(f'tubelet_time must be a positive divisor of '
                       f'num_frames={num_frames}, got {tubelet_time}.')
    if temporal_depth < 1:
      raise ValueError(f'temporal_depth must be >= 1, got {temporal_depth}.')
    patch_size = patch_size or patch or DEFAULT_PATCH
    self.num_frames, self.image_size = num_frames, image_size
    self.channels, self.tubelet_time = channels, tubelet_time
    self.attention = attention
    self.temporal_pool = temporal_pool
    self.steps = num_frames // tubelet_time
    self.width = encoder.width  # size of the pooled output
    self.dtype = encoder.dtype
    self.core = PatchTransformer(
        input_size=(image_size, image_size), patch_size=(patch_size,) * 2,
        channels=tubelet_time * channels, encoder=encoder, pool=pool,
        posemb=posemb, patch_bias=patch_bias, pre_norm=pre_norm,
        posemb_cls=posemb_cls, rngs=rngs)
    self.temporal_posemb = posemb_lib.LearnedPosEmb(
        self.steps, encoder.width, param_dtype=encoder.param_dtype, rngs=rngs)
    if attention == 'factorised':
      self.temporal = encoder.encoder(rngs, depth=temporal_depth,
                                      final_norm=False)
      if temporal_pool == 'map':
        self.temporal_map = encoder.map_head(rngs)
    if temporal_init == 'identity':
      self._zero_temporal()

  def _zero_temporal(self):
    """Temporal table and residual-branch outputs to zero (class docstring).
    """
    zero = lambda v: v.set_value(jnp.zeros_like(v.get_value()))
    zero(self.temporal_posemb.embedding)
    if self.attention != 'factorised':
      return
    for _, node in nnx.iter_graph(self.temporal):
      if isinstance(node, EncoderBlock):
        for layer in (node.attn.out, node.mlp.fc2):
          zero(layer.kernel)
          zero(layer.bias)

  def __call__(self, clips: jax.Array, *, deterministic: bool = True
               ) -> tuple[jax.Array, jax.Array]:
    """clips: float [B, T, S, S, C] -> (pooled [B, width], tokens).

    tokens: [B, T', width] (factorised) or [B, T' * N, width] (joint), T' =
    T / tubelet_time, N = (S / patch)^2; outputs in the compute dtype.
    """
    want = (self.num_frames, self.image_size, self.image_size, self.channels)
    if clips.ndim != 5 or tuple(clips.shape[1:]) != want:
      raise ValueError(f'Expected clips [B, {", ".join(map(str, want))}] '
                       f'(frames, size, size, channels), got '
                       f'{tuple(clips.shape)}.')
    b = clips.shape[0]
    tokens = self.core.embed_tokens(to_tubelets(clips, self.tubelet_time))
    time_table = self.temporal_posemb().astype(self.dtype)  # [T', D]
    if self.attention == 'joint':
      tokens = tokens.reshape(b, self.steps, -1, self.width)
      tokens = (tokens + time_table[None, :, None]).reshape(b, -1, self.width)
      return self.core.encode(tokens, deterministic=deterministic)
    steps, _ = self.core.encode(tokens, deterministic=deterministic)
    steps = steps.reshape(b, self.steps, self.width) + time_table[None]
    steps = self.temporal(steps, deterministic=deterministic)
    if self.temporal_pool == 'map':
      return self.temporal_map(steps), steps
    return masked_mean(steps), steps
