"""Shared fixtures: the built-in dataset built once per test session (worker),
tiny experiment configs on it, and fast compiles for tiny models."""
import importlib

from absl import flags
import jax
import pytest

# grain and absl-based code read flags; tests run without absl.app.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope='module')
def fast_compiles():
  """Skips XLA optimisation passes for one test module.

  For tiny models they cost more compile time than they save at run time.
  The flag is read at compile time, so restoring it afterwards leaves other
  modules unaffected. Use: pytestmark = pytest.mark.usefixtures(
  'fast_compiles').
  """
  old = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', old)


@pytest.fixture(scope='session')
def digits_data_dir(tmp_path_factory):
  from projects.digits import data as digits_data  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  digits_data.build(data_dir)
  return data_dir


def _tiny(experiment: str, data_dir: str):
  """The 'tiny' variant of projects/digits/configs/<experiment>.py on the
  test data."""
  config = importlib.import_module(
      f'projects.digits.configs.{experiment}').get_config('tiny')
  config.dataset.data_dir = data_dir
  return config


@pytest.fixture(scope='session')
def tiny_exports(digits_data_dir, tmp_path_factory):
  """{experiment: export dir} of the untrained 'tiny' contrastive,
  captioning and VQA models (multimodal.testing.exports), built once."""
  from multimodal.testing import exports  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('exports')
  return {name: exports.untrained_export(_tiny(name, digits_data_dir),
                                         str(root / name))
          for name in ('contrastive', 'captioning', 'vqa')}


@pytest.fixture()
def tiny_config(digits_data_dir):
  return _tiny('contrastive', digits_data_dir)


@pytest.fixture()
def captioning_tiny_config(digits_data_dir):
  return _tiny('captioning', digits_data_dir)


@pytest.fixture()
def vqa_tiny_config(digits_data_dir):
  return _tiny('vqa', digits_data_dir)


def short_training_run(config, workdir, steps: int = 20):
  """Trains `config` for `steps` (logging every step, lr 3e-3, evaluating on
  the 179-record validation split); returns (final metrics, losses) after
  checking that the loss came down."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from multimodal import metrics_writer, train  # pylint: disable=g-import-not-at-top
  config.total_steps = steps
  config.log_every = 1
  config.checkpoint_every = 1000
  config.optimizer.lr = 3e-3
  config.eval_split = 'validation'
  final = train.train_and_evaluate(config, str(workdir))
  losses = [m['train/loss'] for m in metrics_writer.read_metrics(
      str(workdir)) if 'train/loss' in m]
  assert len(losses) == steps
  assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
  return final, losses


def assert_two_processes_hold_one(make_iterator, steps: int = 3) -> None:
  """make_iterator(batch_size, process_index, process_count) -> iterator.
  Checks that two processes' k-th batches (size 4) hold exactly one
  process's k-th batch (size 8): process i has global rows i, i + 2, ..."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  one = make_iterator(8, 0, 1)
  two = [make_iterator(4, i, 2) for i in range(2)]
  for _ in range(steps):
    want = next(one)
    parts = [next(it) for it in two]
    for k in want:
      got = np.stack([parts[0][k], parts[1][k]], axis=1).reshape(
          want[k].shape)
      np.testing.assert_array_equal(got, want[k])
