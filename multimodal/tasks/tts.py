"""Text to speech: log-mel frames of a clip from its text.

The model (e.g. 'tts', multimodal/models/tts.py) maps token ids [B, L] to
{'mel' [B, T, F], 'mel_before' [B, T, F], 'stop_logits' [B, T]} and has
`synthesize(tokens) -> (mel, lengths)`. Targets are the clip's log-mel as
the 'audio_target' field kind makes it (placed at its onset, unaugmented),
so the clip's length is where its silence floor starts (`target_lengths`).
Loss: L1 between predicted and target frames (after the post-net, plus
before it, as Tacotron 2 does), over the whole window (silence included:
the model must also learn where to be quiet), plus `stop_weight` times
the binary cross-entropy of the per-frame stop target
(frame t >= length). Config:

  config.tts.text         the text field (kind 'text'), e.g. 'text'
  config.tts.audio        the target field (kind 'audio_target')
  config.tts.stop_weight  weight of the stop loss (default 1)
  config.evals            e.g. dict(tts=dict(type='spectrogram'))

Evaluation generates every example of the eval split (`synthesize`); the
outputs the evaluators see are, per example,
  mel_l1          float32 [N]: mean |generated - target| over the window
  length          int32 [N]: generated length in frames
  target_length   int32 [N]: the clip's length in frames
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from multimodal import registry
from multimodal.data import kinds as kinds_lib
from multimodal.tasks import base

TARGET_KIND = 'audio_target'


def target_lengths(target: jax.Array) -> jax.Array:
  """int32 [B]: 1 + the last frame of log-mel [B, T, F] with any bin above
  the window's minimum, i.e. the clip's length in frames (0 for an
  all-silent window). Silent frames hold the front end's floor in every
  bin (the clip's maximum - 2, the lowest value it gives; see
  multimodal/data/audio.py), so the minimum is the floor whenever the
  window has silence."""
  floor = target.min(axis=(1, 2))
  sounding = (target > floor[:, None, None] + 1e-3).any(axis=2)  # [B, T]
  t = target.shape[1]
  last = t - 1 - jnp.argmax(sounding[:, ::-1], axis=1)
  return jnp.where(sounding.any(axis=1), last + 1, 0).astype(jnp.int32)


@registry.register('task', 'tts')
class TextToSpeechTask(base.Task):
  model_methods = ('synthesize',)
  OUTPUTS = ('mel_l1', 'length', 'target_length')  # of outputs_fn

  def __init__(self, config):
    self.config = config
    tts = config.get('tts') or {}
    self.text = tts.get('text', 'text')
    self.audio = tts.get('audio', 'audio')
    self.stop_weight = float(tts.get('stop_weight', 1.0))
    fields = dict(config.input.fields)
    for field in (self.text, self.audio):
      if field not in fields:
        raise ValueError(f'config.tts names the field {field!r}, which '
                         f'config.input.fields lacks (it has {sorted(fields)}).')
    kind = kinds_lib.kind_of(self.audio, config.input)
    if kind != TARGET_KIND:
      raise ValueError(
          f'The tts target field {self.audio!r} is of kind {kind!r}; targets '
          f'must be placed and left unaugmented: set config.input.kinds.'
          f'{self.audio}={TARGET_KIND!r}.')
    self.fields = sorted({self.text, self.audio})
    self.build_evaluators(config)
    text, audio = self.text, self.audio

    @jax.jit
    def outputs(model, batch):
      mel, lengths = model.synthesize(batch[text])
      target = batch[audio]
      return {'mel_l1': jnp.abs(mel - target).mean(axis=(1, 2)),
              'length': lengths, 'target_length': target_lengths(target)}

    self.outputs_fn = outputs

  def loss(self, model, batch):
    target = batch[self.audio]
    out = model(batch[self.text], deterministic=False)
    lengths = target_lengths(target)
    l1 = jnp.abs(out['mel'] - target).mean()
    l1_before = jnp.abs(out['mel_before'] - target).mean()
    frames = jnp.arange(target.shape[1])[None]
    stop_target = (frames >= lengths[:, None]).astype(jnp.float32)
    stop = optax.sigmoid_binary_cross_entropy(out['stop_logits'],
                                              stop_target).mean()
    stop_accuracy = ((out['stop_logits'] > 0) == (stop_target > 0)).mean()
    metrics = {'loss/mel': l1, 'loss/mel_before_postnet': l1_before,
               'loss/stop': stop, 'stop_accuracy': stop_accuracy}
    return l1 + l1_before + self.stop_weight * stop, metrics

  def summary(self, metrics, prefix='test') -> str:
    name = f'{prefix}/tts'
    if name + '/mel_l1' not in metrics:
      return super().summary(metrics, prefix)
    return (f'tts: log-mel L1 {metrics[name + "/mel_l1"]:.4f}, length error '
            f'{metrics[name + "/length_mae"]:.2f} frames')
