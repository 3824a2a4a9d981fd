"""Shared fixtures: the built-in dataset built once per test session (worker)."""
import os

from absl import flags
import pytest

# grain and absl-based code read flags; tests run without absl.app.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope='session')
def digits_data_dir(tmp_path_factory):
  from data_pipelines import digits_trimodal  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  digits_trimodal.build(data_dir)
  return data_dir


@pytest.fixture()
def tiny_config(digits_data_dir):
  from experiments import contrastive_digits  # pylint: disable=g-import-not-at-top
  config = contrastive_digits.get_config('tiny')
  config.dataset.data_dir = digits_data_dir
  return config


@pytest.fixture()
def captioning_tiny_config(digits_data_dir):
  from experiments import captioning_digits  # pylint: disable=g-import-not-at-top
  config = captioning_digits.get_config('tiny')
  config.dataset.data_dir = digits_data_dir
  return config


@pytest.fixture()
def vqa_tiny_config(digits_data_dir):
  from experiments import vqa_digits  # pylint: disable=g-import-not-at-top
  config = vqa_digits.get_config('tiny')
  config.dataset.data_dir = digits_data_dir
  return config
