"""digits_trimodal: handwritten digits, spoken digits and text (tfds builder).

  from projects.digits import data as digits_data
  builder = digits_data.build(data_dir)          # builds once, array_record
  source = builder.as_data_source('train')       # random-access records
  tokenizer = sentencepiece.SentencePieceProcessor(
      model_file=digits_data.TOKENIZER_PATH)

The tfds builder keeps the name digits_trimodal, so the built data lies in
DATA_DIR/digits_trimodal/1.0.0. Build it with
  python -m projects.digits.data.build --data_dir=data
"""
import os

from projects.digits.data.digits_trimodal import DigitsTrimodal

TOKENIZER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              'tokenizer.model')


def build(data_dir: str) -> DigitsTrimodal:
  """Builds the dataset under `data_dir` unless already there; the builder."""
  builder = DigitsTrimodal(data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()  # no-op when already prepared
  return builder


def open_split(dataset_cfg, split: str):
  """The `digits_trimodal` data source (config.dataset.source): the tfds
  split, building the data under config.dataset.data_dir first if absent."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(dataset_cfg.get('data_dir') or
                                tfds.core.constants.DATA_DIR)
  builder = build(data_dir)
  if split not in builder.info.splits:
    raise ValueError(f'Split {split!r} is not in digits_trimodal; it has '
                     f'{sorted(builder.info.splits)}.')
  return builder.as_data_source(split)


def check_config(dataset_cfg, splits, keys) -> list[str]:
  """The source's config check (multimodal.data.sources.base.checked_by):
  split names and record keys from the builder's code, without building or
  reading the data."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from multimodal.config_checks import problem  # pylint: disable=g-import-not-at-top
  from multimodal.data.sources import tfds as tfds_source  # pylint: disable=g-import-not-at-top
  from projects.digits.data import voices  # pylint: disable=g-import-not-at-top
  # The splits are fixed, whether or not the data is built yet.
  out = [problem(key, split, 'digits_trimodal has no such split; it has '
                 + ', '.join(voices.SPLITS))
         for key, split in splits.items() if split not in voices.SPLITS]
  data_dir = os.path.expanduser(dataset_cfg.get('data_dir') or
                                tfds.core.constants.DATA_DIR)
  builder = DigitsTrimodal(data_dir=data_dir)
  return out + tfds_source.check_builder(builder, 'digits_trimodal', {}, keys)


# The library never imports this project; configs that use it list
# 'projects.digits.data' in config.imports, which registers the source.
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from multimodal import registry  # noqa: E402
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from multimodal.data.sources import base as sources_base  # noqa: E402

registry.register('source', 'digits_trimodal')(
    sources_base.checked_by(check_config)(open_split))
