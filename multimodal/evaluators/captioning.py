"""Caption and transcript metrics: BLEU, CIDEr-D, exact match, WER.

What is reported (caption/<media>/<name>, see `Caption`):

  bleu4  corpus BLEU-4 as coco-caption (pycocoevalcap 1.2, Bleu(4) with
         option 'closest') computes it: clipped n-gram matches and n-gram
         counts summed over the whole eval split, uniform geometric mean of
         the 1..4-gram precisions, brevity penalty exp(1 - r/c) when the
         total prediction length c is below r, the sum over examples of the
         reference length closest to the prediction's (ties: the shorter).
         No smoothing beyond the scorer's epsilons (1e-15 added to matches,
         1e-9 to counts): an order without any match makes BLEU ~0, not 0.
         In [0, 1].
  cider  CIDEr-D as coco-caption computes it (Cider(), n = 4, sigma = 6):
         per order 1..4, the cosine of TF-IDF n-gram vectors with the
         prediction's weights clipped at the reference's, times a Gaussian
         penalty exp(-d^2 / 72) on the length difference d; averaged over
         orders and over the example's references, x10, then the mean over
         examples. IDF = log(#examples) - log(#examples whose references
         hold the n-gram, at least 1), from the references being scored
         (so a single example scores 0), one "document" per example.
         Lengths d are counted in bigrams, the scorer's quirk: the
         word-count difference except when a text has no words. In
         [0, 10]; papers print both scores x100 (a cider of 1.2 here is
         their 120).
  exact_match  fraction of predictions whose `tokenize` tokens equal those
         of some reference (case and punctuation ignored).
  wer    word error rate against the first reference, on `words`.

How this differs from the official coco-caption numbers: those tokenise
every text with the Stanford PTB tokenizer (Java, -lowerCase) and drop
punctuation tokens. `tokenize` here (no Java) lower-cases, keeps runs of
letters and digits, splits clitics off ("'s") and drops everything else.
The two agree on plain words but differ on: numbers ("2.5", "1,000": one
PTB token, two here), hyphenated and slashed words ("well-known", "a/b":
one token there), "n't" (PTB "do n't", here "don 't"), symbols PTB keeps
("$", "%", "&", "#", "*") and brackets, which PTB keeps as the lower-cased
tokens "-lrb-", "-rsb-", ... (coco-caption's punctuation list holds only
the upper-case "-LRB-" etc.). The evaluator's `ptb=True` runs
coco-caption's own tokenizer (it needs `java`) and reports bleu4_ptb and
cider_ptb beside these: the official numbers for the same predictions and
references. In either case the references are those the task hands over
(the tokenizer's round trip of config.input.max_references texts per
example, see multimodal/tasks/captioning.py), and each example is its own
"image": examples are not grouped by image id.
"""
from __future__ import annotations

import re
import shutil
from typing import Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from multimodal import evaluators
from multimodal import registry

_TOKEN = re.compile(r"[^\W_]+|(?<=[^\W_])'[^\W_]+")
# A word: letters and digits, apostrophes inside it kept ("don't").
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
TOKENIZERS = ('simple', 'ptb')

References = Sequence[str | Sequence[str]]


def tokenize(text: str) -> list[str]:
  """Lower-cased word tokens, punctuation dropped ("A dog's toy." ->
  ['a', 'dog', "'s", 'toy'])."""
  return _TOKEN.findall(text.lower())


def words(text: str) -> list[str]:
  """Lower-cased words for WER: runs of letters and digits, apostrophes
  inside a word kept, everything else a separator ("Don't stop-go!" ->
  ["don't", 'stop', 'go'])."""
  return _WORD.findall(text.lower())


def check_java() -> None:
  """A clear error when coco-caption's PTB tokenizer cannot run."""
  if shutil.which('java') is None:
    raise ValueError(
        "tokenizer='ptb' (evaluator ptb=True) runs coco-caption's Stanford "
        'PTB tokenizer, which needs Java and no `java` is on the PATH: '
        'install a Java runtime (e.g. apt-get install default-jre-headless) '
        "or use the built-in tokenizer (tokenizer='simple', ptb=False).")


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
  """Each text as coco-caption tokenises it: pycocoevalcap's PTBTokenizer
  (Java, one call for all texts), tokens joined by spaces."""
  check_java()
  out = PTBTokenizer().tokenize(
      {0: [{'caption': t} for t in texts]}) if texts else {0: []}
  return out[0]


def _as_lists(references: References) -> list[list[str]]:
  return [[r] if isinstance(r, str) else list(r) for r in references]


def _coco_inputs(predictions: Sequence[str], references: References,
                 tokenizer: str = 'simple'):
  """pycocoevalcap's (gts, res): id -> list of space-joined token strings."""
  references = _as_lists(references)
  if len(predictions) != len(references):
    raise ValueError(f'{len(predictions)} predictions but '
                     f'{len(references)} reference lists.')
  if not predictions:
    raise ValueError('Need at least one prediction.')
  for i, refs in enumerate(references):
    if not refs:
      raise ValueError(f'Example {i} has no reference.')
  if tokenizer == 'simple':
    gts = {i: [' '.join(tokenize(r)) for r in refs]
           for i, refs in enumerate(references)}
    res = {i: [' '.join(tokenize(p))] for i, p in enumerate(predictions)}
    return gts, res
  if tokenizer != 'ptb':
    raise ValueError(f'Unknown caption tokenizer {tokenizer!r}; choose one '
                     f'of {TOKENIZERS}.')
  # One Java call for every text: predictions first, then the references.
  flat = ptb_tokenize(list(predictions) + [r for refs in references
                                           for r in refs])
  res = {i: [flat[i]] for i in range(len(predictions))}
  gts, start = {}, len(predictions)
  for i, refs in enumerate(references):
    gts[i] = flat[start:start + len(refs)]
    start += len(refs)
  return gts, res


def bleu(predictions: Sequence[str], references: References,
         max_order: int = 4, tokenizer: str = 'simple') -> float:
  """Corpus BLEU-`max_order` as coco-caption computes it (see the module
  docstring: summed counts, closest reference length, no smoothing).

  Args:
    predictions: one caption per example.
    references: per example, a caption or a list of captions (>= 1).
    max_order: largest n-gram order.
    tokenizer: 'simple' (`tokenize`) or 'ptb' (coco-caption's Java PTB
      tokenizer: the official numbers).
  """
  gts, res = _coco_inputs(predictions, references, tokenizer)
  scores, _ = Bleu(max_order).compute_score(gts, res, verbose=0)
  return float(scores[max_order - 1])


def cider_d(predictions: Sequence[str], references: References,
            tokenizer: str = 'simple') -> float:
  """Corpus CIDEr-D as coco-caption computes it (n-grams 1..4, Gaussian
  length penalty sigma = 6, clipped TF-IDF weights, IDF from these
  references, x10), the mean over examples; arguments as in `bleu`."""
  gts, res = _coco_inputs(predictions, references, tokenizer)
  score, _ = Cider().compute_score(gts, res)
  return float(score)


def caption_scores(predictions: Sequence[str], references: References,
                   tokenizer: str = 'simple') -> dict[str, float]:
  """{'bleu4': ..., 'cider': ...} for the corpus, texts tokenised once."""
  gts, res = _coco_inputs(predictions, references, tokenizer)
  bleu4, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, _ = Cider().compute_score(gts, res)
  return {'bleu4': float(bleu4[3]), 'cider': float(cider)}


def exact_match(predictions: Sequence[str], references: References) -> float:
  """Fraction of predictions whose tokens equal those of any reference."""
  references = _as_lists(references)
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f'Need matching, non-empty lists; got '
                     f'{len(predictions)} and {len(references)}.')
  hits = sum(tokenize(p) in [tokenize(r) for r in refs]
             for p, refs in zip(predictions, references))
  return hits / len(predictions)


def edit_distance(hypothesis: Sequence[str], reference: Sequence[str]) -> int:
  """Levenshtein distance: fewest substitutions, insertions and deletions
  turning `hypothesis` into `reference` (any sequences, e.g. words)."""
  previous = list(range(len(reference) + 1))
  for i, h in enumerate(hypothesis, 1):
    current = [i]
    for j, r in enumerate(reference, 1):
      current.append(min(previous[j] + 1,  # delete h
                         current[j - 1] + 1,  # insert r
                         previous[j - 1] + (h != r)))  # keep or substitute
    previous = current
  return previous[-1]


def word_error_rate(predictions: Sequence[str],
                    references: Sequence[str]) -> float:
  """Corpus WER: total word edit distance / total reference words.

  Both sides are split with `words` (case and punctuation ignored, "don't"
  one word). One reference per example. An empty reference corpus gives 0.0
  if every prediction is empty too, else inf.
  """
  if len(predictions) != len(references):
    raise ValueError(f'{len(predictions)} predictions but '
                     f'{len(references)} references.')
  errors = total = 0
  for p, r in zip(predictions, references):
    ref = words(r)
    errors += edit_distance(words(p), ref)
    total += len(ref)
  if total == 0:
    return 0.0 if errors == 0 else float('inf')
  return errors / total


@registry.register('evaluator', 'caption')
class Caption(evaluators.Evaluator):
  """Scores generated texts against their references, per media (the
  module docstring defines each):
    caption/<media>/cider        CIDEr-D, coco-caption's scale [0, 10]
    caption/<media>/bleu4        corpus BLEU-4 in [0, 1]
    caption/<media>/exact_match  fraction equal to some reference (tokens)
    caption/<media>/wer          word error rate against the first
                                 reference, for `wer_media`
  all on the built-in `tokenize`; with ptb=True also
    caption/<media>/cider_ptb, caption/<media>/bleu4_ptb
  on coco-caption's Java PTB tokenizer: the official numbers.

  Args (config.evals entry): media (default every captioning target),
  wer_media (media whose texts also get a WER, e.g. speech), ptb (default
  False; needs `java`).
  """

  def __init__(self, task, media=None, wer_media=(), ptb=False):
    self.media = tuple(media or task.media)
    unknown = sorted(set(self.media) | set(wer_media))
    unknown = [m for m in unknown if m not in task.media]
    if unknown:
      raise ValueError(f'caption evaluator names media {unknown}; the task '
                       f'captions {task.media}.')
    self.wer_media = tuple(wer_media)
    self.ptb = bool(ptb)
    if self.ptb:
      check_java()  # now, not after training

  def __call__(self, outputs, ctx):
    del ctx
    metrics = {}
    for m in self.media:
      preds, refs = outputs[f'prediction/{m}'], outputs[f'references/{m}']
      for key, value in caption_scores(preds, refs).items():
        metrics[f'caption/{m}/{key}'] = value
      if self.ptb:
        for key, value in caption_scores(preds, refs, 'ptb').items():
          metrics[f'caption/{m}/{key}_ptb'] = value
      metrics[f'caption/{m}/exact_match'] = exact_match(preds, refs)
      if m in self.wer_media:
        metrics[f'caption/{m}/wer'] = word_error_rate(preds,
                                                      [r[0] for r in refs])
    return metrics
