"""Sentencepiece tokenisation to fixed-length int32 id arrays."""
from __future__ import annotations

import functools
import os

import numpy as np
import sentencepiece as spm


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> spm.SentencePieceProcessor:
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'Sentencepiece model {path!r} does not exist. Set '
        'config.input.tokenizer to a .model file (the built-in dataset ships '
        'data_pipelines/digits_trimodal/tokenizer.model).')
  return spm.SentencePieceProcessor(model_file=path)


class Tokenizer:
  """Encodes text to [max_len] int32: pieces, then eos, then pad (id 0).

  Text longer than max_len - 1 pieces is truncated (keeping the eos) and
  counted in `self.truncated`, so a too-short max_len shows up in the logs
  instead of silently losing words.
  """

  def __init__(self, path: str, max_len: int):
    self.sp = load_tokenizer(path)
    self.max_len = max_len
    self.pad_id = self.sp.pad_id()
    self.eos_id = self.sp.eos_id()
    if self.pad_id != 0 or self.eos_id < 0:
      raise ValueError(f'{path}: tokenizer needs pad_id=0 and an eos id '
                       f'(got pad={self.pad_id}, eos={self.eos_id}).')
    self.truncated = 0

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def __call__(self, text: str | bytes) -> np.ndarray:
    if isinstance(text, bytes):
      text = text.decode('utf-8')
    ids = self.sp.encode(text)
    if len(ids) > self.max_len - 1:
      self.truncated += 1
      ids = ids[:self.max_len - 1]
    out = np.zeros(self.max_len, np.int32)
    out[:len(ids)] = ids
    out[len(ids)] = self.eos_id
    return out

  def decode(self, ids) -> str:
    ids = [int(i) for i in ids if i not in (self.pad_id,)]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self.sp.decode(ids)
