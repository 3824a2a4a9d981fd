"""VQA accuracy with the official VQA answer normalisation.

Follows the official evaluation script (GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py, Python 3 version):

  normalisation  newlines/tabs to spaces, strip; punctuation: each mark in
                 _PUNCT is deleted if it touches a space somewhere in the
                 answer (or the answer has a digit,digit comma), else turned
                 into a space; periods not followed by a digit are deleted;
                 lower-case; number words zero..ten (and 'none') to digits;
                 articles a/an/the dropped; apostrophe-less contractions
                 restored ('dont' -> "don't").
  accuracy       with 10 reference answers: the mean, over the 10 ways to
                 leave one reference out, of min(1, #matches among the other
                 9 / 3); so 1, 2, 3 or 4+ matching references score 0.3,
                 0.6, 0.9 or 1. With any other number of references: exact
                 match with any of them.

Scores are fractions in [0, 1]; the official script reports x100.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from multimodal import evaluators
from multimodal import registry

_PUNCT = (';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_',
          '-', '>', '<', '@', '`', ',', '?', '!')
_DIGIT_COMMA = re.compile(r'(\d)(,)(\d)')
# The official pattern is '(?!<=\d)(\.)(?!\d)'; its first group is a
# lookahead that can never match before a '.', so this is its effect.
_PERIOD = re.compile(r'\.(?!\d)')
_NUMBERS = {'none': '0', 'zero': '0', 'one': '1', 'two': '2', 'three': '3',
            'four': '4', 'five': '5', 'six': '6', 'seven': '7', 'eight': '8',
            'nine': '9', 'ten': '10'}
_ARTICLES = frozenset(('a', 'an', 'the'))
# The official table, verbatim: its capitalised keys ("Im", "Ive", ...) can
# never match after lower-casing, and "somebody'd" maps to "somebodyd".
_CONTRACTIONS = {
    'aint': "ain't", 'arent': "aren't", 'cant': "can't",
    'couldve': "could've", 'couldnt': "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    'didnt': "didn't", 'doesnt': "doesn't", 'dont': "don't",
    'hadnt': "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    'hasnt': "hasn't", 'havent': "haven't", 'hed': "he'd",
    "hed've": "he'd've", "he'dve": "he'd've", 'hes': "he's",
    'howd': "how'd", 'howll': "how'll", 'hows': "how's",
    "Id've": "I'd've", "I'dve": "I'd've", 'Im': "I'm", 'Ive': "I've",
    'isnt': "isn't", 'itd': "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", 'itll': "it'll", "let's": "let's",
    'maam': "ma'am", 'mightnt': "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", 'mightve': "might've",
    'mustnt': "mustn't", 'mustve': "must've", 'neednt': "needn't",
    'notve': "not've", 'oclock': "o'clock", 'oughtnt': "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    'shant': "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", 'shouldve': "should've", 'shouldnt': "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": 'somebodyd', "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", 'somebodyll': "somebody'll",
    'somebodys': "somebody's", 'someoned': "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've",
    'someonell': "someone'll", 'someones': "someone's",
    'somethingd': "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", 'somethingll': "something'll",
    'thats': "that's", 'thered': "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", 'therere': "there're", 'theres': "there's",
    'theyd': "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    'theyll': "they'll", 'theyre': "they're", 'theyve': "they've",
    'twas': "'twas", 'wasnt': "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", 'weve': "we've", 'werent': "weren't",
    'whatll': "what'll", 'whatre': "what're", 'whats': "what's",
    'whatve': "what've", 'whens': "when's", 'whered': "where'd",
    'wheres': "where's", 'whereve': "where've", 'whod': "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", 'wholl': "who'll",
    'whos': "who's", 'whove': "who've", 'whyll': "why'll",
    'whyre': "why're", 'whys': "why's", 'wont': "won't",
    'wouldve': "would've", 'wouldnt': "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    'yall': "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", 'youd': "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", 'youll': "you'll", 'youre': "you're",
    'youve': "you've"}


def strip_punctuation(text: str) -> str:
  """The official script's punctuation step alone (processPunctuation)."""
  out = text
  # Whether a mark is deleted or spaced out depends on the input text as a
  # whole, not on the text left by earlier marks.
  delete = _DIGIT_COMMA.search(text) is not None
  for mark in _PUNCT:
    if delete or f'{mark} ' in text or f' {mark}' in text:
      out = out.replace(mark, '')
    else:
      out = out.replace(mark, ' ')
  return _PERIOD.sub('', out)


def normalize_answer(text: str) -> str:
  """The official answer normalisation ('Two dogs!' -> '2 dogs')."""
  text = strip_punctuation(text.replace('\n', ' ').replace('\t', ' ').strip())
  words = [_NUMBERS.get(w, w) for w in text.lower().split()]
  return ' '.join(_CONTRACTIONS.get(w, w) for w in words
                  if w not in _ARTICLES)


def vqa_accuracy(prediction: str, references: Sequence[str], *,
                 official_references: bool = False) -> float:
  """Accuracy of one answer against its references (see module docstring).

  Args:
    prediction: the model's answer, raw.
    references: the human answers (10 in VQAv2), raw.
    official_references: treat references as the official script does:
      strip their punctuation only, and only when they are not all equal
      (VQA's released answers are already normalised). By default they are
      normalised like the prediction; the two agree on any reference that
      is already normalised.

  Returns:
    A float in [0, 1].
  """
  if not references:
    raise ValueError('Need at least one reference answer.')
  answer = normalize_answer(prediction)
  if official_references:
    refs = (list(references) if len(set(references)) == 1
            else [strip_punctuation(r) for r in references])
  else:
    refs = [normalize_answer(r) for r in references]
  matches = [r == answer for r in refs]
  if len(refs) != 10:
    return float(any(matches))
  total = sum(matches)
  # Leaving out reference i leaves total - matches[i] matching others.
  return sum(min(1.0, (total - m) / 3) for m in matches) / 10


def mean_vqa_accuracy(predictions: Sequence[str],
                      references: Sequence[Sequence[str]], *,
                      official_references: bool = False) -> float:
  """Mean of `vqa_accuracy` over questions."""
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f'Need matching, non-empty lists; got '
                     f'{len(predictions)} and {len(references)}.')
  return sum(vqa_accuracy(p, r, official_references=official_references)
             for p, r in zip(predictions, references)) / len(predictions)


ALL = 'all'


def accuracy_by_type(predictions: Sequence[str],
                     references: Sequence[Sequence[str]],
                     types: Sequence[str] | None) -> dict[str, float]:
  """Mean VQA accuracy overall ('all') and per question type.

  Args:
    predictions: one raw answer per question.
    references: per question, its reference answers (>= 1).
    types: per question, its type (e.g. 'sum'); must not be 'all'. None:
      no types, just the overall mean.

  Returns:
    {'all': mean over every question, type: mean over that type's}.
  """
  if len(predictions) != len(references) or (
      types is not None and len(types) != len(predictions)):
    raise ValueError(f'Need one reference list (and type) per prediction; '
                     f'got {len(predictions)} predictions, '
                     f'{len(references)} reference lists and '
                     f'{"no" if types is None else len(types)} types.')
  if types is not None and ALL in types:
    raise ValueError(f'{ALL!r} is reserved for the overall mean; rename that '
                     'question type.')
  scores = np.array([vqa_accuracy(p, r)
                     for p, r in zip(predictions, references)])
  out = {ALL: float(scores.mean())}
  if types is not None:
    types = np.asarray(types)
    for t in sorted(set(types.tolist())):
      out[t] = float(scores[types == t].mean())
  return out


@registry.register('evaluator', 'vqa')
class Vqa(evaluators.Evaluator):
  """VQA accuracy (`vqa_accuracy`) of the answers under each condition of
  the VQA task, overall and per question type:
    vqa/<condition>/<type>   mean accuracy; <type> 'all' is every question
    vqa_count/<type>         number of questions of that type

  Args (config.evals entry): conditions (default every condition of the
  task: 'full', 'masked_<m>').
  """

  def __init__(self, task, conditions=None):
    self.conditions = tuple(conditions or task.conditions)
    unknown = [c for c in self.conditions if c not in task.conditions]
    if unknown:
      raise ValueError(f'vqa evaluator names conditions {unknown}; the task '
                       f'has {list(task.conditions)}.')

  def __call__(self, outputs, ctx):
    del ctx
    types = outputs.get('question_type')
    metrics = {}
    for c in self.conditions:
      for t, acc in accuracy_by_type(outputs[f'answer/{c}'],
                                     outputs['references'], types).items():
        metrics[f'vqa/{c}/{t}'] = acc
    for t in sorted(set(types or ())):
      metrics[f'vqa_count/{t}'] = types.count(t)
    return metrics
