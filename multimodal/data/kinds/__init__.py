"""Field kinds: how one record value becomes one example array.

Every output field of a batch (config.input.fields: field -> record key)
has a kind, and each kind is one module registered as
``@registry.register('field', NAME)``; a new kind (say video) is one new
module, here or in your own package (listed in config.imports). A kind is a
class built once per pipeline,

  kind = cls(input_cfg, train=..., tokenizer=...)   # FieldKind below

and called per example as ``kind(value, rng) -> np.ndarray`` (value: what
the source's record holds under the field's key, e.g. encoded bytes or a
string; rng: the example's generator, so randomness is reproducible and
resumes exactly). A value it cannot use raises `DataError` with a reason;
the pipeline counts such records (config.input.on_error) instead of
treating them as configuration mistakes.

The kind of a field: config.input.kinds[field] when given, else the kind
named like the field (a field 'image' is of kind 'image'), else 'texts' for
a field ending in '_refs' (every reference text of a record), else 'text'.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from multimodal import registry
from multimodal.data.errors import DataError

__all__ = ['DataError', 'FieldKind', 'kind_of']


class FieldKind:
  """Base of the field kinds (see the module docstring).

  Attributes:
    generated: True for kinds made from the example's randomness alone (no
      record key), e.g. 'seed'.
    text: True for kinds whose values are texts: validation before training
      checks them for empty text, and probes leave them out.
  """
  generated = False
  text = False

  def __init__(self, input_cfg, *, train: bool, tokenizer=None):
    self.cfg = input_cfg
    self.train = train
    self.tokenizer = tokenizer

  def __call__(self, value: Any, rng: np.random.Generator) -> np.ndarray:
    raise NotImplementedError

  def settings(self) -> dict:
    """What a user must do to raw inputs of this kind (export's
    preprocess.json); {} when nothing is needed."""
    return {}

  def example_shape(self) -> tuple[tuple[int, ...], Any] | None:
    """(shape, NumPy dtype) of the array one example holds, known from the
    config alone; None when it depends on the data. The config check
    (multimodal/config_checks.py) traces the training loss on batches of
    these shapes, and skips that when a kind returns None."""
    return None


def kind_of(field: str, input_cfg) -> str:
  """The registered kind name of output field `field` (module docstring)."""
  explicit = (input_cfg.get('kinds') or {}).get(field)
  if explicit:
    registry.get('field', explicit)  # a clear error for an unknown kind
    return explicit
  if field in registry.names('field'):
    return field
  if field.endswith('_refs'):
    return 'texts'
  return 'text'


# pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
from multimodal.data.kinds import audio  # noqa: E402,F401 (registers)
from multimodal.data.kinds import image  # noqa: E402,F401 (registers)
from multimodal.data.kinds import label  # noqa: E402,F401 (registers)
from multimodal.data.kinds import seed  # noqa: E402,F401 (registers)
from multimodal.data.kinds import text  # noqa: E402,F401 (registers)
from multimodal.data.kinds import video  # noqa: E402,F401 (registers)
