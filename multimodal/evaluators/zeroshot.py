"""Zero-shot classification against class prototypes (text or another modality)."""
from __future__ import annotations

import numpy as np


def fill_prompts(templates, class_names) -> list[list[str]]:
  """[num_classes][num_templates] prompts; templates use {word} and {digit}."""
  return [[t.format(word=name, digit=i) for t in templates]
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
