"""The 'video' field kind: a clip (uint8 frames, a list of encoded frames,
.npy or video file bytes; see multimodal.data.video) -> float32
[T, S, S, C] in [-1, 1].

config.input keys:
  video_frames    T, frames per example (required).
  video_stride    take every stride-th frame (default 1).
  video_offset    'random' (default) or 'center': where the window of
                  (T - 1) * stride + 1 frames starts in training; in
                  evaluation it is centred. Short clips repeat their last
                  frame.
  video_size      S (default image_size); video_channels: 1 or 3 (default
                  image_channels).
  augment         the image kind's affine jitter (training), drawn once per
                  clip and applied to every frame.
  frame_order     'original' (default), 'reversed' or 'shuffled' (the
                  example's rng): applied after sampling, in training and
                  evaluation alike, e.g. to measure how much a model uses
                  the order of frames.
"""
from __future__ import annotations

import numpy as np

from multimodal import registry
from multimodal.data import image as image_lib
from multimodal.data import video as video_lib
from multimodal.data.kinds import DataError
from multimodal.data.kinds import FieldKind


def _positive_int(input_cfg, key: str, default=None) -> int:
  value = input_cfg.get(key, default)
  if value is None:
    value = default
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f'config.input.{key} must be a positive int, got '
                     f'{value!r}.')
  return value


@registry.register('field', 'video')
class VideoField(FieldKind):

  def __init__(self, input_cfg, *, train: bool, tokenizer=None):
    super().__init__(input_cfg, train=train, tokenizer=tokenizer)
    if input_cfg.get('video_frames') is None:
      raise ValueError('A video field needs config.input.video_frames (the '
                       'frames per example, e.g. 8).')
    self.frames = _positive_int(input_cfg, 'video_frames')
    self.stride = _positive_int(input_cfg, 'video_stride', 1)
    self.size = _positive_int(input_cfg, 'video_size',
                              input_cfg.get('image_size'))
    channels = input_cfg.get('video_channels') or input_cfg.get(
        'image_channels', 3)
    if channels not in (1, 3):
      raise ValueError(f'config.input.video_channels must be 1 or 3, got '
                       f'{channels!r}.')
    self.channels = channels
    offset = input_cfg.get('video_offset') or 'random'
    if offset not in video_lib.OFFSETS:
      raise ValueError(f'config.input.video_offset must be one of '
                       f'{video_lib.OFFSETS}, got {offset!r}.')
    self.random_offset = train and offset == 'random'
    self.order = input_cfg.get('frame_order') or 'original'
    if self.order not in video_lib.FRAME_ORDERS:
      raise ValueError(f'config.input.frame_order must be one of '
                       f'{video_lib.FRAME_ORDERS}, got {self.order!r}.')
    self.jitter = image_lib.jitter_options(
        input_cfg.get('augment') if train else None)

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    if isinstance(value, str):
      # A path where bytes belong is a config mistake, not a bad record.
      raise ValueError(f'The video value is a string ({value[:60]!r}), '
                       'not frames or file bytes: if it is a file path, list '
                       'its key in config.dataset.path_keys.')
    try:
      length, frame = video_lib.clip_frames(value)
      index = video_lib.frame_indices(
          length, self.frames, self.stride,
          rng=rng if self.random_offset else None)
      frames = video_lib.reorder([frame(int(i)) for i in index], self.order,
                                 rng)
      return video_lib.to_frames(frames, self.size, self.channels,
                                 rng=rng if self.jitter else None,
                                 **self.jitter)
    except video_lib.VideoDecodeError as e:
      raise DataError('bad_video', str(e)) from e

  def example_shape(self):
    return (self.frames, self.size, self.size, self.channels), np.float32

  def settings(self) -> dict:
    return {'frames': self.frames, 'stride': self.stride, 'size': self.size,
            'channels': self.channels, 'range': [-1.0, 1.0]}
