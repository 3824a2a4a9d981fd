"""Contrastive pretraining (CLIP softmax or SigLIP sigmoid) over modality pairs.

Evaluation on one pass of the eval split:
  zeroshot/image        images vs text prompts per class ("a handwritten seven")
  zeroshot/audio        speech vs text prompts per class ("the word seven")
  zeroshot/image~audio  images vs the spoken words: each class is the mean
                        embedding of the eval split's clips of that word
  retrieval/A->B@K      recall@K of the paired item, every direction of every
                        configured pair
"""
from __future__ import annotations

import jax
import numpy as np

from multimodal import distributed
from multimodal import registry
from multimodal.evaluators import retrieval
from multimodal.evaluators import zeroshot


@registry.register('task', 'contrastive')
class ContrastiveTask:

  def __init__(self, config):
    self.config = config
    self.fields = sorted(config.model.inputs.keys())
    self.pairs = [tuple(p) for p in config.model.pairs]

  def loss(self, model, batch):
    embeddings = model({f: batch[f] for f in self.fields},
                       deterministic=False)
    return model.loss(embeddings)

  # ---------------------------------------------------------------- eval ---

  def embed_fn(self):
    """Jitted (model, batch) -> dict of [B, E] embeddings."""
    fields = self.fields

    @jax.jit
    def embed(model, batch):
      return model({f: batch[f] for f in fields if f in batch},
                   deterministic=True)

    return embed

  def evaluate(self, model, batches, tokenizer, mesh, prefix='test') -> dict:
    """Zero-shot and retrieval metrics over one pass of the eval split.

    Args:
      model: the model (parameters may be sharded over `mesh`).
      batches: global batches (jax.Arrays split over the mesh's batch axes)
        with a bool `mask` field marking real (not padding) rows.
      tokenizer: turns a prompt into int32 [L] ids.
      mesh: the device mesh.
      prefix: metric name prefix (the split).

    Returns:
      name -> float, identical on every process.
    """
    embed = self.embed_fn()
    embs = {f: [] for f in self.fields}
    labels = []
    for batch in batches:
      keep = distributed.fetch(batch.pop('mask'))
      out = embed(model, batch)
      for f in self.fields:
        embs[f].append(distributed.fetch(out[f])[keep])
      labels.append(distributed.fetch(batch['label'])[keep])
    embs = {f: np.concatenate(v) for f, v in embs.items()}
    labels = np.concatenate(labels)
    ev = self.config.evals
    metrics = {}

    classes = list(ev.class_names)
    prompt_sets = {'image': ('image_text', ev.image_prompts),
                   'audio': ('audio_text', ev.audio_prompts)}
    for field, (text_field, templates) in prompt_sets.items():
      if field not in embs or text_field not in self.fields:
        continue
      prompts = zeroshot.fill_prompts(templates, classes)
      tokens = np.stack([tokenizer(p) for group in prompts for p in group])
      text = distributed.fetch(embed(
          model, {text_field: distributed.replicate(tokens, mesh)})[text_field])
      protos = zeroshot.prototypes_from_prompts(
          text.reshape(len(classes), len(templates), -1))
      metrics[f'{prefix}/zeroshot/{field}'] = zeroshot.accuracy(
          embs[field], labels, protos)

    if 'image' in embs and 'audio' in embs and (
        ('image', 'audio') in self.pairs or ('audio', 'image') in self.pairs):
      protos = zeroshot.prototypes_from_examples(embs['audio'], labels,
                                                 len(classes))
      metrics[f'{prefix}/zeroshot/image~audio'] = zeroshot.accuracy(
          embs['image'], labels, protos)

    for a, b in self.pairs:
      for q, c in ((a, b), (b, a)):
        for k, r in retrieval.recall_at_k(embs[q], embs[c], ev.recall_ks).items():
          metrics[f'{prefix}/retrieval/{q}->{c}@{k}'] = r
    metrics[f'{prefix}/num_examples'] = len(labels)
    return metrics

  @staticmethod
  def summary(metrics, prefix='test') -> str:
    names = {'image': 'images vs text', 'audio': 'speech vs text',
             'image~audio': 'images vs speech'}
    parts = [f'{names[k]} {100 * metrics[f"{prefix}/zeroshot/{k}"]:.1f}%'
             for k in names if f'{prefix}/zeroshot/{k}' in metrics]
    return 'zero-shot accuracy: ' + ', '.join(parts)

