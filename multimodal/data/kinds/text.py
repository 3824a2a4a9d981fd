"""The 'text' and 'texts' field kinds (sentencepiece ids, multimodal.data.text).

  text   a string (or a list of phrasings, one drawn per example; evaluation
         draws from a fixed seed) -> int32 [L]: pieces, eos, then pad 0
  texts  every text of a record (its references) -> int32 [R, L], R =
         config.input.max_references; missing rows are all pad
"""
from __future__ import annotations

import numpy as np

from multimodal import registry
from multimodal.data import sources
from multimodal.data.kinds import DataError
from multimodal.data.kinds import FieldKind


def _is_list(value) -> bool:
  return isinstance(value, (list, tuple, np.ndarray))


def _text(value):
  """`value` (a text, or a list of texts) unchanged, or a DataError with the
  reason validation would count it under (sources.text_problem)."""
  problem = sources.text_problem(value)
  if problem:
    raise DataError(problem[0], f'the text {problem[1]}')
  return value


def _str(text) -> str:
  return text.decode('utf-8', errors='replace') if isinstance(
      text, bytes) else text


@registry.register('field', 'text')
class TextField(FieldKind):
  text = True

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    if _is_list(value) and len(value):
      value = value[int(rng.integers(len(value)))]
    return self.tokenizer(_str(_text(value)))

  def example_shape(self):
    return (self.tokenizer.max_len,), np.int32

  def settings(self) -> dict:
    t = self.tokenizer
    return {'max_len': t.max_len, 'pad_id': t.pad_id, 'bos_id': t.bos_id,
            'eos_id': t.eos_id, 'unk_id': t.unk_id,
            'vocab_size': t.vocab_size}


@registry.register('field', 'texts')
class TextsField(FieldKind):
  text = True

  def __init__(self, input_cfg, *, train: bool, tokenizer=None):
    super().__init__(input_cfg, train=train, tokenizer=tokenizer)
    self.max_references = input_cfg.get('max_references', 0)
    if self.max_references < 1:
      raise ValueError('Reference fields (kind texts) need '
                       'config.input.max_references >= 1 (the number of '
                       'texts kept per example).')

  def example_shape(self):
    return (self.max_references, self.tokenizer.max_len), np.int32

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    del rng  # all of them, no choice
    value = list(value) if _is_list(value) else [value]
    kept = _text(value[:self.max_references])
    out = np.zeros((self.max_references, self.tokenizer.max_len), np.int32)
    for i, text in enumerate(kept):
      out[i] = self.tokenizer(_str(text))
    return out
