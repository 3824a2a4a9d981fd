"""`source = 'tfds'`: prepared tensorflow_datasets data, read as array_record.

Config keys (config.dataset):
  name      tfds builder name, e.g. 'clevr' or 'coco_captions'.
  data_dir  where tfds data lives (None: tfds's default, ~/tensorflow_datasets).

Records are the tfds feature dicts (decoded: images as uint8 arrays, text as
bytes) plus '__key__' = 'NAME/SPLIT:INDEX', added in place on each freshly
decoded dict (so it costs nothing measurable).
"""
from __future__ import annotations

import difflib
import os
from typing import Any

from multimodal import registry
from multimodal.data.sources import base


class TfdsSource(base.Source):
  """A tfds data source (`builder.as_data_source(split)`) with '__key__'."""

  def __init__(self, source, name: str, split: str, data_dir: str):
    self.source = source
    self.name, self.split, self.data_dir = name, split, data_dir

  def __len__(self) -> int:
    return len(self.source)

  def _read(self, index: int) -> dict[str, Any]:
    record = self.source[index]
    if isinstance(record, dict):
      record['__key__'] = f'{self.name}/{self.split}:{index}'
    return record

  def describe(self) -> str:
    return (f'tfds {self.name} split {self.split!r} in {self.data_dir}: '
            f'{len(self)} records')


def _builder(dataset_cfg):
  """(builder, name, data_dir): the tfds builder config.dataset names, made
  from its code or its prepared files (metadata only: no record read)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = base.cfg_require(dataset_cfg, 'name', 'tfds', "'clevr'")
  data_dir = os.path.expanduser(
      base.cfg_get(dataset_cfg, 'data_dir') or tfds.core.constants.DATA_DIR)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except ModuleNotFoundError as e:
    if 'tensorflow' not in str(e):
      raise
    raise ModuleNotFoundError(
        f'The tfds builder {name!r} needs TensorFlow just to be constructed '
        '(its feature spec calls tf), and TensorFlow is not a dependency '
        'here: pip install tensorflow-cpu, or use a dataset whose builder '
        'does not need it (or its native files: config.dataset.source = '
        "'coco_captions' / 'librispeech').") from e
  return builder, name, data_dir


def has_feature(features, key: str) -> bool:
  """Whether records of a builder with `features` (a tfds FeaturesDict)
  hold `key`; 'a/b' reads nested features (and those of a Sequence)."""
  if key == '__key__' or key in features.keys():
    return True
  node = features
  for part in key.split('/'):
    node = getattr(node, 'feature', node)  # a Sequence's inner features
    if not hasattr(node, 'keys') or part not in node.keys():
      return False
    node = node[part]
  return True


def check_builder(builder, name: str, splits: dict[str, str],
                  keys: dict[str, str]) -> list[str]:
  """Split names and record keys against a tfds builder's metadata (the
  source check of tfds and of sources built on a tfds builder)."""
  from multimodal.config_checks import problem  # pylint: disable=g-import-not-at-top
  out = []
  # Splits are known once the data is prepared; before, opening prepares it
  # or reports what is missing.
  have = sorted(builder.info.splits)
  for key, split in splits.items():
    if have and split not in have:
      out.append(problem(key, split, f'{name} has no such split; it has '
                         f'{", ".join(have)}'))
  features = builder.info.features
  if features is not None:
    out += base.check_keys(keys, lambda k: has_feature(features, k),
                           f'{name}', features.keys())
  return out


def check_tfds(dataset_cfg, splits, keys) -> list[str]:
  """config.dataset of the tfds source (see base.checked_by)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from multimodal.config_checks import problem  # pylint: disable=g-import-not-at-top
  name = base.cfg_get(dataset_cfg, 'name')
  try:
    builder, name, _ = _builder(dataset_cfg)
  except tfds.core.registered.DatasetNotFoundError:
    data_dir = base.cfg_get(dataset_cfg, 'data_dir') or (
        tfds.core.constants.DATA_DIR)
    close = difflib.get_close_matches(
        str(name), tfds.list_builders(with_community_datasets=False), n=3)
    hint = f' Close names: {", ".join(close)}.' if close else ''
    return [problem('dataset.name', name, f'no tfds dataset of that name '
                    f'(neither a registered builder nor prepared data under '
                    f'{data_dir}).{hint} tfds.list_builders() lists them.')]
  except (ValueError, ModuleNotFoundError) as e:
    return [problem('dataset.name', name, str(e))]
  return check_builder(builder, name, splits, keys)


@registry.register('source', 'tfds')
@base.checked_by(check_tfds)
def open_tfds(dataset_cfg, split: str) -> TfdsSource:
  """Random-access tfds source of `split` (not sliced: open_source slices)."""
  builder, name, data_dir = _builder(dataset_cfg)
  # Splits are unknown (empty) only for data not prepared yet, or mocked
  # (tfds.testing.mock_data); reading then reports what is missing.
  if builder.info.splits and split not in builder.info.splits:
    raise ValueError(f'Split {split!r} is not in {name}; it has '
                     f'{sorted(builder.info.splits)}.')
  return TfdsSource(builder.as_data_source(split), name, split, data_dir)
