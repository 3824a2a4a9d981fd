"""The official VQA answer processing, step by step.

From the VQA evaluation script (github.com/GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py; the tables are unchanged
from commit 458a8b268b1a239dc388e0af4423f3fe7477b04f, 2016, through the
2021 master a013f0043c1e2cdc995922dfe257f7149aa9af06), as it behaves under
Python 3 (the file is Python 2; there `\\d` matched only ASCII digits, so
answers holding other Unicode digits may differ):

  clean_whitespace   newlines and tabs to spaces, then strip.
  strip_punctuation  (processPunctuation) each mark in _PUNCT is deleted if
                     it touches a space somewhere in the text (or the text
                     has a digit,digit comma), else turned into a space;
                     then periods not followed by a digit are deleted, at
                     most 32 of them (see _PERIOD_COUNT).
  digits_articles    (processDigitArticle) lower-case, split on
                     whitespace, number words zero..ten (and 'none') to
                     digits, articles a/an/the dropped, apostrophe-less
                     contractions restored ('dont' -> "don't"), joined by
                     single spaces.
  normalize_answer   all three, in that order: what the script does to a
                     predicted answer ('Two dogs!' -> '2 dogs').

Which of these the references get differs between versions of the script;
multimodal/evaluators/vqa.py composes them into the scores.
"""
from __future__ import annotations

import re

_PUNCT = (';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_',
          '-', '>', '<', '@', '`', ',', '?', '!')
_DIGIT_COMMA = re.compile(r'(\d)(,)(\d)')
# The official pattern is '(?!<=\d)(\.)(?!\d)'; its first group is a
# lookahead that can never match before a '.', so this is its effect.
_PERIOD = re.compile(r'\.(?!\d)')
# The official call is periodStrip.sub("", text, re.UNICODE): the flag lands
# in the `count` argument, so at most int(re.UNICODE) = 32 periods go.
_PERIOD_COUNT = int(re.UNICODE)
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


def clean_whitespace(text: str) -> str:
  """Newlines and tabs to spaces, then leading/trailing whitespace off."""
  return text.replace('\n', ' ').replace('\t', ' ').strip()


def strip_punctuation(text: str) -> str:
  """The official punctuation step alone (processPunctuation); case,
  spacing and words are left as they are ('Yes!' -> 'Yes ')."""
  out = text
  # Whether a mark is deleted or spaced out depends on the input text as a
  # whole, not on the text left by earlier marks.
  delete = _DIGIT_COMMA.search(text) is not None
  for mark in _PUNCT:
    if delete or f'{mark} ' in text or f' {mark}' in text:
      out = out.replace(mark, '')
    else:
      out = out.replace(mark, ' ')
  return _PERIOD.sub('', out, count=_PERIOD_COUNT)


def digits_articles(text: str) -> str:
  """The official word step alone (processDigitArticle): 'The Two dont'
  -> "2 don't"."""
  words = [_NUMBERS.get(w, w) for w in text.lower().split()]
  return ' '.join(_CONTRACTIONS.get(w, w) for w in words
                  if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
  """What the official script does to a predicted answer ('Two dogs!' ->
  '2 dogs'): clean_whitespace, strip_punctuation, digits_articles."""
  return digits_articles(strip_punctuation(clean_whitespace(text)))
