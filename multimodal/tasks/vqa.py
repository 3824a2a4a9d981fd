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
  config.decoding              max_new_tokens, beam_size (1 = greedy), alpha
  config.evals                 e.g. dict(vqa=dict(type='vqa')) (official
                               VQA accuracy, 'vqa_acc/...') or
                               dict(vqa=dict(type='vqa', metric='exact_match'))
                               for one answer per question; see
                               multimodal/evaluators/vqa.py

Evaluation answers every question of the eval split (greedy or beam) under
each condition: 'full' (every modality present) and, with
ablate_modalities, 'masked_<m>' (modality m masked out for every example).
The outputs the evaluators see, one entry per question:
  answer/<condition>   list of generated answers
  references           lists of reference answers (field answer_refs)
  question_type        list of question types (when config.input.fields
                       maps a question_type)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from multimodal import registry
from multimodal.data import pipeline
from multimodal.evaluators import vqa as vqa_metrics
from multimodal.tasks import base
from multimodal.tasks import text_generation


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
class VqaTask(base.Task):
  model_methods = ('encode',)

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
    decoding = config.decoding
    text_generation.check_fits(1 + config.input.max_text_len,
                               decoding.max_new_tokens, self.max_len, 'vqa')
    self.conditions = {'full': ()}
    if config.vqa.ablate_modalities:
      self.conditions.update({f'masked_{m}': (m,) for m in self.media})
    # Special ids (bos prompt, eos stop, pad) of the run's tokenizer.
    self.ids = ids = pipeline.make_tokenizer(config.input).ids
    self.build_evaluators(config)
    media, conditions, typed = self.media, self.conditions, self.typed

    @jax.jit
    def outputs(model, batch):
      question = batch['question']
      batch_size = question.shape[0]
      prompt = text_generation.bos_prompt(flat_questions(question), ids=ids)
      out = {'question': question, 'answer_refs': batch['answer_refs']}
      if typed:
        out['question_type'] = batch['question_type']
      for name, masked in conditions.items():
        present = {m: jnp.zeros((batch_size,), bool) for m in masked}
        memory, mask = model.encode({m: batch[m] for m in media}, present)
        memory, mask = per_question(question, memory, mask)
        tokens = text_generation.generate_tokens(
            model.decoder, prompt, memory, mask, decoding, ids=ids)
        # Rows per example (not per question), so padding rows drop as one.
        out[f'tokens/{name}'] = tokens.reshape(
            question.shape[:-1] + tokens.shape[-1:])
      return out

    self.outputs_fn = outputs

  def loss(self, model, batch):
    memory, mask = model.encode({m: batch[m] for m in self.media},
                                deterministic=False, seeds=batch['seed'])
    memory, mask = per_question(batch['question'], memory, mask)
    prompt = text_generation.bos_prompt(flat_questions(batch['question']),
                                        ids=self.ids)
    inputs, labels, weights, truncated = text_generation.teacher_forcing(
        prompt, flat_questions(batch['answer']), self.max_len, ids=self.ids)
    logits = model.decoder(inputs, memory, mask, deterministic=False)
    loss, accuracy = text_generation.cross_entropy(logits, labels, weights)
    return loss, {'token_accuracy': accuracy,
                  'truncated': truncated.mean()}

  def postprocess(self, outputs, tokenizer):
    questions = flat_questions(outputs['question'])
    prompt = np.asarray(text_generation.bos_prompt(questions, ids=self.ids))
    out = {}
    for name in self.conditions:
      tokens = outputs[f'tokens/{name}']
      out[f'answer/{name}'] = text_generation.continuations(
          tokens.reshape((-1, tokens.shape[-1])), prompt, tokenizer,
          ids=self.ids)
    refs = outputs['answer_refs']
    out['references'] = text_generation.references(
        refs.reshape((-1,) + refs.shape[-2:]), tokenizer, ids=self.ids)
    if self.typed:
      out['question_type'] = [tokenizer.decode(t) for t in flat_questions(
          outputs['question_type'])]
    return out

  def summary(self, metrics, prefix='test') -> str:
    sections = []
    for name, label in vqa_metrics.METRICS.items():
      head = f'{prefix}/{name}/full/'
      kinds = [k[len(head):] for k in metrics if k.startswith(head)]
      if not kinds:
        continue
      kinds = ['all'] + sorted(k for k in kinds if k != 'all')
      parts = []
      for kind in kinds:
        values = [metrics.get(f'{prefix}/{name}/{c}/{kind}')
                  for c in self.conditions]
        parts.append(f'{kind} ' + '/'.join(
            f'{100 * v:.1f}' for v in values if v is not None))
      sections.append(f'{label} ({name}) % ({" / ".join(self.conditions)}): '
                   + ', '.join(parts))
    # No VQA evaluator configured: the generic line of whatever was measured.
    return '; '.join(sections) or super().summary(metrics, prefix)
