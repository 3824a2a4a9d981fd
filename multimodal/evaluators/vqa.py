"""VQA answer scores: the official VQA accuracy by default, variants by name.

`metric` (here and in the `vqa` evaluator's config) picks the definition;
the name is also the one the evaluator reports the score under:

  'vqa_acc'   (default) the official VQA accuracy as computed by
              PythonEvaluationTools/vqaEvaluation/vqaEval.py of
              github.com/GT-Vision-Lab/VQA at commit
              458a8b268b1a239dc388e0af4423f3fe7477b04f (2016-10-08, master
              until 2021-03-11; the version that VQAv2 was released with).
              Quirks kept on purpose:
              - the prediction is normalised (vqa_answers.normalize_answer:
                whitespace, punctuation, case, number words, articles,
                contractions); the references only lose punctuation
                (strip_punctuation: no lower-casing, no number words, no
                strip), and only when they are not all identical. So
                'yes.' against ten 'Yes' scores 0, and 'two' against ten
                'two' scores 0 (the prediction becomes '2').
              - at most 32 periods are removed from a text (the script
                passes re.UNICODE as the `count` of periodStrip.sub).
              - the score is the leave-one-out mean for any number n of
                references: the mean over the n ways to leave one out of
                min(1, #others equal to the prediction / 3). With ten
                references 1, 2, 3 or 4+ matches score 0.3, 0.6, 0.9, 1;
                with one reference it is always 0; with two, one matching,
                1/6. References count as distinct answers even when their
                texts are equal (the script compares answer records, whose
                answer_id differs).
  'vqa_acc_2021'  the same file at the current master, commit
              a013f0043c1e2cdc995922dfe257f7149aa9af06 (2021-03-11, "Fixed
              processing answers bug"): prediction and references are
              whitespace-cleaned (newlines/tabs to spaces, strip); then,
              only when the references are not all identical, both are
              fully normalised. With identical references the prediction is
              compared as it is: 'two' vs ten 'two' scores 1, 'Yes' vs ten
              'yes' scores 0. Leave-one-out as above.
  'vqa_acc_normalized_refs'  not an official number: prediction and every
              reference fully normalised (normalize_answer), leave-one-out
              as above. 'yes.' vs ten 'Yes' scores 1.
  'exact_match'  not the VQA metric: 1 if the normalised prediction equals
              some normalised reference, else 0, for any number of
              references; the kind of score used for data with one answer
              per question (GQA, CLEVR, the digits VQA task), where the
              leave-one-out metrics give 0 throughout. Both sides go
              through normalize_answer first ('The dog' matches 'dog'), so
              it can read higher than a comparison of raw strings.

Scores are fractions in [0, 1]; the official script reports x100 (rounded
to 2 decimals). The evaluator scores the references it is given: in the VQA
task these are the tokenizer's round trip of the first
config.input.max_references answers (multimodal/tasks/vqa.py), which can
differ from the raw annotations (sentencepiece normalisation, truncation).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from multimodal import evaluators
from multimodal import registry
from multimodal.evaluators import vqa_answers
# Re-exported: the answer processing steps were defined here before.
from multimodal.evaluators.vqa_answers import normalize_answer  # noqa: F401
from multimodal.evaluators.vqa_answers import strip_punctuation  # noqa: F401

# Metric name -> what a summary line calls it.
METRICS = {
    'vqa_acc': 'VQA accuracy',
    'vqa_acc_2021': 'VQA accuracy (2021 script)',
    'vqa_acc_normalized_refs': 'VQA accuracy, normalised references',
    'exact_match': 'exact-match accuracy',
}
DEFAULT_METRIC = 'vqa_acc'
# The metrics that leave one reference out: 0 on every single-reference
# question.
LEAVE_ONE_OUT = ('vqa_acc', 'vqa_acc_2021', 'vqa_acc_normalized_refs')


def check_metric(metric: str) -> str:
  """`metric` if it names a definition, else a ValueError listing them."""
  if metric not in METRICS:
    raise ValueError(f'Unknown VQA metric {metric!r}; choose one of '
                     f'{list(METRICS)} (see multimodal/evaluators/vqa.py).')
  return metric


def leave_one_out(answer: str, references: Sequence[str]) -> float:
  """Mean over the n ways to leave one reference out of min(1, #remaining
  references equal to `answer` / 3); texts are compared as given."""
  matches = [r == answer for r in references]
  total = sum(matches)
  # Leaving out reference i leaves total - matches[i] matching others. The
  # arithmetic (k / 3 per reference, summed, / n) is the script's, so the
  # floats are bit-identical to its.
  return sum(min(1, (total - m) / 3) for m in matches) / len(matches)


def _official_2016(prediction, references):
  answer = vqa_answers.normalize_answer(prediction)
  if len(set(references)) > 1:
    references = [vqa_answers.strip_punctuation(r) for r in references]
  return leave_one_out(answer, references)


def _official_2021(prediction, references):
  answer = vqa_answers.clean_whitespace(prediction)
  references = [vqa_answers.clean_whitespace(r) for r in references]
  if len(set(references)) > 1:
    answer = vqa_answers.digits_articles(
        vqa_answers.strip_punctuation(answer))
    references = [vqa_answers.digits_articles(
        vqa_answers.strip_punctuation(r)) for r in references]
  return leave_one_out(answer, references)


def _normalized_refs(prediction, references):
  return leave_one_out(vqa_answers.normalize_answer(prediction),
                       [vqa_answers.normalize_answer(r) for r in references])


def _exact_match(prediction, references):
  answer = vqa_answers.normalize_answer(prediction)
  return float(any(vqa_answers.normalize_answer(r) == answer
                   for r in references))


_SCORES = {'vqa_acc': _official_2016, 'vqa_acc_2021': _official_2021,
           'vqa_acc_normalized_refs': _normalized_refs,
           'exact_match': _exact_match}


def vqa_accuracy(prediction: str, references: Sequence[str], *,
                 metric: str = DEFAULT_METRIC) -> float:
  """Score of one answer against its references (see the module docstring).

  Args:
    prediction: the model's answer, raw.
    references: the human answers, raw (10 in VQAv2); each entry is one
      annotator's answer, equal texts included.
    metric: 'vqa_acc' (official, default), 'vqa_acc_2021',
      'vqa_acc_normalized_refs' or 'exact_match'.

  Returns:
    A float in [0, 1].
  """
  check_metric(metric)
  if isinstance(references, str) or not references:
    raise ValueError(f'Need a non-empty list of reference answers; got '
                     f'{references!r}.')
  return float(_SCORES[metric](prediction, list(references)))


def mean_vqa_accuracy(predictions: Sequence[str],
                      references: Sequence[Sequence[str]], *,
                      metric: str = DEFAULT_METRIC) -> float:
  """Mean of `vqa_accuracy` over questions."""
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f'Need matching, non-empty lists; got '
                     f'{len(predictions)} and {len(references)}.')
  return sum(vqa_accuracy(p, r, metric=metric)
             for p, r in zip(predictions, references)) / len(predictions)


ALL = 'all'


def accuracy_by_type(predictions: Sequence[str],
                     references: Sequence[Sequence[str]],
                     types: Sequence[str] | None, *,
                     metric: str = DEFAULT_METRIC) -> dict[str, float]:
  """Mean score (`vqa_accuracy` with `metric`) overall ('all') and per
  question type.

  Args:
    predictions: one raw answer per question.
    references: per question, its reference answers (>= 1).
    types: per question, its type (e.g. 'sum'); must not be 'all'. None:
      no types, just the overall mean.
    metric: as in `vqa_accuracy`.

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
  scores = np.array([vqa_accuracy(p, r, metric=metric)
                     for p, r in zip(predictions, references)])
  out = {ALL: float(scores.mean())}
  if types is not None:
    types = np.asarray(types)
    for t in sorted(set(types.tolist())):
      out[t] = float(scores[types == t].mean())
  return out


@registry.register('evaluator', 'vqa')
class Vqa(evaluators.Evaluator):
  """Answer scores (`vqa_accuracy`) under each condition of the VQA task,
  overall and per question type:
    <metric>/<condition>/<type>  mean score; <type> 'all' is every question
    vqa_count/<type>             number of questions of that type
  e.g. 'vqa_acc/full/all' (official VQA accuracy, every modality present).

  Args (config.evals entry): metric (a name from METRICS or a tuple of
  them; default 'vqa_acc', the official VQA accuracy), conditions (default
  every condition of the task: 'full', 'masked_<m>').
  """

  def __init__(self, task, conditions=None, metric=DEFAULT_METRIC):
    self.metrics = ((metric,) if isinstance(metric, str)
                    else tuple(metric))
    if not self.metrics or len(set(self.metrics)) != len(self.metrics):
      raise ValueError(f'vqa evaluator: metric={metric!r} must name one or '
                       f'more of {list(METRICS)}, each once.')
    for m in self.metrics:
      check_metric(m)
    max_refs = task.config.input.get('max_references')
    leave_one_out_metrics = [m for m in self.metrics if m in LEAVE_ONE_OUT]
    if max_refs == 1 and leave_one_out_metrics:
      raise ValueError(
          f'vqa evaluator: metric {leave_one_out_metrics} leaves one '
          'reference out, so with config.input.max_references=1 every '
          "question scores 0. Use metric='exact_match' for data with one "
          'answer per question, or keep more references (VQAv2 has 10).')
    self.conditions = tuple(conditions or task.conditions)
    unknown = [c for c in self.conditions if c not in task.conditions]
    if unknown:
      raise ValueError(f'vqa evaluator names conditions {unknown}; the task '
                       f'has {list(task.conditions)}.')

  def __call__(self, outputs, ctx):
    del ctx
    types = outputs.get('question_type')
    metrics = {}
    for metric in self.metrics:
      for c in self.conditions:
        for t, acc in accuracy_by_type(outputs[f'answer/{c}'],
                                       outputs['references'], types,
                                       metric=metric).items():
          metrics[f'{metric}/{c}/{t}'] = acc
    for t in sorted(set(types or ())):
      metrics[f'vqa_count/{t}'] = types.count(t)
    return metrics
