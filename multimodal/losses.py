"""Contrastive losses over a batch of paired embeddings (reference versions).

Both take row-aligned embeddings a, b: [N, E] (row i of a pairs with row i of
b), usually L2-normalised, and compute in float32 whatever their dtype. These
are the plain single-device implementations; sharded variants must match them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _logits(a: jax.Array, b: jax.Array, scale) -> jax.Array:
  """scale * a @ b.T in float32: [N, N]."""
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  sims = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.asarray(scale, jnp.float32) * sims


def softmax_contrastive_loss(a: jax.Array, b: jax.Array, scale) -> jax.Array:
  """CLIP loss: symmetric cross-entropy, the positives on the diagonal.

  Args:
    a: [N, E] embeddings.
    b: [N, E] embeddings; b[i] is a[i]'s positive, all other rows negatives.
    scale: positive scalar multiplying the similarities (1 / temperature).

  Returns:
    float32 scalar: mean over both directions (a->b and b->a) of the mean
    per-example cross-entropy.
  """
  logits = _logits(a, b, scale)
  a_to_b = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=1)))
  b_to_a = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
  return 0.5 * (a_to_b + b_to_a)


def sigmoid_contrastive_loss(a: jax.Array, b: jax.Array, scale,
                             bias) -> jax.Array:
  """SigLIP loss: an independent binary task for every (a_i, b_j) pair.

  Args:
    a: [N, E] embeddings.
    b: [N, E] embeddings; (a[i], b[i]) positive, (a[i], b[j != i]) negative.
    scale: positive scalar multiplying the similarities.
    bias: scalar added to the scaled similarities.

  Returns:
    float32 scalar: -sum_ij log_sigmoid(label_ij * (scale * a_i.b_j + bias))
    / N with label +1 on the diagonal and -1 elsewhere.
  """
  logits = _logits(a, b, scale) + jnp.asarray(bias, jnp.float32)
  n = logits.shape[0]
  labels = 2.0 * jnp.eye(n, dtype=jnp.float32) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / n
