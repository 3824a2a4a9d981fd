"""The 'audio' field kind: encoded bytes (OGG/Opus, FLAC, WAV) or decoded
samples -> log-mel float32 [T, F] (multimodal.data.audio; T =
config.input.num_frames, F = num_mels), placed at a random offset in time
and perturbed by config.input.audio_augment in training, centred in
evaluation."""
from __future__ import annotations

import dataclasses

import numpy as np

from multimodal import registry
from multimodal.data import audio as audio_lib
from multimodal.data.kinds import DataError
from multimodal.data.kinds import FieldKind
from multimodal.data.kinds import MemoCache


@registry.register('field', 'audio')
class AudioField(FieldKind):

  def __init__(self, input_cfg, *, train: bool, tokenizer=None):
    super().__init__(input_cfg, train=train, tokenizer=tokenizer)
    front_end = input_cfg.get('audio_front_end', 'default')
    if front_end == 'whisper':
      self.mel = audio_lib.LogMelConfig.whisper(
          num_mels=input_cfg.num_mels, num_frames=input_cfg.num_frames)
    elif front_end == 'default':
      self.mel = audio_lib.LogMelConfig(num_frames=input_cfg.num_frames,
                                        num_mels=input_cfg.num_mels)
    else:
      raise ValueError(f'config.input.audio_front_end={front_end!r}: use one '
                       f'of {audio_lib.FRONT_ENDS}.')
    augment = input_cfg.get('audio_augment') if train else None
    # A plain dict: ConfigDict lookups per example cost more than the
    # augmentation.
    self.augment = dict(augment.items()) if augment else None
    # Decoding and the FFT dominate the pipeline's cost, so each clip's
    # features are computed once (cached) and random placement in time is a
    # whole-frame shift of them, which is exact (see audio_lib.shift_frames).
    self._cached = self._features
    if input_cfg.get('audio_cache_size'):
      self._cached = MemoCache(self._features, input_cfg.audio_cache_size)

  def _features(self, data):
    try:
      wave = audio_lib.decode_audio(data, self.mel.sample_rate)
    except audio_lib.AudioDecodeError as e:
      raise DataError('bad_audio', str(e)) from e
    return audio_lib.clip_features(wave, self.mel)

  def _clip(self, value):
    """(features placed at the clip's onset, free frames) of a value."""
    if isinstance(value, str):
      # A path where bytes belong is a config mistake, not a bad record.
      raise ValueError(f'The audio value is a string '
                       f'({value[:60]!r}), not encoded bytes: if it is a file '
                       'path, list its key in config.dataset.path_keys.')
    if isinstance(value, np.ndarray):  # decoded samples: not hashable
      return self._features(value)
    return self._cached(value)

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    feats, free = self._clip(value)
    if self.augment:
      feats, free = audio_lib.augment_features(feats, free, rng,
                                               **self.augment)
    shift = int(rng.integers(0, free + 1)) if self.train else free // 2
    return audio_lib.shift_frames(feats, shift)

  def example_shape(self):
    return (self.mel.num_frames, self.mel.num_mels), np.float32

  def settings(self) -> dict:
    settings = dataclasses.asdict(self.mel)
    if settings['front_end'] == 'default':
      # Recorded only when not the default, so exports made before the
      # option existed still match their preprocess.json.
      del settings['front_end']
    return {'log_mel': settings}


@registry.register('field', 'audio_target')
class AudioTargetField(AudioField):
  """Log-mel float32 [T, F] of a clip as a generation target (text to
  speech): placed at its onset (`audio_lib.clip_features`: onset
  `lead_frames` hops in, silence floor after it), never augmented or
  shifted, in training as in evaluation, so the model learns one placement
  and its length is where the silence floor starts."""

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    del rng  # deterministic
    return self._clip(value)[0]
