"""Captioning: text from one modality (image -> caption, speech -> text).

Each configured target (media field, text field) is its own decoding
problem for the one encoder-decoder: the decoder sees only that modality's
memory and learns the text by teacher-forced cross-entropy; the loss is the
mean over targets. Config:

  config.captioning.targets  ((media, text field), ...), e.g.
                             (('image', 'image_text'), ('audio', 'audio_text'))
  config.decoding            max_new_tokens, beam_size (1 = greedy), alpha
                             (beam length penalty)
  config.evals               e.g. dict(caption=dict(type='caption',
                             wer_media=('audio',))), see
                             multimodal/evaluators/captioning.py

Evaluation decodes every target of the eval split; the outputs the
evaluators see are
  prediction/<media>   list of N generated texts
  references/<media>   N lists of reference texts (the field
                       '<text field>_refs', as the tokenizer round-trips
                       them: a piece it lacks reads as ' ⁇ ' on both sides)
"""
from __future__ import annotations

import jax
import numpy as np

from multimodal import registry
from multimodal.data import pipeline
from multimodal.tasks import base
from multimodal.tasks import text_generation


@registry.register('task', 'captioning')
class CaptioningTask(base.Task):
  model_methods = ('encode',)

  def __init__(self, config):
    self.config = config
    self.targets = [tuple(t) for t in config.captioning.targets]
    towers = set(config.model.towers.keys())
    for target in self.targets:
      if len(target) != 2 or target[0] not in towers:
        raise ValueError(
            f'Caption target {target} must be (media, text field) with media '
            f'one of the towers {sorted(towers)} (config.captioning.targets).')
    media = [m for m, _ in self.targets]
    if not media or len(set(media)) != len(media):
      raise ValueError(f'config.captioning.targets needs one target per '
                       f'media, at least one; got {self.targets}.')
    self.media = media
    self.fields = sorted({f for m, t in self.targets
                          for f in (m, t, t + '_refs')})
    self.max_len = config.model.decoder.max_len
    decoding = config.decoding
    text_generation.check_fits(1, decoding.max_new_tokens, self.max_len,
                               'captioning')
    # Special ids (bos prompt, eos stop, pad) of the run's tokenizer.
    self.ids = ids = pipeline.make_tokenizer(config.input).ids
    self.build_evaluators(config)
    targets = self.targets

    @jax.jit
    def outputs(model, batch):
      out = {}
      for m, text in targets:
        memory, mask = model.encode({m: batch[m]})
        prompt = text_generation.bos_prompt(batch=memory.shape[0], ids=ids)
        out[f'tokens/{m}'] = text_generation.generate_tokens(
            model.decoder, prompt, memory, mask, decoding, ids=ids)
        out[f'{text}_refs'] = batch[text + '_refs']
      return out

    self.outputs_fn = outputs

  def loss(self, model, batch):
    total, metrics = 0.0, {}
    for media, text in self.targets:
      prompt = text_generation.bos_prompt(batch=batch[text].shape[0],
                                          ids=self.ids)
      inputs, labels, weights, truncated = text_generation.teacher_forcing(
          prompt, batch[text], self.max_len, ids=self.ids)
      logits = model({media: batch[media]}, inputs, deterministic=False)
      loss, accuracy = text_generation.cross_entropy(logits, labels, weights)
      metrics[f'loss/{media}'] = loss
      metrics[f'token_accuracy/{media}'] = accuracy
      metrics[f'truncated/{media}'] = truncated.mean()
      total = total + loss
    return total / len(self.targets), metrics

  def postprocess(self, outputs, tokenizer):
    out = {}
    for media, text in self.targets:
      tokens = outputs[f'tokens/{media}']
      out[f'prediction/{media}'] = text_generation.continuations(
          tokens, np.full((len(tokens), 1), self.ids.bos), tokenizer,
          ids=self.ids)
      out[f'references/{media}'] = text_generation.references(
          outputs[text + '_refs'], tokenizer, ids=self.ids)
    return out

  def summary(self, metrics, prefix='test') -> str:
    parts = []
    for media, _ in self.targets:
      name = f'{prefix}/caption/{media}'
      if name + '/cider' not in metrics:
        continue
      part = (f'{media}: CIDEr {metrics[name + "/cider"]:.3f}, BLEU-4 '
              f'{metrics[name + "/bleu4"]:.3f}, exact '
              f'{100 * metrics[name + "/exact_match"]:.1f}%')
      if name + '/wer' in metrics:
        part += f', WER {100 * metrics[name + "/wer"]:.1f}%'
      parts.append(part)
    return 'captioning ' + '; '.join(parts)
