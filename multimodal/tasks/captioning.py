"""Captioning: text from one modality (image -> caption, speech -> text).

Each configured target (media field, text field) is its own decoding
problem for the one encoder-decoder: the decoder sees only that modality's
memory and learns the text by teacher-forced cross-entropy; the loss is the
mean over targets. Config:

  config.captioning.targets  ((media, text field), ...), e.g.
                             (('image', 'image_text'), ('audio', 'audio_text'))
  config.evals               max_new_tokens, beam_size (1 = greedy), alpha
                             (beam length penalty), wer_media (media whose
                             texts also get a word error rate)

Evaluation decodes every target of the eval split and scores it against all
the record's texts (field '<text field>_refs'), as the tokenizer round-trips
them (a piece it lacks reads as ' ⁇ ' on both sides):
  caption/<media>/cider        CIDEr-D (pycocoevalcap scale, about 0..10)
  caption/<media>/bleu4        corpus BLEU-4 in [0, 1]
  caption/<media>/exact_match  fraction equal to some reference
  caption/<media>/wer          for wer_media: word error rate against the
                               first (canonical) reference, e.g. 'the word
                               six' (a phrasing with words the reference
                               lacks counts as errors)
"""
from __future__ import annotations

import jax
import numpy as np

from multimodal import distributed
from multimodal import registry
from multimodal.data import pipeline
from multimodal.data import text as text_lib
from multimodal.evaluators import captioning as metrics_lib
from multimodal.tasks import seq2seq

TEXT_FIELDS = ('image_text', 'audio_text')


@registry.register('task', 'captioning')
class CaptioningTask:

  def __init__(self, config):
    self.config = config
    self.targets = [tuple(t) for t in config.captioning.targets]
    towers = set(config.model.towers.keys())
    for target in self.targets:
      if (len(target) != 2 or target[0] not in towers
          or target[1] not in TEXT_FIELDS):
        raise ValueError(
            f'Caption target {target} must be (media, text field) with media '
            f'one of the towers {sorted(towers)} and text field one of '
            f'{TEXT_FIELDS} (config.captioning.targets).')
    media = [m for m, _ in self.targets]
    if not media or len(set(media)) != len(media):
      raise ValueError(f'config.captioning.targets needs one target per '
                       f'media, at least one; got {self.targets}.')
    self.fields = sorted({f for m, t in self.targets
                          for f in (m, t, t + '_refs')})
    self.max_len = config.model.decoder.max_len
    # Special ids (bos prompt, eos stop, pad) of the tokenizer the text
    # fields are made with.
    self.ids = text_lib.Tokenizer(pipeline.tokenizer_path(config.input),
                                  config.input.max_text_len).ids
    seq2seq.check_fits(1, config.evals.max_new_tokens, self.max_len,
                       'captioning')

  def loss(self, model, batch):
    total, metrics = 0.0, {}
    for media, text in self.targets:
      prompt = seq2seq.bos_prompt(batch=batch[text].shape[0], ids=self.ids)
      inputs, labels, weights, truncated = seq2seq.teacher_forcing(
          prompt, batch[text], self.max_len, ids=self.ids)
      logits = model({media: batch[media]}, inputs, deterministic=False)
      loss, accuracy = seq2seq.cross_entropy(logits, labels, weights)
      metrics[f'loss/{media}'] = loss
      metrics[f'token_accuracy/{media}'] = accuracy
      metrics[f'truncated/{media}'] = truncated.mean()
      total = total + loss
    return total / len(self.targets), metrics

  # ---------------------------------------------------------------- eval ---

  def predict_fn(self, media: str):
    """Jitted (model, batch) -> ids int32 [B, 1 + N] (BOS, then the text
    generated from `media` alone)."""
    evals, ids = self.config.evals, self.ids

    @jax.jit
    def predict(model, batch):
      memory, mask = model.encode({media: batch[media]})
      prompt = seq2seq.bos_prompt(batch=memory.shape[0], ids=ids)
      return seq2seq.generate_tokens(model.decoder, prompt, memory, mask,
                                     evals, ids=ids)

    return predict

  def evaluate(self, model, batches, tokenizer, mesh, prefix='test') -> dict:
    """Decodes every target over one pass of the eval split and scores it. (See multimodal/tasks/__init__.py.)"""
    del mesh
    predict = {m: self.predict_fn(m) for m, _ in self.targets}
    preds = {m: [] for m, _ in self.targets}
    refs = {m: [] for m, _ in self.targets}
    for batch in batches:
      keep = distributed.fetch(batch.pop('mask'))
      for media, text in self.targets:
        tokens = distributed.fetch(predict[media](model, batch))
        preds[media] += seq2seq.continuations(
            tokens[keep], np.full((keep.sum(), 1), self.ids.bos), tokenizer,
            ids=self.ids)
        refs[media] += seq2seq.references(
            distributed.fetch(batch[text + '_refs'])[keep], tokenizer,
            ids=self.ids)
    metrics = {}
    for media, _ in self.targets:
      name = f'{prefix}/caption/{media}'
      for key, value in metrics_lib.caption_scores(preds[media],
                                                   refs[media]).items():
        metrics[f'{name}/{key}'] = value
      metrics[f'{name}/exact_match'] = metrics_lib.exact_match(preds[media],
                                                               refs[media])
      if media in self.config.evals.wer_media:
        metrics[f'{name}/wer'] = metrics_lib.word_error_rate(
            preds[media], [r[0] for r in refs[media]])
    metrics[f'{prefix}/num_examples'] = len(next(iter(preds.values())))
    return metrics

  def summary(self, metrics, prefix='test') -> str:
    parts = []
    for media, _ in self.targets:
      name = f'{prefix}/caption/{media}'
      part = (f'{media}: CIDEr {metrics[name + "/cider"]:.3f}, BLEU-4 '
              f'{metrics[name + "/bleu4"]:.3f}, exact '
              f'{100 * metrics[name + "/exact_match"]:.1f}%')
      if name + '/wer' in metrics:
        part += f', WER {100 * metrics[name + "/wer"]:.1f}%'
      parts.append(part)
    return 'captioning ' + '; '.join(parts)
