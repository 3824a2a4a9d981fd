"""The 'seed' field kind: int32 [] drawn from the example's randomness, for
randomness inside the model (modality dropout); no record key."""
from __future__ import annotations

import numpy as np

from multimodal import registry
from multimodal.data.kinds import FieldKind


@registry.register('field', 'seed')
class SeedField(FieldKind):
  generated = True

  def example_shape(self):
    return (), np.int32

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    del value
    return np.int32(rng.integers(0, np.iinfo(np.int32).max))
