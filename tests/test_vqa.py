"""VQA: aligned question fields, per-type bookkeeping, a real training run."""
import collections
import types

import numpy as np
import pytest

import conftest

from multimodal import mesh as mesh_lib
from multimodal import registry
from multimodal import train
from multimodal.data import pipeline
from multimodal.evaluators import vqa as vqa_metrics
from multimodal.tasks import text_generation
from multimodal.tasks import vqa

TYPES = ('written', 'spoken', 'match', 'larger', 'sum')


pytestmark = pytest.mark.usefixtures('fast_compiles')


def _texts(tokenizer, ids):
  return [tokenizer.decode(row) for row in ids.reshape(-1, ids.shape[-1])]


def test_accuracy_by_type():
  predictions = ['7', 'Seven', 'no', 'yes', '12']
  references = [['7'], ['6'], ['no'], ['no'], ['12', 'twelve']]
  types = ['written', 'spoken', 'match', 'match', 'sum']
  got = vqa_metrics.accuracy_by_type(predictions, references, types,
                                     metric='exact_match')
  # 'Seven' normalises to '7', which is not '6'.
  assert got == {'all': 0.6, 'written': 1.0, 'spoken': 0.0, 'match': 0.5,
                 'sum': 1.0}
  # The official VQA accuracy leaves one reference out: a single reference
  # never counts, and '12' against ['12', 'twelve'] scores 1/6.
  got = vqa_metrics.accuracy_by_type(predictions, references, types)
  assert got == pytest.approx({'all': 1 / 30, 'written': 0.0, 'spoken': 0.0,
                               'match': 0.0, 'sum': 1 / 6})
  with pytest.raises(ValueError, match='reserved'):
    vqa_metrics.accuracy_by_type(['1'], [['1']], ['all'])
  with pytest.raises(ValueError, match='one reference list'):
    vqa_metrics.accuracy_by_type(['1', '2'], [['1']], ['sum'])


def test_summary_names_each_metric():
  task = types.SimpleNamespace(conditions={'full': (), 'masked_audio': ()})
  metrics = {'test/vqa_acc/full/all': 0.5, 'test/vqa_acc/masked_audio/all':
             0.25, 'test/exact_match/full/all': 1.0,
             'test/exact_match/masked_audio/all': 0.5,
             'test/vqa_count/sum': 3}
  assert vqa.VqaTask.summary(task, metrics, 'test') == (
      'VQA accuracy (vqa_acc) % (full / masked_audio): all 50.0/25.0; '
      'exact-match accuracy (exact_match) % (full / masked_audio): '
      'all 100.0/50.0')


def test_batches_hold_every_question_of_a_record(vqa_tiny_config):
  config = vqa_tiny_config
  task = registry.get('task', 'vqa')(config)
  it, pre, n = pipeline.make_iterator(config, 'test', train=False,
                                      fields=task.fields, batch_size=3)
  batch = next(it)
  length = config.input.max_text_len
  assert batch['question'].shape == (3, 5, length)
  assert batch['answer_refs'].shape == (3, 5, 1, length)
  assert batch['seed'].shape == (3,) and batch['seed'].dtype == np.int32
  assert n == 360  # records; each holds 5 questions
  source = pipeline.open_source(config.dataset, 'test')
  for i in range(3):
    record = source[i]
    for field, key in (('question', 'questions'), ('answer', 'answers'),
                       ('question_type', 'question_types')):
      assert _texts(pre.tokenizer, batch[field][i]) == [
          t.decode() for t in record[key]]


def test_training_picks_one_aligned_question(vqa_tiny_config):
  config = vqa_tiny_config
  config.input.aligned_items = 0
  task = registry.get('task', 'vqa')(config)
  it, pre, _ = pipeline.make_iterator(config, 'train', train=True,
                                      fields=task.fields, batch_size=64)
  batch = next(it)
  assert batch['question'].shape == (64, config.input.max_text_len)
  triples = list(zip(*(_texts(pre.tokenizer, batch[f])
                       for f in ('question_type', 'question', 'answer'))))
  questions = {}
  for kind, question, answer in triples:
    assert questions.setdefault(kind, question) == question  # same type
    if kind in ('written', 'spoken', 'sum'):
      assert answer.isdigit()
    if kind == 'match':
      assert answer in ('yes', 'no')
  assert set(questions) == set(TYPES)  # all picked among 64 examples
  assert len(set(batch['seed'].tolist())) == 64


def test_evaluation_bookkeeping_per_condition_and_type(vqa_tiny_config,
                                                       monkeypatch):
  """Oracle answers with every modality, '0' with the image masked, and
  'no' with the audio masked: the metrics must match counts taken from the
  raw records, with the padding rows of the last batch left out."""
  config = vqa_tiny_config
  task = registry.get('task', 'vqa')(config)
  pre = pipeline.Preprocess(config.input, ['answer'], train=False)

  def oracle(model, batch):
    del model
    question = batch['question']
    prompt = text_generation.bos_prompt(vqa.flat_questions(question),
                                        ids=task.ids)
    out = {'question': question, 'answer_refs': batch['answer_refs'],
           'question_type': batch['question_type']}
    for name, masked in task.conditions.items():
      fixed = {('image',): '0', ('audio',): 'no'}.get(masked)
      if fixed is None:
        answer = vqa.flat_questions(batch['answer'])
      else:
        answer = np.broadcast_to(pre.tokenizer(fixed),
                                 (prompt.shape[0], config.input.max_text_len))
      tokens = text_generation.join(prompt, answer, ids=task.ids)
      out[f'tokens/{name}'] = tokens.reshape(question.shape[:-1] + (-1,))
    return out

  monkeypatch.setattr(task, 'outputs_fn', oracle)
  mesh = mesh_lib.build_mesh(config.mesh)
  it, _, n = pipeline.make_iterator(config, 'test', train=False,
                                    fields=task.fields, batch_size=64)
  assert n % 64  # the last batch is padded
  batches = (train.shard_batch(train.pad_batch(b, 64),
                               mesh_lib.batch_sharding(mesh)) for b in it)
  metrics = task.evaluate(None, batches, pre.tokenizer, mesh, prefix='test')

  counts, zeros, nos = (collections.Counter() for _ in range(3))
  for record in pipeline.open_source(config.dataset, 'test'):
    for kind, answer in zip(record['question_types'], record['answers']):
      kind, answer = kind.decode(), answer.decode()
      counts[kind] += 1
      zeros[kind] += answer == '0'
      nos[kind] += answer == 'no'
  assert metrics['test/num_examples'] == sum(counts.values()) == 5 * n
  for kind in TYPES:
    assert metrics[f'test/vqa_count/{kind}'] == counts[kind]
    assert metrics[f'test/exact_match/full/{kind}'] == 1.0
    assert metrics[f'test/exact_match/masked_image/{kind}'] == pytest.approx(
        zeros[kind] / counts[kind])
    assert metrics[f'test/exact_match/masked_audio/{kind}'] == pytest.approx(
        nos[kind] / counts[kind])
  assert 0 < metrics['test/exact_match/masked_audio/match'] < 1
  assert metrics['test/exact_match/full/all'] == 1.0
  assert not any('/vqa_acc' in k for k in metrics)  # one reference each
  summary = task.summary(metrics, 'test')
  assert summary.startswith('exact-match accuracy (exact_match) % (full / ')
  assert 'all 100.0/' in summary


def test_bad_configs_are_clear_errors(vqa_tiny_config):
  config = vqa_tiny_config
  # The digits task has one answer per question: the official VQA accuracy
  # would read 0 throughout, so the experiment names exact match ...
  assert config.evals.vqa.metric == 'exact_match'
  config.evals.vqa.metric = 'vqa_acc'
  with pytest.raises(ValueError, match='max_references=1'):
    registry.get('task', 'vqa')(config)
  # ... and a config that names no metric gets the official one, refused
  # here for the same reason.
  del config.evals.vqa['metric']
  with pytest.raises(ValueError, match="metric='exact_match'"):
    registry.get('task', 'vqa')(config)
  config.evals.vqa.metric = 'exact_match'
  config.model.decoder.max_len = 12
  with pytest.raises(ValueError, match='max_len'):
    registry.get('task', 'vqa')(config)
  config.model.decoder.max_len = 20
  config.vqa.media = ('image', 'video')
  with pytest.raises(ValueError, match='towers'):
    registry.get('task', 'vqa')(config)


def test_tiny_training_lowers_the_loss_and_reports_metrics(vqa_tiny_config,
                                                           tmp_path):
  final, _ = conftest.short_training_run(vqa_tiny_config, tmp_path)
  for condition in ('full', 'masked_image', 'masked_audio'):
    for kind in TYPES + ('all',):
      assert 0.0 <= final[f'validation/exact_match/{condition}/{kind}'] <= 1.0
  assert final['validation/num_examples'] == 5 * 179
