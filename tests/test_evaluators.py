"""Retrieval recall and zero-shot classification on hand-made embeddings."""
import numpy as np
import pytest

from multimodal.evaluators import retrieval
from multimodal.evaluators import zeroshot


def test_recall_perfect_and_shifted():
  e = np.eye(6, dtype=np.float32)
  assert retrieval.recall_at_k(e, e, ks=(1, 5)) == {1: 1.0, 5: 1.0}
  # Candidate i+1 (cyclic) matches query i best, own pair is second.
  cands = 0.5 * e + np.roll(e, 1, axis=0)
  ranks = retrieval.ranks_of_matches(e, cands)
  np.testing.assert_array_equal(ranks, np.ones(6))
  assert retrieval.recall_at_k(e, cands, ks=(1, 2)) == {1: 0.0, 2: 1.0}


def test_ties_do_not_count_as_hits():
  q = np.ones((4, 3), np.float32)
  # All scores equal: only query 0 finds its pair first (lowest index).
  assert retrieval.recall_at_k(q, q, ks=(1,))[1] == 0.25


def test_chunking_matches_unchunked():
  rng = np.random.default_rng(0)
  q, c = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
  np.testing.assert_array_equal(retrieval.ranks_of_matches(q, c, chunk=7),
                                retrieval.ranks_of_matches(q, c, chunk=1000))


def test_zeroshot_prototypes_and_accuracy():
  protos_in = np.eye(3, dtype=np.float32)
  prompts = np.stack([protos_in, protos_in * 2], axis=1)  # [C, T, E]
  protos = zeroshot.prototypes_from_prompts(prompts)
  np.testing.assert_allclose(protos, protos_in, atol=1e-6)
  x = np.array([[1, .1, 0], [0, 1, .2], [0, .9, .1]], np.float32)
  assert zeroshot.accuracy(x, np.array([0, 1, 2]), protos) == pytest.approx(2 / 3)


def test_prototypes_from_examples_require_every_class():
  emb = np.eye(2, dtype=np.float32)
  with pytest.raises(ValueError, match=r'\[2\]'):
    zeroshot.prototypes_from_examples(emb, np.array([0, 1]), 3)
  p = zeroshot.prototypes_from_examples(np.array([[1, 0], [3, 0], [0, 2]],
                                                 np.float32),
                                        np.array([0, 0, 1]), 2)
  np.testing.assert_allclose(p, np.eye(2), atol=1e-6)


def test_fill_prompts():
  assert zeroshot.fill_prompts(['a {}', '{index}!', 'the {name}'],
                               ['zero', 'one']) == [
      ['a zero', '0!', 'the zero'], ['a one', '1!', 'the one']]


class _Task:
  fields = ['image', 'image_text']
  pairs = [('image', 'image_text')]


class _Tokenizer:
  """Texts as one id per word of a fixed vocabulary (enough for decode)."""
  words = ['', 'cat', 'dog', 'bird']

  def __call__(self, text):
    return np.array([self.words.index(text)], np.int32)

  def decode(self, ids):
    return self.words[int(ids[0])]


def _embed_texts(field, texts):
  # Prompt '<name>' -> the one-hot of its class among cat, dog, bird.
  del field
  return np.stack([np.eye(3)[['cat', 'dog', 'bird'].index(t)] for t in texts])


def test_zeroshot_class_names_from_config_or_from_a_label_text_field():
  from multimodal import evaluators  # pylint: disable=g-import-not-at-top
  images = np.eye(3)[[0, 1, 2, 2, 1]] + 0.1  # classes cat dog bird bird dog
  outputs = {'embedding/image': images,
             'label': np.array([0, 1, 2, 2, 0]),  # the last one is wrong
             'class_name': np.array([[1], [2], [3], [3], [2]])}
  ctx = evaluators.Context(tokenizer=_Tokenizer(), embed_texts=_embed_texts)
  by_index = zeroshot.ZeroShot(_Task(), media='image', text='image_text',
                               class_names=('cat', 'dog', 'bird'))
  assert by_index.fields == ('label',)
  assert by_index(outputs, ctx) == {'zeroshot/image': 0.8}
  # Class names read from the data: sorted distinct names (bird, cat, dog).
  by_text = zeroshot.ZeroShot(_Task(), media='image', text='image_text',
                              label_text='class_name', name='zs')
  assert by_text.fields == ('class_name',)
  assert by_text(outputs, ctx) == {'zs': 1.0}
  with pytest.raises(ValueError, match='not both'):
    zeroshot.ZeroShot(_Task(), media='image', text='image_text')
  with pytest.raises(ValueError, match='does not embed'):
    zeroshot.ZeroShot(_Task(), media='audio', text='image_text',
                      class_names=('a',))


def test_evaluators_are_built_from_config_entries_with_clear_errors():
  from multimodal import evaluators  # pylint: disable=g-import-not-at-top
  built = evaluators.build(
      {'r': {'type': 'retrieval', 'ks': (1, 2)}}, _Task())
  emb = np.eye(3)
  metrics = evaluators.run(built, {'embedding/image': emb,
                                   'embedding/image_text': emb}, None, 'val')
  assert metrics['val/retrieval/image->image_text@1'] == 1.0
  with pytest.raises(ValueError, match='needs a `type`'):
    evaluators.build({'r': {'ks': (1,)}}, _Task())
  with pytest.raises(ValueError, match=r'config.evals.r .*unexpected'):
    evaluators.build({'r': {'type': 'retrieval', 'k': 1}}, _Task())
  with pytest.raises(KeyError, match='Unknown evaluator'):
    evaluators.build({'r': {'type': 'nope'}}, _Task())
