"""`source = 'tfds'`: prepared tensorflow_datasets data, read as array_record.

Config keys (config.dataset):
  name      tfds builder name, e.g. 'clevr' or 'coco_captions'.
  data_dir  where tfds data lives (None: tfds's default, ~/tensorflow_datasets).

Records are the tfds feature dicts (decoded: images as uint8 arrays, text as
bytes) plus '__key__' = 'NAME/SPLIT:INDEX', added in place on each freshly
decoded dict (so it costs nothing measurable).
"""
from __future__ import annotations

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


@registry.register('source', 'tfds')
def open_tfds(dataset_cfg, split: str) -> TfdsSource:
  """Random-access tfds source of `split` (not sliced: open_source slices)."""
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
  # Splits are unknown (empty) only for data not prepared yet, or mocked
  # (tfds.testing.mock_data); reading then reports what is missing.
  if builder.info.splits and split not in builder.info.splits:
    raise ValueError(f'Split {split!r} is not in {name}; it has '
                     f'{sorted(builder.info.splits)}.')
  return TfdsSource(builder.as_data_source(split), name, split, data_dir)
