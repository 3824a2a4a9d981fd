"""Text to speech: a text encoder and a non-autoregressive log-mel decoder.

  tokens int [B, L] -> text tower (a registered 'encoder', e.g.
  text_transformer) -> text tokens [B, L, width]
  -> `num_frames` learned frame queries [T, width], through DecoderBlocks
  whose self-attention is bidirectional (every frame sees every frame) and
  whose cross-attention reads the text tokens
  -> per frame: log-mel float32 [B, T, num_mels] (the front end's features,
  multimodal/data/audio.py) and a stop logit [B, T] ("speech has ended by
  this frame"); a residual convolutional post-net over time refines the
  log-mel (Tacotron 2's post-net, smaller).

Why non-autoregressive, with a stop target rather than durations: the clips
it learns from (one word each) fit the front end's fixed window of T
frames, so the decoder predicts the whole window in one pass, the text
alignment is learnt by the frame queries' cross-attention, and the length
is read from the stop logits. One pass per batch in training and in
generation (no teacher forcing, so no exposure bias; no per-frame loop),
and no phoneme durations, which the data lacks.
The price: a fixed maximum length (T frames) and, trained with an L1 loss,
the average of the voices a text allows (see multimodal/tasks/tts.py).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal import registry
from multimodal.models import matmul
from multimodal.models.builder import build_model, with_defaults
from multimodal.models.decoder import DecoderBlock
from multimodal.models.partitioning import axes, param
from multimodal.models.posemb import sincos_1d
from multimodal.models.transformer import layer_norm


class PostNet(nnx.Module):
  """Residual refinement of log-mel frames: Conv1d (num_mels -> width,
  `kernel` taps over time) -> tanh -> Conv1d (width -> num_mels)."""

  def __init__(self, num_mels: int, width: int, kernel: int = 5, *,
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(kernel_size=(kernel,), padding='SAME', dtype=dtype,
              param_dtype=param_dtype, rngs=rngs)
    self.conv1 = nnx.Conv(num_mels, width, **kw,
                          kernel_metadata=axes('window', 'patch', 'stem'),
                          bias_metadata=axes('stem'))
    self.conv2 = nnx.Conv(width, num_mels, **kw,
                          kernel_init=nnx.initializers.zeros_init(),
                          kernel_metadata=axes('window', 'stem', 'patch'),
                          bias_metadata=axes('patch'))

  def __call__(self, mel: jax.Array) -> jax.Array:
    """[B, T, num_mels] -> [B, T, num_mels] (mel + correction)."""
    return mel + self.conv2(jnp.tanh(self.conv1(mel)))


@registry.register('model', 'tts')
class TextToSpeech(nnx.Module):
  """Text encoder + non-autoregressive log-mel decoder (module docstring).

  Args:
    text: config of a registered 'encoder' over token ids returning
      (pooled, tokens [B, L, width]) and having `pad_id` (text_transformer).
    num_frames, num_mels: the output window, as the front end's
      (config.input.num_frames, num_mels).
    depth, num_heads, mlp_ratio, dropout: the frame decoder's blocks; its
      width is the text tower's.
    postnet_width: channels of the post-net (0: none).
    dtype, param_dtype: compute and parameter dtypes (default float32),
      also the text tower's unless its config sets them.
  """

  def __init__(self, *, text: Mapping[str, Any], num_frames: int = 96,
               num_mels: int = 64, depth: int = 3, num_heads: int = 4,
               mlp_ratio: float = 4, dropout: float = 0.0,
               postnet_width: int = 64, dtype=None, param_dtype=None,
               rngs: nnx.Rngs):
    dt, pdt = dtype or jnp.float32, param_dtype or jnp.float32
    self.text = build_model(with_defaults(text, dtype=dtype,
                                          param_dtype=param_dtype),
                            rngs=rngs, kind='encoder')
    if not hasattr(self.text, 'pad_id'):
      raise ValueError(f'The tts text tower {text.get("name")!r} has no '
                       'pad_id: use a token encoder such as '
                       'text_transformer.')
    width = self.text.width
    self.num_frames, self.num_mels = num_frames, num_mels
    self.dtype = dt
    self.queries = param(rngs, nnx.initializers.normal(0.02),
                         (num_frames, width), ('pos', 'embed'), pdt)
    kw = dict(dtype=dt, param_dtype=pdt, rngs=rngs)
    self.blocks = nnx.List([
        DecoderBlock(width, num_heads, mlp_ratio, cross_attention=True,
                     dropout=dropout, **kw) for _ in range(depth)])
    self.norm = layer_norm(width, **kw)
    self.mel = matmul.Dense(width, num_mels, **kw,
                          kernel_metadata=axes('embed', 'patch'),
                          bias_metadata=axes('patch'))
    self.stop = matmul.Dense(width, 1, **kw,
                           kernel_metadata=axes('embed', None),
                           bias_metadata=axes(None))
    self.postnet = (PostNet(num_mels, postnet_width, **kw)
                    if postnet_width else None)

  def __call__(self, tokens: jax.Array, *, deterministic: bool = True
               ) -> dict[str, jax.Array]:
    """Log-mel frames of right-padded token ids int [B, L].

    Returns:
      {'mel': float32 [B, T, num_mels] (after the post-net),
       'mel_before': float32 [B, T, num_mels] (before it),
       'stop_logits': float32 [B, T]}.
    """
    _, memory = self.text(tokens, deterministic=deterministic)
    valid = tokens != self.text.pad_id
    width = memory.shape[-1]
    frames = (self.queries[...] + sincos_1d(self.num_frames, width)
              ).astype(self.dtype)
    x = jnp.broadcast_to(frames[None], (tokens.shape[0],) + frames.shape)
    for block in self.blocks:
      x, _ = block(x, None, memory_kv=block.memory_kv(memory),
                   memory_mask=valid, deterministic=deterministic)
    x = self.norm(x)
    before = self.mel(x).astype(jnp.float32)
    mel = before if self.postnet is None else self.postnet(before)
    return {'mel': mel.astype(jnp.float32), 'mel_before': before,
            'stop_logits': self.stop(x)[..., 0].astype(jnp.float32)}

  def synthesize(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Generation: (log-mel float32 [B, T, num_mels] with the frames after
    the predicted end set to the silence floor (the clip's maximum - 2, as
    the front end floors silence), lengths int32 [B] in frames: the first
    frame whose stop probability exceeds 1/2, else T)."""
    out = self(tokens, deterministic=True)
    lengths = predicted_lengths(out['stop_logits'])
    mel = out['mel']
    floor = mel.max(axis=(1, 2), keepdims=True) - 2.0
    speech = jnp.arange(mel.shape[1])[None, :, None] < lengths[:, None, None]
    return jnp.where(speech, jnp.maximum(mel, floor), floor), lengths


def predicted_lengths(stop_logits: jax.Array) -> jax.Array:
  """int32 [B]: the first frame with stop logit > 0 (probability > 1/2),
  or T when none is."""
  stopped = stop_logits > 0
  first = jnp.argmax(stopped, axis=1)
  return jnp.where(stopped.any(axis=1), first,
                   stop_logits.shape[1]).astype(jnp.int32)
