"""digits_trimodal and digits_video: handwritten digits (still and in
motion), spoken digits and text (tfds builders).

  from projects.digits import data as digits_data
  builder = digits_data.build(data_dir)          # builds once, array_record
  source = builder.as_data_source('train')       # random-access records
  tokenizer = sentencepiece.SentencePieceProcessor(
      model_file=digits_data.TOKENIZER_PATH)
  video = digits_data.build(data_dir, 'digits_video')  # the moving digits

The tfds builders keep their names, so the built data lies in
DATA_DIR/digits_trimodal/1.0.0 and DATA_DIR/digits_video/1.0.0. Build them
with
  python -m projects.digits.data.build --data_dir=data [--dataset=digits_video]
digits_video's texts use their own tokenizer, VIDEO_TOKENIZER_PATH.
"""
import os

from projects.digits.data.digits_trimodal import DigitsTrimodal
from projects.digits.data.digits_video import DigitsVideo

_HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_PATH = os.path.join(_HERE, 'tokenizer.model')
VIDEO_TOKENIZER_PATH = os.path.join(_HERE, 'video_tokenizer.model')

# tfds name -> builder class of the datasets this package builds.
BUILDERS = {'digits_trimodal': DigitsTrimodal, 'digits_video': DigitsVideo}


def _builder_class(name: str):
  if name not in BUILDERS:
    raise ValueError(f'Unknown digits dataset {name!r}; choose one of '
                     f'{sorted(BUILDERS)}.')
  return BUILDERS[name]


def build(data_dir: str, name: str = 'digits_trimodal'):
  """Builds dataset `name` under `data_dir` unless already there; the
  builder."""
  builder = _builder_class(name)(data_dir=data_dir,
                                 file_format='array_record')
  builder.download_and_prepare()  # no-op when already prepared
  return builder


def _data_dir(dataset_cfg) -> str:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return os.path.expanduser(dataset_cfg.get('data_dir') or
                            tfds.core.constants.DATA_DIR)


def open_split(dataset_cfg, split: str, name: str = 'digits_trimodal'):
  """The `digits_trimodal` / `digits_video` data source
  (config.dataset.source): the tfds split, building the data under
  config.dataset.data_dir first if absent."""
  builder = build(_data_dir(dataset_cfg), name)
  if split not in builder.info.splits:
    raise ValueError(f'Split {split!r} is not in {name}; it has '
                     f'{sorted(builder.info.splits)}.')
  return builder.as_data_source(split)


def check_config(dataset_cfg, splits, keys,
                 name: str = 'digits_trimodal') -> list[str]:
  """The source's config check (multimodal.data.sources.base.checked_by):
  split names and record keys from the builder's code, without building or
  reading the data."""
  from multimodal.config_checks import problem  # pylint: disable=g-import-not-at-top
  from multimodal.data.sources import tfds as tfds_source  # pylint: disable=g-import-not-at-top
  from projects.digits.data import voices  # pylint: disable=g-import-not-at-top
  # The splits are fixed, whether or not the data is built yet.
  out = [problem(key, split, f'{name} has no such split; it has '
                 + ', '.join(voices.SPLITS))
         for key, split in splits.items() if split not in voices.SPLITS]
  builder = _builder_class(name)(data_dir=_data_dir(dataset_cfg))
  return out + tfds_source.check_builder(builder, name, {}, keys)


# The library never imports this project; configs that use it list
# 'projects.digits.data' in config.imports, which registers the sources.
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from multimodal import registry  # noqa: E402
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from multimodal.data.sources import base as sources_base  # noqa: E402


@registry.register('source', 'digits_trimodal')
@sources_base.checked_by(check_config)
def open_trimodal(dataset_cfg, split: str):
  """The `digits_trimodal` source (see open_split)."""
  return open_split(dataset_cfg, split)


def check_video_config(dataset_cfg, splits, keys) -> list[str]:
  """check_config of digits_video."""
  return check_config(dataset_cfg, splits, keys, name='digits_video')


@registry.register('source', 'digits_video')
@sources_base.checked_by(check_video_config)
def open_video(dataset_cfg, split: str):
  """The `digits_video` source (see open_split)."""
  return open_split(dataset_cfg, split, name='digits_video')
