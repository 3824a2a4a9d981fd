"""The 'text' and 'texts' field kinds (sentencepiece ids, multimodal.data.text).

  text   a string (or a list of phrasings, one drawn per example; evaluation
         draws from a fixed seed) -> int32 [L]: pieces, eos, then pad 0
  texts  every text of a record (its references) -> int32 [R, L], R =
         config.input.max_references; missing rows are all pad
"""
from __future__ import annotations

import numpy as np

from multimodal import registry
from multimodal.data.kinds import DataError
from multimodal.data.kinds import FieldKind


def _is_list(value) -> bool:
  return isinstance(value, (list, tuple, np.ndarray))


def _check(text) -> str:
  if isinstance(text, bytes):
    text = text.decode('utf-8', errors='replace')
  if not isinstance(text, str):
    raise DataError('bad_text', f'expected text, got {type(text).__name__} '
                    f'{str(text)[:60]!r}')
  if not text.strip():
    raise DataError('empty_text', 'empty text')
  return text


@registry.register('field', 'text')
class TextField(FieldKind):

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    if _is_list(value):
      if not len(value):
        raise DataError('empty_text', 'empty list of texts')
      value = value[int(rng.integers(len(value)))]
    return self.tokenizer(_check(value))

  def settings(self) -> dict:
    t = self.tokenizer
    return {'max_len': t.max_len, 'pad_id': t.pad_id, 'bos_id': t.bos_id,
            'eos_id': t.eos_id, 'unk_id': t.unk_id,
            'vocab_size': t.vocab_size}


@registry.register('field', 'texts')
class TextsField(FieldKind):

  def __init__(self, input_cfg, *, train: bool, tokenizer=None):
    super().__init__(input_cfg, train=train, tokenizer=tokenizer)
    self.max_references = input_cfg.get('max_references', 0)
    if self.max_references < 1:
      raise ValueError('Reference fields (kind texts) need '
                       'config.input.max_references >= 1 (the number of '
                       'texts kept per example).')

  def __call__(self, value, rng: np.random.Generator) -> np.ndarray:
    del rng  # all of them, no choice
    value = list(value) if _is_list(value) else [value]
    if not value:
      raise DataError('empty_text', 'empty list of reference texts')
    out = np.zeros((self.max_references, self.tokenizer.max_len), np.int32)
    for i, text in enumerate(value[:self.max_references]):
      out[i] = self.tokenizer(_check(text))
    return out
