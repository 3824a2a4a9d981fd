"""Tests for caption metrics: tokenisation, BLEU, CIDEr-D, exact match, WER."""
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from multimodal.evaluators import captioning

PREDICTIONS = ['A man rides a horse on the beach.',
               "Two dogs play with a ball in the park",
               'A plate of food, on a wooden table!']
REFERENCES = [
    ['A man riding a horse along the beach.', 'A person on a horse.',
     "The man's horse walks by the sea."],
    ['Two dogs playing with a ball.', 'Dogs chase a ball in a park.'],
    'A plate of food sits on a table.',
]
# REFERENCES / PREDICTIONS tokenised by hand, as pycocoevalcap wants them.
GTS = {0: ['a man riding a horse along the beach', 'a person on a horse',
           "the man 's horse walks by the sea"],
       1: ['two dogs playing with a ball', 'dogs chase a ball in a park'],
       2: ['a plate of food sits on a table']}
RES = {0: ['a man rides a horse on the beach'],
       1: ['two dogs play with a ball in the park'],
       2: ['a plate of food on a wooden table']}


@pytest.mark.parametrize('text,tokens', [
    ("A dog's toy.", ['a', 'dog', "'s", 'toy']),
    ('Hello, WORLD!!', ['hello', 'world']),
    ("'quoted' well-known 42", ['quoted', 'well', 'known', '42']),
    ('', []),
])
def test_tokenize(text, tokens):
  assert captioning.tokenize(text) == tokens


def test_bleu_and_cider_agree_with_pycocoevalcap():
  bleu_scores, _ = Bleu(4).compute_score(GTS, RES, verbose=0)
  cider, _ = Cider().compute_score(GTS, RES)
  for n in (1, 2, 3, 4):
    assert captioning.bleu(PREDICTIONS, REFERENCES, max_order=n) == (
        pytest.approx(bleu_scores[n - 1], rel=1e-12))
  assert captioning.cider_d(PREDICTIONS, REFERENCES) == pytest.approx(
      cider, rel=1e-12)
  scores = captioning.caption_scores(PREDICTIONS, REFERENCES)
  assert scores == {'bleu4': pytest.approx(bleu_scores[3]),
                    'cider': pytest.approx(cider)}
  assert 0 < scores['bleu4'] < 1 and 0 < scores['cider'] < 10


def test_bleu_and_cider_hand_cases():
  # p1 = 5/6, p2 = 3/5, equal lengths: BLEU-2 = sqrt(1/2).
  assert captioning.bleu(['The cat sat on the mat.'],
                         [['the cat is on the mat']], max_order=2) == (
                             pytest.approx(0.5 ** 0.5, rel=1e-6))
  perfect = ['a red car parked outside', 'two dogs play fetch happily']
  assert captioning.bleu(perfect, perfect) == pytest.approx(1.0)
  # No n-gram is shared across images, so every one has IDF log(2) and a
  # prediction equal to its reference has cosine 1 at each order: 10.
  assert captioning.cider_d(perfect, perfect) == pytest.approx(10.0)
  assert captioning.cider_d(perfect, perfect[::-1]) == pytest.approx(0.0)


def test_exact_match():
  assert captioning.exact_match(
      ['A dog.', 'a cat', 'the bird'],
      [['a DOG', 'a puppy'], 'a cat!', ['a bird']]) == pytest.approx(2 / 3)
  with pytest.raises(ValueError):
    captioning.exact_match(['a'], [])


@pytest.mark.parametrize('hyp,ref,distance', [
    ('', '', 0), ('abc', '', 3), ('', 'ab', 2), ('abc', 'abc', 0),
    ('abc', 'abd', 1), ('kitten', 'sitting', 3), ('flaw', 'lawn', 2),
    ('ab', 'ba', 2),
])
def test_edit_distance(hyp, ref, distance):
  assert captioning.edit_distance(hyp, ref) == distance
  assert captioning.edit_distance(ref, hyp) == distance


def test_word_error_rate():
  # 1 deletion (of "down") + 1 deletion ("there") over 4 + 3 words.
  assert captioning.word_error_rate(
      ['the cat sat', 'Hello world'],
      ['The cat sat down.', 'hello there world']) == pytest.approx(2 / 7)
  # One substitution and one insertion over 2 words.
  assert captioning.word_error_rate(['a b c'], ['a x']) == pytest.approx(1.0)
  assert captioning.word_error_rate([''], ['one two']) == pytest.approx(1.0)
  assert captioning.word_error_rate(['same'], ['Same!']) == 0.0
  assert captioning.word_error_rate([''], ['']) == 0.0
