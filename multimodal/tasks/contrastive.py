"""Contrastive pretraining (CLIP softmax or SigLIP sigmoid) over modality pairs.

Evaluation: one pass of the eval split embeds every field of the model's
inputs; the outputs the evaluators (config.evals) see are
  embedding/<field>   float32 [N, E] (unnormalised)
  <field>             every other batch field an evaluator asks for (e.g.
                      label int32 [N], a text field int32 [N, L])
and `Context.embed_texts(text_field, texts)` embeds prompts. Typical
evaluators: 'retrieval' (recall@K, label-free), 'zeroshot' (class prompts),
'zeroshot_by_example' (classes described by another modality's examples).
"""
from __future__ import annotations

import jax
import numpy as np

from multimodal import distributed
from multimodal import evaluators
from multimodal import registry
from multimodal.tasks import base


@registry.register('task', 'contrastive')
class ContrastiveTask(base.Task):
  model_methods = ('loss',)

  def __init__(self, config):
    self.config = config
    self.fields = sorted(config.model.inputs.keys())
    self.pairs = [tuple(p) for p in config.model.pairs]
    self.build_evaluators(config)
    fields = self.fields

    @jax.jit
    def embed(model, batch):
      return model({f: batch[f] for f in fields if f in batch},
                   deterministic=True)

    @jax.jit
    def outputs(model, batch):
      out = {f'embedding/{f}': e for f, e in embed(model, batch).items()}
      out.update({f: v for f, v in batch.items() if f not in fields})
      return out

    self.embed_fn, self.outputs_fn = embed, outputs

  def loss(self, model, batch):
    embeddings = model({f: batch[f] for f in self.fields},
                       deterministic=False)
    return model.loss(embeddings)

  def context(self, model, tokenizer, mesh) -> evaluators.Context:
    def embed_texts(field, texts):
      tokens = np.stack([tokenizer(t) for t in texts])
      out = self.embed_fn(model, {field: distributed.replicate(tokens, mesh)})
      return distributed.fetch(out[field])

    return evaluators.Context(tokenizer=tokenizer, embed_texts=embed_texts)

  @staticmethod
  def summary(metrics, prefix='test') -> str:
    head = f'{prefix}/zeroshot/'
    parts = [f'{k[len(head):]} {100 * v:.1f}%'
             for k, v in sorted(metrics.items()) if k.startswith(head)]
    if parts:
      return 'zero-shot accuracy: ' + ', '.join(parts)
    head = f'{prefix}/retrieval/'
    return 'retrieval: ' + ', '.join(
        f'{k[len(head):]} {100 * v:.1f}%' for k, v in sorted(metrics.items())
        if k.startswith(head) and k.endswith('@1'))
