"""Public tfds datasets through config field maps, on tfds's mocked data.

tfds.testing.mock_data makes random records from a builder's feature spec,
with no download. Without TensorFlow (not a dependency here) it works for
clevr; the coco_captions and librispeech builders call tf while they are
constructed, which the pipeline reports as a clear error instead, so their
field maps are checked on records laid out as those builders' features.
"""
import importlib.util

from flax import nnx
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import public_datasets
from multimodal import registry
from multimodal.data import pipeline
from multimodal.data.errors import DataError
from multimodal.models import build_model
from projects.digits import data as digits_data

HAS_TF = importlib.util.find_spec('tensorflow') is not None


def _config(name):
  """The dataset's config with a tokenizer (a user passes their own with
  --config.input.tokenizer; the digits one stands in for it here)."""
  config = public_datasets.get_config(name)
  config.input.tokenizer = digits_data.TOKENIZER_PATH
  return config


@pytest.mark.parametrize('name', public_datasets.NAMES)
def test_configs_stand_apart_from_the_demo(name):
  """A tfds source, no imports and no tokenizer default: nothing of the
  digits demo (projects/digits) is used."""
  config = public_datasets.get_config(name)
  assert config.dataset.source == 'tfds' and config.dataset.name == name
  assert not config.imports and config.input.tokenizer is None
  with pytest.raises(ValueError, match='config.input.tokenizer is not set'):
    pipeline.tokenizer_path(config.input)


def _mocked():
  return tfds.testing.mock_data(num_examples=8,
                                policy=tfds.testing.MockPolicy.USE_CODE)


class _SameLengthQA:
  """Trims each mocked record's question and answer lists to one length.

  The mock draws every leaf of a Sequence({question, answer}) with its own
  random length, which real CLEVR (one answer per question) never has; the
  pipeline rightly rejects such records.
  """

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    record = dict(self.source[i])
    qa = dict(record['question_answer'])
    n = max(1, min(len(v) for v in qa.values()))
    record['question_answer'] = {k: v[:n] for k, v in qa.items()}
    return record


@pytest.mark.parametrize('train', [True, False])
def test_clevr_batches_from_mocked_tfds(train):
  config = _config('clevr')
  task = registry.get('task', config.task)(config)
  with _mocked():
    raw = pipeline.open_source(config.dataset, 'train')
    record = raw[0]
    q, a = (record['question_answer'][k] for k in ('question', 'answer'))
    assert record['image'].dtype == np.uint8 and len(q) != len(a)
    it, pre, n = pipeline.make_iterator(
        config, 'train', train=train, fields=task.fields, batch_size=4,
        source=_SameLengthQA(raw))
    batch = next(it)
  assert n == 8
  size, length = config.input.image_size, config.input.max_text_len
  assert batch['image'].shape == (4, size, size, 3)
  assert batch['image'].dtype == np.float32
  assert -1 <= batch['image'].min() and batch['image'].max() <= 1
  for field in ('question', 'answer'):
    assert batch[field].shape == (4, length) and batch[field].dtype == np.int32
    assert np.all(batch[field][:, 0] != 0)
  assert batch['answer_refs'].shape == (4, 1, length)
  np.testing.assert_array_equal(batch['answer_refs'][:, 0], batch['answer'])
  assert 'label' not in batch  # clevr maps none and VQA asks for none
  assert 'question_type' not in batch
  del pre
  # The config's model accepts these inputs.
  model = nnx.eval_shape(lambda: build_model(config.model,
                                             rngs=nnx.Rngs(0)))
  assert model.modalities == ('image',)


@pytest.mark.parametrize('name', ['coco_captions', 'librispeech'])
def test_builders_that_need_tensorflow(name):
  config = _config(name)
  with _mocked():
    if not HAS_TF:
      with pytest.raises(ModuleNotFoundError, match='needs TensorFlow'):
        pipeline.open_source(config.dataset, 'train')
      return
    source = pipeline.open_source(config.dataset, 'train')
  assert len(source) == 8


def test_coco_captions_field_map_reads_nested_captions():
  """The coco_captions map ('captions/text', 'image/id') on a record laid
  out as that builder's features are (checked without the builder)."""
  config = _config('coco_captions')
  task = registry.get('task', config.task)(config)
  # label is mapped but no evaluator here asks for it: request it to check
  # the map.
  pre = pipeline.Preprocess(config.input, task.fields + ['label'],
                            train=True)
  record = {'image': np.full((40, 30, 3), 200, np.uint8),
            'image/id': np.int64(42),
            'captions': {'text': np.array(['a dog', 'a brown dog', 'dog']),
                         'id': np.arange(3)}}
  out = pre(record, np.random.default_rng(0))
  assert out['image'].shape == (64, 64, 3) and out['label'] == 42
  refs = [pre.tokenizer.decode(r) for r in out['image_text_refs'] if r.any()]
  assert refs == ['a dog', 'a brown dog', 'dog']
  assert pre.tokenizer.decode(out['image_text']) in refs
  with pytest.raises(DataError, match="no 'captions/text'"):
    pre({'image': record['image'], 'image/id': 1}, np.random.default_rng(0))


def test_librispeech_field_map_reads_decoded_speech():
  """LibriSpeech records: decoded int16 `speech` at 16 kHz, `text`."""
  config = _config('librispeech')
  task = registry.get('task', config.task)(config)
  assert task.fields == ['audio', 'audio_text', 'audio_text_refs']
  # label is mapped but no evaluator here asks for it: request it to check
  # the map.
  pre = pipeline.Preprocess(config.input, task.fields + ['label'],
                            train=True)
  rng = np.random.default_rng(0)
  t = np.arange(20 * 16000) / 16000  # 20 s: longer than the 16 s window
  speech = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
  record = {'speech': speech, 'text': 'HELLO WORLD', 'speaker_id': 19,
            'chapter_id': 3, 'id': '19-3-0'}
  out = pre(record, rng)
  assert out['audio'].shape == (1600, config.input.num_mels)
  assert out['audio'].dtype == np.float32 and out['label'] == 19
  # A 440 Hz tone: every frame's loudest mel bin is the same low one.
  peaks = np.argmax(out['audio'], axis=1)
  assert np.all(peaks == peaks[0]) and peaks[0] < config.input.num_mels // 2
  assert out['audio_text_refs'].shape == (1, config.input.max_text_len)
  with pytest.raises(ValueError, match='dtype'):
    pre(dict(record, speech=np.array([True, False])), rng)
  model = nnx.eval_shape(lambda: build_model(config.model,
                                             rngs=nnx.Rngs(0)))
  assert model.modalities == ('audio',)
