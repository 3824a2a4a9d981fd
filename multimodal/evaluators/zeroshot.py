"""Zero-shot classification against class prototypes (text or another modality)."""
from __future__ import annotations

import numpy as np

from multimodal import evaluators
from multimodal import registry


def fill_prompts(templates, class_names) -> list[list[str]]:
  """[num_classes][num_templates] prompts. A template holds the class name
  as {} or {name} and may hold its index as {index}, e.g. 'a photo of a {}'.
  """
  return [[t.format(name, name=name, index=i) for t in templates]
          for i, name in enumerate(class_names)]


def normalize(x: np.ndarray, axis=-1) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def prototypes_from_prompts(prompt_embeddings: np.ndarray) -> np.ndarray:
  """[C, T, E] embeddings of T templates per class -> [C, E] (CLIP ensembling)."""
  return normalize(normalize(prompt_embeddings).mean(axis=1))


def prototypes_from_examples(embeddings: np.ndarray, labels: np.ndarray,
                             num_classes: int) -> np.ndarray:
  """Mean embedding per class: [N, E], int [N] -> [C, E].

  Used for cross-modal zero-shot: each class is described by examples of the
  other modality (e.g. the spoken word), never by training on this modality's
  labels. Raises if a class has no example.
  """
  counts = np.bincount(labels, minlength=num_classes)
  if (counts == 0).any():
    raise ValueError(f'Classes {np.flatnonzero(counts == 0).tolist()} have no '
                     'example to build a prototype from.')
  sums = np.zeros((num_classes, embeddings.shape[1]), np.float64)
  np.add.at(sums, labels, embeddings)
  return normalize(sums / counts[:, None]).astype(np.float32)


def accuracy(embeddings: np.ndarray, labels: np.ndarray,
             prototypes: np.ndarray) -> float:
  """Top-1 accuracy of nearest-prototype (cosine) classification."""
  return float((np.argmax(embeddings @ prototypes.T, axis=1) == labels).mean())


@registry.register('evaluator', 'zeroshot')
class ZeroShot(evaluators.Evaluator):
  """Zero-shot classification of `media` against class prompts embedded by
  the tower of text field `text` (CLIP prompt ensembling).

  Args (config.evals entry):
    media: the embedded field classified, e.g. 'image'.
    text: the text field whose tower embeds the prompts, e.g. 'image_text'.
    prompts: templates, e.g. ('a photo of a {}', 'a drawing of a {}').
    class_names: the classes, index = the integer `labels` field's value;
      or () to take them from `label_text` instead.
    labels: the integer label field (with class_names).
    label_text: a text field of the data holding each record's class name
      (e.g. a 'class_name' column mapped in config.input.fields): classes
      are its distinct values in the eval split.
    name: metric name, default 'zeroshot/<media>'.
  """

  def __init__(self, task, media, text, prompts=('{}',), class_names=(),
               labels='label', label_text=None, name=None):
    missing = [f for f in (media, text) if f not in task.fields]
    if missing:
      raise ValueError(f'zeroshot names {missing}, which the model does not '
                       f'embed (it embeds {task.fields}).')
    if bool(class_names) == bool(label_text):
      raise ValueError('zeroshot needs class_names (with an integer label '
                       'field) or label_text (a text field naming each '
                       'record\'s class), not both.')
    if not prompts:
      raise ValueError('zeroshot needs at least one prompt template.')
    self.media, self.text, self.prompts = media, text, tuple(prompts)
    self.class_names = tuple(class_names)
    self.labels, self.label_text = labels, label_text
    self.fields = (label_text,) if label_text else (labels,)
    self.name = name or f'zeroshot/{media}'

  def __call__(self, outputs, ctx):
    if self.label_text:
      names = [ctx.tokenizer.decode(t) for t in outputs[self.label_text]]
      classes = sorted(set(names))
      index = {c: i for i, c in enumerate(classes)}
      labels = np.array([index[n] for n in names])
    else:
      classes, labels = list(self.class_names), outputs[self.labels]
      if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f'{self.name}: labels range {labels.min()}..'
                         f'{labels.max()} but {len(classes)} class_names.')
    prompts = fill_prompts(self.prompts, classes)
    text = ctx.embed_texts(self.text, [p for group in prompts for p in group])
    protos = prototypes_from_prompts(
        np.asarray(text).reshape(len(classes), len(self.prompts), -1))
    return {self.name: accuracy(outputs[f'embedding/{self.media}'], labels,
                                protos)}


@registry.register('evaluator', 'zeroshot_by_example')
class ZeroShotByExample(evaluators.Evaluator):
  """Classifies `media` against classes described by another modality: each
  class's prototype is the mean embedding of the eval split's `prototypes`
  examples of that class (e.g. images vs the spoken words).

  Args: media, prototypes (embedded fields), labels (integer label field),
  name (default 'zeroshot/<media>~<prototypes>').
  """

  def __init__(self, task, media, prototypes, labels='label', name=None):
    missing = [f for f in (media, prototypes) if f not in task.fields]
    if missing:
      raise ValueError(f'zeroshot_by_example names {missing}, which the '
                       f'model does not embed (it embeds {task.fields}).')
    self.media, self.protos, self.labels = media, prototypes, labels
    self.fields = (labels,)
    self.name = name or f'zeroshot/{media}~{prototypes}'

  def __call__(self, outputs, ctx):
    del ctx
    labels = outputs[self.labels]
    protos = prototypes_from_examples(outputs[f'embedding/{self.protos}'],
                                      labels, int(labels.max()) + 1)
    return {self.name: accuracy(outputs[f'embedding/{self.media}'], labels,
                                protos)}
