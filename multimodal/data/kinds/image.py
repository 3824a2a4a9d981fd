"""The 'image' field kind: encoded bytes or uint8 pixels -> float32
[S, S, C] in [-1, 1] (config.input.image_size, image_channels), with the
random affine jitter of config.input.augment in training.

config.input.image_cache_size > 0 keeps that many decoded, resized images
in memory (keyed by their encoded bytes), so that each later epoch pays
only for the jitter: for small datasets, where decoding is most of the
pipeline's cost (the digits demo).
"""
from __future__ import annotations

import numpy as np

from multimodal import registry
from multimodal.data import image as image_lib
from multimodal.data.kinds import DataError
from multimodal.data.kinds import FieldKind
from multimodal.data.kinds import MemoCache


@registry.register('field', 'image')
class ImageField(FieldKind):

  def __init__(self, input_cfg, *, train: bool, tokenizer=None):
    super().__init__(input_cfg, train=train, tokenizer=tokenizer)
    size, channels = input_cfg.get('image_size'), input_cfg.get(
        'image_channels', 3)
    if not isinstance(size, int) or size < 1:
      raise ValueError(f'config.input.image_size must be a positive int, got '
                       f'{size!r}.')
    if channels not in (1, 3):
      raise ValueError(f'config.input.image_channels must be 1 or 3, got '
                       f'{channels!r}.')
    self.size, self.channels = size, channels
    self.jitter = image_lib.jitter_options(
        input_cfg.get('augment') if train else None)
    self._decoded = self._decode
    if input_cfg.get('image_cache_size'):
      self._decoded = MemoCache(self._decode, input_cfg.image_cache_size)

  def _decode(self, value):
    """Pillow image of `value` at size x size."""
    try:
      img = image_lib.decode_image(value, self.channels)
    except image_lib.ImageDecodeError as e:
      raise DataError('bad_image', str(e)) from e
    return image_lib.resize(img, self.size)

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    if isinstance(value, str):
      # A path where bytes belong is a config mistake, not a bad record.
      raise ValueError(f'The image value is a string ({value[:60]!r}), '
                       'not encoded bytes: if it is a file path, list its key '
                       'in config.dataset.path_keys.')
    if isinstance(value, np.ndarray):  # decoded pixels: not hashable
      img = self._decode(value)
    else:
      img = self._decoded(value)
    if self.jitter:
      return image_lib.to_array(img, self.size, rng=rng, **self.jitter)
    return image_lib.to_array(img, self.size)

  def example_shape(self):
    return (self.size, self.size, self.channels), np.float32

  def settings(self) -> dict:
    return {'size': self.size, 'channels': self.channels,
            'range': [-1.0, 1.0]}
