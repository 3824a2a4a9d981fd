"""`source = 'librispeech'`: LibriSpeech in its native (OpenSLR) layout.

  ROOT/SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt  ('UTT-ID TEXT' lines)
  ROOT/SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac

ROOT may also be the parent of LibriSpeech/ (where the archives unpack).
Split names are the directory names: 'train-clean-100', 'dev-clean', ...

Config keys (config.dataset):
  root  as above.

Record:
  audio       bytes  the flac file
  text        str    the transcript as written (LibriSpeech: upper case)
  speaker_id  int
  chapter_id  int
  id          str    'SPEAKER-CHAPTER-UTT'
  __key__     'SPLIT/SPEAKER-CHAPTER-UTT'

The index comes from the transcript files alone (no stat per file at open):
a transcript line whose flac is missing stays in the index and raises
RecordError 'missing_file' when read, so validate counts it; a malformed
line raises 'bad_row'. Chapters without a transcript file are reported by
describe().
"""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from multimodal import registry
from multimodal.data.sources import base

_UTT_ID = re.compile(r'^(\d+)-(\d+)-(\d+)$')


def _sorted_dirs(path: str) -> list[str]:
  names = [e.name for e in os.scandir(path) if e.is_dir()]
  # Speaker and chapter ids are numbers of varying width.
  return sorted(names, key=lambda n: (0, int(n), '') if n.isdigit() else
                (1, 0, n))


def split_dir(root: str, split: str) -> str:
  """ROOT/SPLIT or ROOT/LibriSpeech/SPLIT, or a clear FileNotFoundError."""
  root = os.path.abspath(os.path.expanduser(root))
  candidates = [os.path.join(root, split),
                os.path.join(root, 'LibriSpeech', split)]
  for path in candidates:
    if os.path.isdir(path):
      return path
  have = []
  for parent in (root, os.path.join(root, 'LibriSpeech')):
    if os.path.isdir(parent):
      have += [d for d in _sorted_dirs(parent) if d != 'LibriSpeech']
  raise FileNotFoundError(
      f'LibriSpeech split {split!r} not found: neither {candidates[0]} nor '
      f'{candidates[1]} is a directory (splits found: {have or "none"}). '
      'config.dataset.root must hold SPLIT/ or LibriSpeech/SPLIT/.')


class LibriSpeechSource(base.Source):
  """Utterances of one LibriSpeech split."""

  def __init__(self, root: str, split: str):
    self.split = split
    self.dir = split_dir(root, split)
    self._chapters: list[str] = []   # 'SPEAKER/CHAPTER', relative to dir
    self._transcripts: list[str] = []  # the transcript file of a chapter
    chapter_of, ids, texts = [], [], []
    self._bad: dict[int, str] = {}   # index -> why its line is malformed
    self.num_untranscribed_chapters = 0
    for speaker in _sorted_dirs(self.dir):
      for chapter in _sorted_dirs(os.path.join(self.dir, speaker)):
        trans = os.path.join(self.dir, speaker, chapter,
                             f'{speaker}-{chapter}.trans.txt')
        if not os.path.isfile(trans):
          self.num_untranscribed_chapters += 1
          continue
        c = len(self._chapters)
        self._chapters.append(f'{speaker}/{chapter}')
        self._transcripts.append(trans)
        with open(trans, encoding='utf-8', errors='replace') as f:
          for lineno, line in enumerate(f, 1):
            line = line.rstrip('\r\n')
            if not line.strip():
              continue
            utt, _, text = line.partition(' ')
            if not _UTT_ID.match(utt):
              self._bad[len(ids)] = (
                  f'line {lineno} of {os.path.basename(trans)} does not '
                  f'start with an utterance id SPEAKER-CHAPTER-N: {line!r}')
              utt = f'{speaker}-{chapter}-line{lineno}'
            chapter_of.append(c)
            ids.append(utt)
            texts.append(text)
    self._chapter_of = np.array(chapter_of, np.int32)
    self._ids = ids
    self._texts = texts

  def __len__(self) -> int:
    return len(self._ids)

  def _read(self, index: int) -> dict[str, Any]:
    utt = self._ids[index]
    rid = f'{self.split}/{utt}'
    c = int(self._chapter_of[index])
    if index in self._bad:
      raise base.RecordError('bad_row', rid, self._bad[index],
                             self._transcripts[c])
    speaker, chapter, _ = _UTT_ID.match(utt).groups()
    path = os.path.join(self.dir, self._chapters[c], f'{utt}.flac')
    return {'audio': base.read_file(path, rid), 'text': self._texts[index],
            'speaker_id': int(speaker), 'chapter_id': int(chapter),
            'id': utt, '__key__': rid}

  def describe(self) -> str:
    text = (f'librispeech {self.dir}: {len(self)} utterances in '
            f'{len(self._chapters)} chapters')
    if self.num_untranscribed_chapters:
      text += (f'; {self.num_untranscribed_chapters} chapters without a '
               'transcript skipped')
    return text


RECORD_KEYS = ('audio', 'text', 'speaker_id', 'chapter_id', 'id', '__key__')


def _check(dataset_cfg, splits, keys):
  return base.check_each_split(
      dataset_cfg, splits, lambda cfg, split: split_dir(
          base.cfg_require(cfg, 'root', 'librispeech',
                           "'~/data/LibriSpeech'"), split)
  ) + base.check_keys(keys, RECORD_KEYS.__contains__, 'librispeech',
                      RECORD_KEYS)


@registry.register('source', 'librispeech')
@base.checked_by(_check)
def open_librispeech(dataset_cfg, split: str) -> LibriSpeechSource:
  root = base.cfg_require(dataset_cfg, 'root', 'librispeech',
                          "'~/data/LibriSpeech'")
  return LibriSpeechSource(root, split)
