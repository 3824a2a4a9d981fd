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
