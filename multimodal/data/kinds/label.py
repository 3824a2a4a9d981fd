"""The 'label' field kind: an integer class index (int, or a string of
digits as CSV manifests hold) -> int32 []."""
from __future__ import annotations

import numpy as np

from multimodal import registry
from multimodal.data.kinds import DataError
from multimodal.data.kinds import FieldKind


@registry.register('field', 'label')
class LabelField(FieldKind):

  def example_shape(self):
    return (), np.int32

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    del rng
    if isinstance(value, bytes):
      value = value.decode()
    try:
      return np.int32(int(value))
    except (TypeError, ValueError) as e:
      raise DataError('bad_label', f'label {str(value)[:40]!r} is not an '
                      'integer class index (map text labels to a text '
                      'field instead)') from e
