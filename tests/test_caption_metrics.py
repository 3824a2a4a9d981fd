"""Tests for caption metrics: tokenisation, BLEU, CIDEr-D, exact match, WER."""
import math
import shutil
import types

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

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


def test_bleu_has_no_smoothing():
  # Two words: no 3- or 4-gram to match, only the scorer's epsilons.
  score = captioning.bleu(['a dog'], [['a dog runs']])
  assert 0 < score < 1e-3
  # p1 = p2 = 1; brevity penalty exp(1 - 3/2).
  assert captioning.bleu(['a dog'], [['a dog runs']], max_order=2) == (
      pytest.approx(math.exp(-0.5)))


def test_cider_is_at_most_ten():
  preds = ['a red car', 'two dogs play', 'a cat sleeps']
  refs = [['a red car', 'a red car parked'], ['two dogs play'],
          ['a cat sleeps on a sofa', 'a cat sleeps']]
  assert 0 < captioning.cider_d(preds, refs) < 10


@pytest.mark.parametrize('text,words', [
    ("Don't stop-go!", ["don't", 'stop', 'go']),
    ("JOHN'S 'quoted' rock'n'roll", ["john's", 'quoted', "rock'n'roll"]),
    ('', []),
])
def test_words(text, words):
  assert captioning.words(text) == words


def test_word_error_rate_counts_words_not_clitics():
  # "don't" is one word: one substitution over two words (tokenize would
  # count 'don' + "'t", three tokens, two errors).
  assert captioning.word_error_rate(['dont stop'], ["Don't stop."]) == 0.5
  assert captioning.word_error_rate(["john's dog"], ['JOHN\'S DOG']) == 0.0


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


needs_java = pytest.mark.skipif(shutil.which('java') is None,
                                reason="coco-caption's PTB tokenizer needs java")


@needs_java
def test_ptb_tokenizer_is_coco_captions():
  texts = ["A man's well-known dog, don't you think?", 'Two (2) cats: $2.50',
           '', 'a/b 1,000']
  assert captioning.ptb_tokenize(texts) == [
      "a man 's well-known dog do n't you think",
      'two -lrb- 2 -rrb- cats $ 2.50', '', 'a/b 1,000']
  # ... where the built-in tokenizer splits differently.
  assert captioning.tokenize(texts[0]) == [
      'a', 'man', "'s", 'well', 'known', 'dog', 'don', "'t", 'you', 'think']


@needs_java
def test_ptb_scores_are_coco_captions_pipeline():
  """tokenizer='ptb' equals coco-caption's own pipeline: PTBTokenizer on
  {id: [{'caption': ...}]}, then the scorers."""
  preds = PREDICTIONS + ['A well-known (2) dog, $5']
  refs = REFERENCES + [['a well-known dog', 'two dogs, $5 each']]
  gts = PTBTokenizer().tokenize(
      {i: [{'caption': r} for r in captioning._as_lists(refs)[i]]
       for i in range(len(refs))})
  res = PTBTokenizer().tokenize({i: [{'caption': p}]
                                 for i, p in enumerate(preds)})
  bleu4, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, _ = Cider().compute_score(gts, res)
  scores = captioning.caption_scores(preds, refs, 'ptb')
  assert scores == {'bleu4': pytest.approx(bleu4[3], rel=1e-12),
                    'cider': pytest.approx(cider, rel=1e-12)}
  assert captioning.cider_d(preds, refs, tokenizer='ptb') == scores['cider']
  # The built-in tokenizer gives other numbers on these texts.
  assert captioning.caption_scores(preds, refs)['cider'] != pytest.approx(
      cider, rel=1e-3)


@needs_java
def test_evaluator_reports_ptb_scores_by_name():
  task = types.SimpleNamespace(media=('image',))
  outputs = {'prediction/image': PREDICTIONS,
             'references/image': REFERENCES}
  plain = captioning.Caption(task)(outputs, None)
  assert sorted(plain) == ['caption/image/bleu4', 'caption/image/cider',
                           'caption/image/exact_match']
  both = captioning.Caption(task, ptb=True)(outputs, None)
  assert set(both) == set(plain) | {'caption/image/bleu4_ptb',
                                    'caption/image/cider_ptb'}
  assert both['caption/image/cider_ptb'] == pytest.approx(
      captioning.cider_d(PREDICTIONS, REFERENCES, tokenizer='ptb'))


def test_ptb_without_java_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(captioning.shutil, 'which', lambda name: None)
  task = types.SimpleNamespace(media=('image',))
  with pytest.raises(ValueError, match='needs Java.*default-jre-headless'):
    captioning.Caption(task, ptb=True)
  with pytest.raises(ValueError, match='needs Java'):
    captioning.bleu(['a'], ['a'], tokenizer='ptb')
  with pytest.raises(ValueError, match="Unknown caption tokenizer 'nltk'"):
    captioning.cider_d(['a'], ['a'], tokenizer='nltk')
