"""Generative VQA over several modalities: (media..., question) -> answer.

The question is the decoder's prompt (BOS + question ids, whose eos marks
where the answer starts); the decoder cross-attends to the fused media and
learns the answer by teacher-forced cross-entropy on the answer tokens
only. Training applies the model's modality dropout, drawn from the
pipeline's per-example `seed` field.

A batch holds one question per example (question [B, L]) or K of them
(question [B, K, L], answer_refs [B, K, R, L], ... with
config.input.aligned_items = K): the media are then encoded once and the
memory serves all K questions. Config:

  config.vqa.media             modalities the questions are about, e.g.
                               ('image', 'audio')
  config.vqa.ablate_modalities also evaluate with each modality masked out
  config.evals                 max_new_tokens, beam_size (1 = greedy), alpha

Evaluation (greedy or beam answers, scored by the VQA accuracy of
multimodal.evaluators.vqa against `answer_refs`), per condition and per
question type (the decoded `question_type` field, when config.input.fields
maps one):
  vqa/full/<type>            every modality present
  vqa/masked_<m>/<type>      modality m masked out for every example (with
                             two modalities: the other one alone)
  vqa_count/<type>           questions of that type
<type> 'all' is the mean over every question.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from multimodal import distributed
from multimodal import registry
from multimodal.data import pipeline
from multimodal.data import text as text_lib
from multimodal.evaluators import vqa as vqa_lib
from multimodal.tasks import seq2seq

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
  scores = np.array([vqa_lib.vqa_accuracy(p, r)
                     for p, r in zip(predictions, references)])
  out = {ALL: float(scores.mean())}
  if types is not None:
    types = np.asarray(types)
    for t in sorted(set(types.tolist())):
      out[t] = float(scores[types == t].mean())
  return out


def flat_questions(texts):
  """[B, K, L] -> [B * K, L] (example-major); [B, L] unchanged."""
  return texts.reshape((-1, texts.shape[-1])) if texts.ndim == 3 else texts


def per_question(questions, memory, memory_mask):
  """Repeats each example's memory [B, M, D] (and mask [B, M]) once per
  question when `questions` is [B, K, L], to match `flat_questions`."""
  if questions.ndim != 3:
    return memory, memory_mask
  k = questions.shape[1]
  return jnp.repeat(memory, k, axis=0), jnp.repeat(memory_mask, k, axis=0)


@registry.register('task', 'vqa')
class VqaTask:

  def __init__(self, config):
    self.config = config
    self.media = tuple(config.vqa.media)
    towers = set(config.model.towers.keys())
    if not self.media or not set(self.media) <= towers:
      raise ValueError(f'config.vqa.media={self.media} must be a non-empty '
                       f'subset of the towers {sorted(towers)}.')
    self.typed = 'question_type' in config.input.fields
    self.fields = sorted(set(self.media) | {
        'question', 'answer', 'answer_refs', 'seed'} | (
            {'question_type'} if self.typed else set()))
    self.max_len = config.model.decoder.max_len
    # Special ids (bos prompt, eos stop, pad) of the tokenizer the text
    # fields are made with.
    self.ids = text_lib.Tokenizer(pipeline.tokenizer_path(config.input),
                                  config.input.max_text_len).ids
    seq2seq.check_fits(1 + config.input.max_text_len,
                       config.evals.max_new_tokens, self.max_len, 'vqa')
    self.conditions = {'full': ()}
    if config.vqa.ablate_modalities:
      self.conditions.update({f'masked_{m}': (m,) for m in self.media})

  def loss(self, model, batch):
    memory, mask = model.encode({m: batch[m] for m in self.media},
                                deterministic=False, seeds=batch['seed'])
    memory, mask = per_question(batch['question'], memory, mask)
    prompt = seq2seq.bos_prompt(flat_questions(batch['question']),
                                ids=self.ids)
    inputs, labels, weights, truncated = seq2seq.teacher_forcing(
        prompt, flat_questions(batch['answer']), self.max_len, ids=self.ids)
    logits = model.decoder(inputs, memory, mask, deterministic=False)
    loss, accuracy = seq2seq.cross_entropy(logits, labels, weights)
    return loss, {'token_accuracy': accuracy,
                  'truncated': truncated.mean()}

  # ---------------------------------------------------------------- eval ---

  def predict_fn(self, masked: tuple[str, ...]):
    """Jitted (model, batch) -> answer ids [B, P + N], `masked` media absent
    for every example."""
    evals, media, ids = self.config.evals, self.media, self.ids

    @jax.jit
    def predict(model, batch):
      batch_size = batch['question'].shape[0]
      present = {m: jnp.zeros((batch_size,), bool) for m in masked}
      memory, mask = model.encode({m: batch[m] for m in media}, present)
      memory, mask = per_question(batch['question'], memory, mask)
      prompt = seq2seq.bos_prompt(flat_questions(batch['question']), ids=ids)
      return seq2seq.generate_tokens(model.decoder, prompt, memory, mask,
                                     evals, ids=ids)

    return predict

  def evaluate(self, model, batches, tokenizer, mesh, prefix='test') -> dict:
    """Answers every question of the eval pass under every condition. (See multimodal/tasks/__init__.py.)"""
    del mesh
    predict = {c: self.predict_fn(m) for c, m in self.conditions.items()}
    answers = {c: [] for c in self.conditions}
    refs, types = [], []
    for batch in batches:
      keep = distributed.fetch(batch.pop('mask'))
      questions = distributed.fetch(batch['question'])
      if questions.ndim == 3:  # K questions per example
        keep = np.repeat(keep, questions.shape[1])
      prompt = np.asarray(seq2seq.bos_prompt(flat_questions(questions),
                                             ids=self.ids))[keep]
      for c, fn in predict.items():
        tokens = distributed.fetch(fn(model, batch))[keep]
        answers[c] += seq2seq.continuations(tokens, prompt, tokenizer,
                                            ids=self.ids)
      answer_refs = distributed.fetch(batch['answer_refs'])
      refs += seq2seq.references(
          answer_refs.reshape((-1,) + answer_refs.shape[-2:])[keep],
          tokenizer, ids=self.ids)
      if self.typed:
        types += [tokenizer.decode(t) for t in flat_questions(
            distributed.fetch(batch['question_type']))[keep]]
    metrics = {}
    for c in self.conditions:
      for t, acc in accuracy_by_type(answers[c], refs,
                                     types if self.typed else None).items():
        metrics[f'{prefix}/vqa/{c}/{t}'] = acc
    for t in sorted(set(types)):
      metrics[f'{prefix}/vqa_count/{t}'] = types.count(t)
    metrics[f'{prefix}/num_examples'] = len(refs)
    return metrics

  def summary(self, metrics, prefix='test') -> str:
    head = f'{prefix}/vqa/full/'
    kinds = [k[len(head):] for k in metrics if k.startswith(head)]
    kinds = [ALL] + sorted(k for k in kinds if k != ALL)
    parts = []
    for kind in kinds:
      values = [metrics.get(f'{prefix}/vqa/{c}/{kind}')
                for c in self.conditions]
      parts.append(f'{kind} ' + '/'.join(
          f'{100 * v:.1f}' for v in values if v is not None))
    return (f'VQA accuracy % ({" / ".join(self.conditions)}): '
            + ', '.join(parts))
