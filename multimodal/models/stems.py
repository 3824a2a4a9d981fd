"""Convolutional front ends that turn a frame sequence into tokens."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal.models.partitioning import axes, constrain
from multimodal.models.activations import get_activation


def conv1d_stem_length(length: int) -> int:
  """Tokens out of Conv1dStem for `length` input frames: ceil(length / 2).

  (Kernel 3, padding 1, stride 2: floor((length - 1) / 2) + 1.)
  """
  return (length - 1) // 2 + 1


class Conv1dStem(nnx.Module):
  """Two 1-D convolutions over time, each followed by the activation.

  conv1: kernel 3, stride 1, padding 1, in_features -> width.
  conv2: kernel 3, stride 2, padding 1, width -> width (halves the frames).

  This is Whisper's encoder front end (conv1 -> GELU -> conv2 -> GELU over
  log-mel frames, mels as channels). Kernels are [3, in, out] as Flax
  stores them (a torch Conv1d [out, in, 3] transposed), named
  ('window', 'patch', 'stem') and ('window', 'stem', 'embed').
  """

  def __init__(self, in_features: int, width: int, *,
               activation: str = 'gelu', dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.act = get_activation(activation)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs,
              kernel_init=nnx.initializers.lecun_normal())
    self.conv1 = nnx.Conv(in_features, width, kernel_size=(3,), strides=(1,),
                          padding=((1, 1),), **kw,
                          kernel_metadata=axes('window', 'patch', 'stem'),
                          bias_metadata=axes('stem'))
    self.conv2 = nnx.Conv(width, width, kernel_size=(3,), strides=(2,),
                          padding=((1, 1),), **kw,
                          kernel_metadata=axes('window', 'stem', 'embed'),
                          bias_metadata=axes('embed'))

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, T, in_features] -> [B, ceil(T / 2), width] in the compute dtype."""
    x = self.act(self.conv1(x))
    x = constrain(x, ('act_batch', 'act_length', None))
    return self.act(self.conv2(x))
