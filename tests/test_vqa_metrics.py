"""VQA answer processing and scores: hand cases of each quirk of the
official script, the default against a port of the official loop on
generated questions, and the named variants."""
import random
import re
import types

import ml_collections as mlc
import pytest

from multimodal.evaluators import vqa
from multimodal.evaluators import vqa_answers


@pytest.mark.parametrize('raw,normalized', [
    ('Two dogs!', '2 dogs'),
    ('The cat.', 'cat'),
    ('  An apple\n', 'apple'),
    ('none', '0'),
    ('1,000', '1000'),  # a digit,digit comma: every mark deleted
    ('3.5', '3.5'),  # a period before a digit stays
    ('3.', '3'),
    ('dont', "don't"),
    ("don't", "don't"),
    ('Im', 'im'),  # the official table's capitalised keys never match
    ('yes , sir', 'yes sir'),  # a mark next to a space is deleted ...
    ('red/white', 'red white'),  # ... otherwise it becomes a space
    ('a b-c', 'b c'),
    ('What is on the table?', 'what is on table'),
    ('ten', '10'),
    ('yes' + '.' * 32, 'yes'),  # at most 32 periods are removed ...
    ('yes' + '.' * 33, 'yes.'),  # ... the 33rd stays
    ('a\tb\nc', 'b c'),
])
def test_normalize_answer(raw, normalized):
  assert vqa.normalize_answer(raw) == normalized


def test_processing_steps():
  assert vqa_answers.clean_whitespace('\tYes\n ') == 'Yes'
  # Punctuation only: case, spaces and number words stay.
  assert vqa_answers.strip_punctuation('Two (2)!') == 'Two 2  '
  assert vqa_answers.strip_punctuation('Yes.') == 'Yes'
  assert vqa_answers.strip_punctuation('.' * 40) == '.' * 8
  assert vqa_answers.digits_articles(' The Two  dont ') == "2 don't"


OFFICIAL_HAND_CASES = [
    # (prediction, references, official 2016-2021 score)
    # Ten identical references are compared raw: no lower-casing, no number
    # words, no punctuation stripping ...
    ('yes.', ['Yes'] * 10, 0.0),
    ('Yes', ['yes'] * 10, 1.0),
    ('two', ['two'] * 10, 0.0),  # the prediction becomes '2'
    ('2', ['two'] * 10, 0.0),
    ('t-shirt', ['t-shirt'] * 10, 0.0),  # the prediction becomes 't shirt'
    ('yes!', ['yes!'] * 10, 0.0),
    (' yes\t', ['yes'] * 10, 1.0),  # the prediction is stripped
    # ... and differing references only lose their punctuation.
    ('yes', ['Yes'] * 9 + ['no'], 0.0),  # not lower-cased
    ('yes', ['yes.'] * 3 + ['no'] * 7, 0.9),
    ('yes', ['yes!'] * 3 + ['no'] * 7, 0.0),  # '!' becomes a space: 'yes '
    ('yes', [' yes'] * 3 + ['no'] * 7, 0.0),  # not stripped
    ('two', ['two'] * 9 + ['2'], 0.3),  # number words stay in references
    ('two', ['2'] * 2 + ['(2)'] + ['3'] * 7, 0.6),  # '(2)' -> ' 2 '
    ('1,000', ['1000'] * 2 + ['1,000'] + ['3'] * 7, 0.9),
    # At most 32 periods go, from the prediction and from references.
    ('yes' + '.' * 32, ['yes'] * 10, 1.0),
    ('yes' + '.' * 33, ['yes'] * 10, 0.0),
    ('yes', ['yes' + '.' * 33] * 4 + ['no'] * 6, 0.0),
    ('yes' + '.' * 33, ['yes' + '.' * 33] * 4 + ['no'] * 6, 1.0),
    # The leave-one-out mean, for any number of references.
    ('yes', ['yes'] * 3 + ['no'] * 7, 0.9),
    ('yes', ['yes'] * 4 + ['no'] * 6, 1.0),
    ('yes', ['yes'] * 1 + ['no'] * 9, 0.3),
    ('yes', ['yes'], 0.0),
    ('dog', ['dog', 'cat'], 1 / 6),
    ('dog', ['dog', 'dog'], 1 / 3),
    ('dog', ['dog'] * 3, 2 / 3),
    ('dog', ['dog'] * 5, 1.0),
    ('dog', ['dog'] * 3 + ['cat'] * 2, (3 * 2 / 3 + 2 * 1) / 5),
]


@pytest.mark.parametrize('prediction,references,score', OFFICIAL_HAND_CASES)
def test_official_hand_cases(prediction, references, score):
  assert vqa.vqa_accuracy(prediction, references) == pytest.approx(score)
  assert vqa.vqa_accuracy(prediction, references,
                          metric='vqa_acc') == pytest.approx(score)


@pytest.mark.parametrize('prediction,references,score', [
    # Identical references: the prediction is only whitespace-cleaned.
    ('two', ['two'] * 10, 1.0),
    ('Yes', ['yes'] * 10, 0.0),
    ('yes.', ['yes'] * 10, 0.0),
    (' yes\n', ['yes '] * 10, 1.0),  # references are stripped too
    # Differing references: both sides fully normalised.
    ('yes', ['Yes'] * 9 + ['no'], 1.0),
    ('two', ['two'] * 9 + ['2'], 1.0),
    ('Yes!', ['yes!'] * 3 + ['no'] * 7, 0.9),
    ('yes', ['yes'], 0.0),
    ('dog', ['dog', 'cat'], 1 / 6),
])
def test_official_2021_hand_cases(prediction, references, score):
  assert vqa.vqa_accuracy(prediction, references,
                          metric='vqa_acc_2021') == pytest.approx(score)


def test_normalized_references_variant():
  def score(p, r):
    return vqa.vqa_accuracy(p, r, metric='vqa_acc_normalized_refs')
  assert score('yes.', ['Yes'] * 10) == 1.0
  assert score('two', ['two'] * 10) == 1.0
  assert score('2', ['two', '2', 'Two.'] + ['3'] * 7) == pytest.approx(0.9)
  assert score('dog', ['The dog!', 'cat']) == pytest.approx(1 / 6)
  assert score('dog', ['dog']) == 0.0  # still leave-one-out


def test_exact_match_variant():
  def score(p, r):
    return vqa.vqa_accuracy(p, r, metric='exact_match')
  assert score('The dog', ['dog']) == 1.0
  assert score('dog', ['cat', 'a dog', 'cow']) == 1.0
  assert score('Seven', ['7']) == 1.0
  assert score('dog', ['cat', 'cow']) == 0.0
  assert score('yes', ['yes'] + ['no'] * 9) == 1.0  # one match suffices


def test_bad_arguments_are_clear_errors():
  with pytest.raises(ValueError, match='non-empty list'):
    vqa.vqa_accuracy('dog', [])
  with pytest.raises(ValueError, match='non-empty list'):
    vqa.vqa_accuracy('dog', 'dog')
  with pytest.raises(ValueError, match="'exact_match'"):
    vqa.vqa_accuracy('dog', ['dog'], metric='exact')


def test_mean_accuracy():
  preds = ['yes', 'two', 'blue']
  refs = [['yes'] * 10, ['2'] * 2 + ['3'] * 8, ['red']]
  assert vqa.mean_vqa_accuracy(preds, refs) == pytest.approx(
      (1.0 + 0.6 + 0.0) / 3)
  assert vqa.mean_vqa_accuracy(preds, refs, metric='exact_match') == (
      pytest.approx(2 / 3))


# A port of the official loop, written from its published definition
# (vqaEval.py of GT-Vision-Lab/VQA: VQAEval.evaluate, processPunctuation,
# processDigitArticle) for one question, with the script's own data layout:
# answer records with an answer_id, edited in place. Only the word tables
# are shared with the code under test.

_COMMA_STRIP = re.compile(r'(\d)(\,)(\d)')
_PERIOD_STRIP = re.compile(r'(?!<=\d)(\.)(?!\d)')  # the script's pattern


def _port_punctuation(in_text):
  out_text = in_text
  for p in vqa_answers._PUNCT:  # pylint: disable=protected-access
    if (p + ' ' in in_text or ' ' + p in in_text
        or re.search(_COMMA_STRIP, in_text) is not None):
      out_text = out_text.replace(p, '')
    else:
      out_text = out_text.replace(p, ' ')
  # The script passes re.UNICODE where sub() takes its count.
  return _PERIOD_STRIP.sub('', out_text, count=re.UNICODE)


def _port_digit_article(in_text):
  numbers = vqa_answers._NUMBERS  # pylint: disable=protected-access
  words = []
  for word in in_text.lower().split():
    word = numbers.get(word, word)
    if word not in ('a', 'an', 'the'):
      words.append(word)
  table = vqa_answers._CONTRACTIONS  # pylint: disable=protected-access
  for i, word in enumerate(words):
    if word in table:
      words[i] = table[word]
  return ' '.join(words)


def _port_whitespace(text):
  return text.replace('\n', ' ').replace('\t', ' ').strip()


def _official_port(prediction, references, version):
  """One question's accuracy as VQAEval.evaluate computes it; version 2016
  (commit 458a8b2) or 2021 (commit a013f00)."""
  answers = [{'answer': r, 'answer_confidence': 'yes', 'answer_id': i + 1}
             for i, r in enumerate(references)]
  res_ans = _port_whitespace(prediction)
  if version == 2016:
    res_ans = _port_digit_article(_port_punctuation(res_ans))
  else:
    for record in answers:
      record['answer'] = _port_whitespace(record['answer'])
  if len({record['answer'] for record in answers}) > 1:
    for record in answers:
      record['answer'] = _port_punctuation(record['answer'])
      if version == 2021:
        record['answer'] = _port_digit_article(record['answer'])
    if version == 2021:
      res_ans = _port_digit_article(_port_punctuation(res_ans))
  accs = []
  for left_out in answers:
    others = [record for record in answers if record != left_out]
    matching = [record for record in others if record['answer'] == res_ans]
    accs.append(min(1, float(len(matching)) / 3))
  return float(sum(accs)) / len(accs)


_BASES = ['yes', 'no', '2', 'two', 'ten', '10', 'none', '0', 'red',
          't-shirt', 'dog', 'the dog', 'a cat', 'fire hydrant', '1,000',
          '3.5', "don't know", 'dont know', 'ham/cheese', 'left', 'new york',
          'black and white', 'its', 'frisbee', '(2)', 'u.s.a.']


def _noisy(rng, text):
  """`text` with some of: case, punctuation, articles, number words,
  periods (some runs past 32), whitespace."""
  words = {'2': 'two', 'two': '2', '10': 'ten', 'ten': '10', '0': 'zero'}
  if rng.random() < 0.2:
    text = words.get(text, text)
  if rng.random() < 0.3:
    text = rng.choice([text.upper(), text.capitalize(), text.title()])
  if rng.random() < 0.3:
    text = rng.choice(['the ', 'a ', 'an ', 'The ']) + text
  if rng.random() < 0.35:
    text += rng.choice(['.', '!', '?', ' .', ',', '...', ' !', '-',
                        '.' * rng.randint(30, 36)])
  if rng.random() < 0.1:
    text = rng.choice(['(', '"', '-', ' ', '\t']) + text
  if rng.random() < 0.1:
    text = text.replace(' ', rng.choice(['-', '_', '  ', '\n', ', ']))
  if rng.random() < 0.1:
    text += rng.choice([' ', '\n', '\t'])
  return text


def _question(rng, num_refs):
  """(prediction, references): a third of them with all references equal."""
  if rng.random() < 0.3:
    refs = [_noisy(rng, rng.choice(_BASES))] * num_refs
  else:
    pool = rng.sample(_BASES, rng.randint(1, 3))
    refs = [rng.choice(pool) for _ in range(num_refs)]
    refs = [_noisy(rng, r) if rng.random() < 0.4 else r for r in refs]
  source = rng.choice(refs) if rng.random() < 0.7 else rng.choice(_BASES)
  prediction = _noisy(rng, source) if rng.random() < 0.6 else source
  return prediction, refs


@pytest.mark.parametrize('metric,version', [('vqa_acc', 2016),
                                            ('vqa_acc_2021', 2021)])
def test_matches_a_port_of_the_official_loop(metric, version):
  rng = random.Random(16)
  questions = [_question(rng, 10) for _ in range(400)]
  questions += [_question(rng, rng.randint(1, 12)) for _ in range(200)]
  ours = [vqa.vqa_accuracy(p, r, metric=metric) for p, r in questions]
  port = [_official_port(p, r, version) for p, r in questions]
  for (p, r), a, b in zip(questions, ours, port):
    assert a == b, (p, r, a, b)  # bit-identical, not just close
  # The generated set exercises what it is meant to: every score level of
  # ten references, equal references, long period runs, and the cases where
  # the definitions disagree.
  ten = ours[:400]
  assert {0.0, 1.0} <= set(ten) and len(set(ten)) >= 6
  assert sum(len(set(r)) == 1 for _, r in questions) >= 100
  assert sum('.' * 33 in p for p, _ in questions) >= 5
  friendly = [vqa.vqa_accuracy(p, r, metric='vqa_acc_normalized_refs')
              for p, r in questions]
  differ = sum(a != b for a, b in zip(ours, friendly))
  assert differ >= 30, differ  # 235 for vqa_acc, 48 for vqa_acc_2021


def test_the_two_official_versions_differ_on_generated_questions():
  rng = random.Random(2021)
  questions = [_question(rng, 10) for _ in range(300)]
  old = [vqa.vqa_accuracy(p, r) for p, r in questions]
  new = [vqa.vqa_accuracy(p, r, metric='vqa_acc_2021') for p, r in questions]
  assert sum(a != b for a, b in zip(old, new)) >= 30


def _task(max_references):
  config = mlc.ConfigDict({'input': {'max_references': max_references}})
  return types.SimpleNamespace(config=config, conditions=('full', 'masked'))


def test_evaluator_names_its_metric():
  outputs = {'answer/full': ['yes', 'two'], 'answer/masked': ['no', '3'],
             'references': [['yes'] * 10, ['two'] * 10],
             'question_type': ['match', 'sum']}
  metrics = vqa.Vqa(_task(10))(outputs, None)
  assert metrics['vqa_acc/full/all'] == 0.5  # 'two' -> '2' != 'two'
  assert metrics['vqa_acc/masked/all'] == 0.0
  assert metrics['vqa_count/sum'] == 1
  assert not any(k.startswith('exact_match') for k in metrics)
  metrics = vqa.Vqa(_task(10), metric=('vqa_acc', 'exact_match',
                                       'vqa_acc_normalized_refs'))(
                                           outputs, None)
  assert metrics['vqa_acc/full/sum'] == 0.0
  assert metrics['exact_match/full/sum'] == 1.0
  assert metrics['vqa_acc_normalized_refs/full/all'] == 1.0


def test_evaluator_refuses_leave_one_out_on_single_references():
  with pytest.raises(ValueError, match="max_references=1.*'exact_match'"):
    vqa.Vqa(_task(1))
  with pytest.raises(ValueError, match='max_references=1'):
    vqa.Vqa(_task(1), metric=('exact_match', 'vqa_acc_2021'))
  vqa.Vqa(_task(1), metric='exact_match')
  with pytest.raises(ValueError, match='Unknown VQA metric'):
    vqa.Vqa(_task(10), metric='accuracy')
  with pytest.raises(ValueError, match='each once'):
    vqa.Vqa(_task(10), metric=('vqa_acc', 'vqa_acc'))
