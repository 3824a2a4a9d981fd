"""Caption and transcript metrics: BLEU, CIDEr-D, exact match, WER.

BLEU and CIDEr-D are pycocoevalcap's scorers (the COCO caption evaluation
code, pure Python), so numbers compare with published ones. Its PTB
tokenizer needs Java, so captions are tokenised here instead: lower-cased,
split into runs of letters and digits, with clitics such as "'s" split off
as in PTB and all punctuation dropped. This approximates the PTB
tokenizer rather than reproducing it: e.g. "2.5" gives "2 5" and "don't"
gives "don 't" where PTB gives "2.5" and "do n't".

Scores are on pycocoevalcap's scale: BLEU in [0, 1], CIDEr-D roughly
[0, 10] (x10 built in); papers usually report both x100. CIDEr-D's IDF
comes from the references being scored, so it needs a corpus: on a single
image every n-gram has zero weight and the score is 0.
"""
from __future__ import annotations

import re
from typing import Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from multimodal import evaluators
from multimodal import registry

_TOKEN = re.compile(r"[^\W_]+|(?<=[^\W_])'[^\W_]+")

References = Sequence[str | Sequence[str]]


def tokenize(text: str) -> list[str]:
  """Lower-cased word tokens, punctuation dropped ("A dog's toy." ->
  ['a', 'dog', "'s", 'toy'])."""
  return _TOKEN.findall(text.lower())


def _as_lists(references: References) -> list[list[str]]:
  return [[r] if isinstance(r, str) else list(r) for r in references]


def _coco_inputs(predictions: Sequence[str], references: References):
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
  gts = {i: [' '.join(tokenize(r)) for r in refs]
         for i, refs in enumerate(references)}
  res = {i: [' '.join(tokenize(p))] for i, p in enumerate(predictions)}
  return gts, res


def bleu(predictions: Sequence[str], references: References,
         max_order: int = 4) -> float:
  """Corpus BLEU-`max_order` as coco-caption computes it.

  Clipped n-gram precisions summed over the corpus, geometric mean over
  orders 1..max_order, brevity penalty with the reference length closest
  to each prediction's.

  Args:
    predictions: one caption per example.
    references: per example, a caption or a list of captions (>= 1).
    max_order: largest n-gram order.
  """
  gts, res = _coco_inputs(predictions, references)
  scores, _ = Bleu(max_order).compute_score(gts, res, verbose=0)
  return float(scores[max_order - 1])


def cider_d(predictions: Sequence[str], references: References) -> float:
  """Corpus CIDEr-D (n-grams 1..4, Gaussian length penalty sigma = 6,
  clipped counts), the mean over examples; arguments as in `bleu`."""
  gts, res = _coco_inputs(predictions, references)
  score, _ = Cider().compute_score(gts, res)
  return float(score)


def caption_scores(predictions: Sequence[str],
                   references: References) -> dict[str, float]:
  """{'bleu4': ..., 'cider': ...} for the corpus."""
  return {'bleu4': bleu(predictions, references),
          'cider': cider_d(predictions, references)}


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

  Both sides are tokenised with `tokenize` (case and punctuation ignored).
  One reference per example. An empty reference corpus gives 0.0 if every
  prediction is empty too, else inf.
  """
  if len(predictions) != len(references):
    raise ValueError(f'{len(predictions)} predictions but '
                     f'{len(references)} references.')
  errors = words = 0
  for p, r in zip(predictions, references):
    ref = tokenize(r)
    errors += edit_distance(tokenize(p), ref)
    words += len(ref)
  if words == 0:
    return 0.0 if errors == 0 else float('inf')
  return errors / words


@registry.register('evaluator', 'caption')
class Caption(evaluators.Evaluator):
  """Scores generated texts against their references, per media:
  caption/<media>/cider (CIDEr-D, pycocoevalcap scale, about 0..10),
  caption/<media>/bleu4 (corpus BLEU-4 in [0, 1]), caption/<media>/
  exact_match (fraction equal to some reference) and, for `wer_media`,
  caption/<media>/wer (word error rate against the first reference).

  Args (config.evals entry): media (default every captioning target),
  wer_media (media whose texts also get a WER, e.g. speech).
  """

  def __init__(self, task, media=None, wer_media=()):
    self.media = tuple(media or task.media)
    unknown = sorted(set(self.media) | set(wer_media))
    unknown = [m for m in unknown if m not in task.media]
    if unknown:
      raise ValueError(f'caption evaluator names media {unknown}; the task '
                       f'captions {task.media}.')
    self.wer_media = tuple(wer_media)

  def __call__(self, outputs, ctx):
    del ctx
    metrics = {}
    for m in self.media:
      preds, refs = outputs[f'prediction/{m}'], outputs[f'references/{m}']
      for key, value in caption_scores(preds, refs).items():
        metrics[f'caption/{m}/{key}'] = value
      metrics[f'caption/{m}/exact_match'] = exact_match(preds, refs)
      if m in self.wer_media:
        metrics[f'caption/{m}/wer'] = word_error_rate(preds,
                                                      [r[0] for r in refs])
    return metrics
