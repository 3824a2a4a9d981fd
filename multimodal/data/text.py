"""Sentencepiece tokenisation to fixed-length int32 id arrays.

The framework's token-id contract: every id comes from the sentencepiece
model (`Tokenizer.ids`), with two requirements. pad must be 0, because
padding is zeros everywhere (np.zeros text fields, masks computed as
`tokens != 0` in the towers, zero-filled reference rows); and the model must
define bos and eos, which the decoders use as prompt start and stop token.
`python -m multimodal.tokenizer train` writes such models (pad 0, unk 1,
bos 2, eos 3).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping

import numpy as np
import sentencepiece as spm

RETRAIN = ('Train one with the framework\'s ids (pad 0, unk 1, bos 2, eos 3): '
           'python -m multimodal.tokenizer train --data CAPTIONS --field KEY '
           '--vocab_size N --out DIR/spm.model')


@dataclasses.dataclass(frozen=True)
class TokenIds:
  """The special token ids that text generation needs, from one tokenizer.

  pad: fills right-padded sequences (always 0, see the module docstring).
  bos: starts every decoder prompt.
  eos: ends every text; generation stops once it is produced.
  """
  pad: int
  bos: int
  eos: int


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> spm.SentencePieceProcessor:
  """The sentencepiece model at `path` (cached: several parts load it)."""
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'Sentencepiece model {path!r} does not exist. Set '
        'config.input.tokenizer to a .model file. ' + RETRAIN)
  try:
    return spm.SentencePieceProcessor(model_file=path)
  except (RuntimeError, OSError) as e:
    # spm's own message is a parser error with a C++ source location.
    raise ValueError(f'{path!r} is not a sentencepiece model ({e}). '
                     + RETRAIN) from e


class Tokenizer:
  """Encodes text to [max_len] int32: pieces, then eos, then pad (id 0).

  Text longer than max_len - 1 pieces is truncated (keeping the eos) and
  counted in `self.truncated`, so a too-short max_len shows up in the logs
  instead of silently losing words.

  Attributes:
    path: the sentencepiece model file.
    pad_id, unk_id, bos_id, eos_id: ints, read from the model.
    ids: TokenIds(pad, bos, eos), what generation and
      tasks.text_generation take.
    vocab_size: number of pieces; token ids are in [0, vocab_size).
  """

  def __init__(self, path: str, max_len: int):
    self.path = path
    self.sp = load_tokenizer(path)
    self.max_len = max_len
    self.pad_id = self.sp.pad_id()
    self.unk_id = self.sp.unk_id()
    self.bos_id = self.sp.bos_id()
    self.eos_id = self.sp.eos_id()
    if self.pad_id != 0:
      raise ValueError(
          f'{path}: the tokenizer\'s pad id is {self.pad_id}, but it must be '
          '0: the pipeline pads texts with zeros and the models mask '
          'positions holding 0. ' + RETRAIN)
    missing = [name for name, i in (('bos', self.bos_id),
                                    ('eos', self.eos_id)) if i < 0]
    if missing:
      raise ValueError(
          f'{path}: the tokenizer has no {" and no ".join(missing)} token '
          '(trained with ' + ', '.join(f'{m}_id=-1' for m in missing)
          + '); text fields end in eos and decoder prompts start with '
          'bos. ' + RETRAIN)
    self.ids = TokenIds(pad=self.pad_id, bos=self.bos_id, eos=self.eos_id)
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
    """Text of ids [L]: pads dropped, cut at the first eos."""
    ids = [int(i) for i in ids if i != self.pad_id]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self.sp.decode(ids)


def _text_parts(config: Any, path: str):
  """Yields (config path, vocab_size) for every (nested) config holding a
  `vocab_size` key; config is a dict or an ml_collections ConfigDict."""
  if hasattr(config, 'to_dict'):  # ConfigDict / FrozenConfigDict
    config = config.to_dict()
  if isinstance(config, Mapping):
    if 'vocab_size' in config:
      yield f'{path}.vocab_size', config['vocab_size']
    for key, value in config.items():
      yield from _text_parts(value, f'{path}.{key}')
  elif isinstance(config, (list, tuple)):
    for i, value in enumerate(config):
      yield from _text_parts(value, f'{path}[{i}]')


def check_vocab(model_config: Any, tokenizer: Tokenizer,
                prefix: str = 'config.model') -> list[str]:
  """Checks that every text part of a model can embed all tokenizer ids.

  Args:
    model_config: the model config (dict or ConfigDict), searched at any
      depth (towers, decoder) for configs with a `vocab_size` key.
    tokenizer: a Tokenizer (its `vocab_size` and `path` are used).
    prefix: how `model_config` is named in messages.

  Returns:
    Notes (strings) for parts whose vocab_size exceeds the tokenizer's:
    allowed (the extra rows are never used, e.g. a table padded to a
    multiple of 128 or a pretrained text model), but worth a log line.

  Raises:
    ValueError: a vocab_size is smaller than the tokenizer's, so some ids
      would index past the embedding table.
  """
  notes = []
  size = tokenizer.vocab_size
  for where, vocab in _text_parts(model_config, prefix):
    if vocab is None:
      continue
    if vocab < size:
      raise ValueError(
          f'{where}={vocab} is smaller than the tokenizer '
          f'{tokenizer.path} ({size} pieces): ids {vocab}..{size - 1} would '
          f'be out of range of the embedding table. Set {where}={size} '
          '(or more), or use a tokenizer trained with that vocab_size.')
    if vocab > size:
      notes.append(f'{where}={vocab} exceeds the tokenizer {tokenizer.path} '
                   f'({size} pieces); the top {vocab - size} embedding rows '
                   'are never used.')
  return notes
