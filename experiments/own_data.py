"""Shared settings of the experiments on your own data (not an experiment).

image_text.py and speech_text.py start from `base_config(media, flags)`.
Variant flags (comma-separated after the config path's ':') handled here:
  jsonl | csv | webdataset | coco | librispeech
              the data format (default jsonl); sets config.dataset.source
              and the record keys of the format's usual layout (a manifest's
              columns you name yourself: config.input.fields).
  tiny        a few steps of a tiny model at 32 px / 48 frames, for tests
              and smoke runs on a CPU.
"""
from __future__ import annotations

import ml_collections as mlc

from multimodal import base_config as library_base

# Variant name -> the registered source (multimodal/data/sources).
FORMATS = {'jsonl': 'jsonl', 'csv': 'csv', 'webdataset': 'webdataset',
           'coco': 'coco_captions', 'librispeech': 'librispeech'}

# Record keys of each format's usual layout: output field -> record key.
#   jsonl/csv    your manifest's keys/columns (these are suggestions)
#   webdataset   img2dataset's members KEY.jpg / KEY.txt; audio KEY.flac
#   coco         the coco_captions source's record (multimodal/data/sources)
#   librispeech  the librispeech source's record
_KEYS = {
    'jsonl': dict(image='image', audio='audio', image_text='caption',
                  audio_text='text'),
    'csv': dict(image='filepath', audio='filepath', image_text='title',
                audio_text='text'),
    'webdataset': dict(image='jpg', audio='flac', image_text='txt',
                       audio_text='txt'),
    'coco': dict(image='image', image_text='captions'),
    'librispeech': dict(audio='audio', audio_text='text'),
}


def parse_variant(arg: str | None, tasks: tuple[str, ...]
                  ) -> tuple[str, str, set[str]]:
  """'siglip,webdataset,tiny' -> ('siglip', 'webdataset', {'tiny'})."""
  flags = [f for f in (arg or '').split(',') if f]
  task = [f for f in flags if f in tasks] or [tasks[0]]
  fmt = [f for f in flags if f in FORMATS] or ['jsonl']
  rest = set(flags) - set(tasks) - set(FORMATS)
  if len(task) > 1 or len(fmt) > 1 or rest - {'tiny'}:
    raise ValueError(f'Bad variant {arg!r}: one of {tasks}, at most one '
                     f'format of {tuple(FORMATS)}, and optionally tiny.')
  return task[0], fmt[0], rest


def base_config(media: str, fmt: str) -> mlc.ConfigDict:
  """The library base plus the data source of `fmt` for `media` (image or
  audio) paired with text."""
  if media not in _KEYS[fmt]:
    raise ValueError(f'The {fmt} source holds no {media}; use one of '
                     f'{[f for f in FORMATS if media in _KEYS[f]]}.')
  c = library_base.base()
  c.train_split = 'train'
  c.eval_split = 'val'
  # Every source's keys (each reads its own; see multimodal/data/sources):
  # splits: split -> manifest path or shard pattern (jsonl, csv,
  # webdataset); path_keys: manifest keys holding media file paths;
  # root: the dataset directory (coco, librispeech).
  c.dataset = dict(source=FORMATS[fmt], splits=dict(train='', val=''),
                   path_keys=(), delimiter='', index_dir='', root='', name='',
                   data_dir=mlc.FieldReference(None, field_type=str))
  if fmt in ('jsonl', 'csv'):
    c.dataset.path_keys = (_KEYS[fmt][media],)
  if fmt == 'coco':
    c.train_split, c.eval_split = 'train2017', 'val2017'
  if fmt == 'librispeech':
    c.train_split, c.eval_split = 'train-clean-100', 'dev-clean'
  keys = _KEYS[fmt]
  c.input.fields = {media: keys[media], f'{media}_text': keys[f'{media}_text']}
  c.input.on_error = 'skip'  # web-scale data has broken records: count them
  c.input.max_skip_fraction = 0.05
  c.input.max_text_len = 32
  c.input.tokenizer = ''  # python -m multimodal.tokenizer train ...
  return c


def image_tower(size: int, variant: str) -> dict:
  return dict(name='vit', variant=variant, image_size=size, channels=3,
              pool='map', posemb='learned', **library_base.layer_options())


def make_tiny(c: mlc.ConfigDict) -> None:
  """Shrinks a config in place to a few steps of a tiny model."""
  c.total_steps = 64
  c.batch_size = 16
  c.eval_batch_size = 16
  c.log_every = 8
  c.checkpoint_every = 10
  c.optimizer.lr = 3e-3
  c.optimizer.warmup_steps = 3
  c.input.num_threads = 1
  c.input.prefetch = 8
