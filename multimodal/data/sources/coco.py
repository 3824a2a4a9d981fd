"""`source = 'coco_captions'`: COCO captions in their native layout.

  ROOT/annotations/captions_SPLIT.json   (e.g. captions_train2017.json)
  ROOT/SPLIT/FILE_NAME                   (e.g. train2017/000000391895.jpg)

Config keys (config.dataset):
  root  the directory holding annotations/ and the image directories.

One record per image:
  image      bytes   the encoded image file
  captions   list[str]  all its captions, in annotation order
  image_id   int
  file_name  str
  __key__    'SPLIT/FILE_NAME'

The annotation file is parsed once at open; images with no caption are
skipped (describe() reports how many), as are captions of unknown images.
A listed image whose file is missing raises RecordError 'missing_file'.
"""
from __future__ import annotations

import json
import os
from typing import Any

from multimodal import registry
from multimodal.data.sources import base


def split_files(root: str, split: str) -> tuple[str, str]:
  """(annotation file, image directory) of `split`, or a clear
  FileNotFoundError."""
  root = os.path.abspath(os.path.expanduser(root))
  annotations = os.path.join(root, 'annotations', f'captions_{split}.json')
  if not os.path.isfile(annotations):
    have = sorted(f for f in _listdir(os.path.join(root, 'annotations'))
                  if f.startswith('captions_'))
    raise FileNotFoundError(
        f'COCO captions of split {split!r} not found: {annotations} '
        f'does not exist (caption files there: {have or "none"}). '
        'config.dataset.root must hold annotations/captions_SPLIT.json.')
  image_dir = os.path.join(root, split)
  if not os.path.isdir(image_dir):
    raise FileNotFoundError(
        f'COCO images of split {split!r} not found: {image_dir} is '
        'not a directory (expected ROOT/SPLIT/FILE_NAME).')
  return annotations, image_dir


class CocoCaptionsSource(base.Source):
  """Images with their captions, from `root` for split `split`."""

  def __init__(self, root: str, split: str):
    self.root = os.path.abspath(os.path.expanduser(root))
    self.split = split
    self.annotations, self.image_dir = split_files(self.root, split)
    with open(self.annotations, encoding='utf-8') as f:
      data = json.load(f)
    if not isinstance(data, dict) or not {'images', 'annotations'} <= set(
        data):
      raise ValueError(f'{self.annotations} is not a COCO captions file: it '
                       "needs top-level 'images' and 'annotations' lists.")
    captions: dict[int, list[str]] = {}
    for ann in data['annotations']:
      captions.setdefault(ann['image_id'], []).append(ann['caption'])
    self._ids, self._files, self._captions = [], [], []
    self.num_uncaptioned = 0
    for image in data['images']:
      texts = captions.pop(image['id'], None)
      if not texts:
        self.num_uncaptioned += 1
        continue
      self._ids.append(int(image['id']))
      self._files.append(image['file_name'])
      self._captions.append(texts)
    # What remains are captions of images that are not listed.
    self.num_orphan_captions = sum(len(v) for v in captions.values())

  def __len__(self) -> int:
    return len(self._ids)

  def _read(self, index: int) -> dict[str, Any]:
    file_name = self._files[index]
    rid = f'{self.split}/{file_name}'
    image = base.read_file(os.path.join(self.image_dir, file_name), rid)
    return {'image': image, 'captions': list(self._captions[index]),
            'image_id': self._ids[index], 'file_name': file_name,
            '__key__': rid}

  def describe(self) -> str:
    num_captions = sum(len(c) for c in self._captions)
    text = (f'coco_captions {self.root} split {self.split!r}: {len(self)} '
            f'images, {num_captions} captions; {self.num_uncaptioned} '
            'images without captions skipped')
    if self.num_orphan_captions:
      text += f', {self.num_orphan_captions} captions of unlisted images'
    return text


def _listdir(path: str) -> list[str]:
  try:
    return os.listdir(path)
  except OSError:
    return []


def _root(dataset_cfg) -> str:
  return base.cfg_require(dataset_cfg, 'root', 'coco_captions',
                          "'~/data/coco'")


RECORD_KEYS = ('image', 'captions', 'image_id', 'file_name', '__key__')


def _check(dataset_cfg, splits, keys):
  return base.check_each_split(
      dataset_cfg, splits, lambda cfg, split: split_files(_root(cfg), split)
  ) + base.check_keys(keys, RECORD_KEYS.__contains__, 'coco_captions',
                      RECORD_KEYS)


@registry.register('source', 'coco_captions')
@base.checked_by(_check)
def open_coco_captions(dataset_cfg, split: str) -> CocoCaptionsSource:
  return CocoCaptionsSource(_root(dataset_cfg), split)
