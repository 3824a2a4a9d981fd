"""Contrastive losses over a batch of paired embeddings (reference versions)
and the registry kind that names them ('contrastive_loss').

Both take row-aligned embeddings a, b: [N, E] (row i of a pairs with row i of
b), usually L2-normalised, and compute in float32 whatever their dtype. These
are the plain single-device implementations; sharded variants must match them.

A contrastive model's `loss` config names a registered ContrastiveLoss:
'sigmoid' (SigLIP; a learned bias per pair) or 'softmax' (CLIP), or one of
your own from a module listed in config.imports:

    @registry.register('contrastive_loss', 'my_loss')
    class MyLoss(losses.ContrastiveLoss):
      learns_bias = True
      def __call__(self, a, b, scale, bias): ...   # float32 scalar

With the batch split over devices the model calls `sharded` (by default the
same function on the global arrays, which jit partitions by gathering what
it needs); override it with a collective version when that matters.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from multimodal import registry
from multimodal import sharded_losses


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


class ContrastiveLoss:
  """A loss over one pair's embeddings, named by a contrastive model's
  `loss`.

  learns_bias: the model keeps a learned float32 bias per pair
    (initialised to its bias_init) and passes it; else bias is None.
  """
  learns_bias: bool = False

  def __call__(self, a: jax.Array, b: jax.Array, scale: jax.Array,
               bias: jax.Array | None) -> jax.Array:
    """a, b: [N, E] row-aligned embeddings; scale, bias: float32 scalars.
    Returns the float32 scalar loss."""
    raise NotImplementedError

  def sharded(self, a, b, scale, bias, *, mesh, batch_axes) -> jax.Array:
    """The same loss with a, b's batch split over `batch_axes` of `mesh`."""
    del mesh, batch_axes
    return self(a, b, scale, bias)


@registry.register('contrastive_loss', 'softmax')
class Softmax(ContrastiveLoss):
  """CLIP: symmetric cross-entropy (softmax_contrastive_loss)."""

  def __call__(self, a, b, scale, bias):
    del bias
    return softmax_contrastive_loss(a, b, scale)

  def sharded(self, a, b, scale, bias, *, mesh, batch_axes):
    del bias
    return sharded_losses.softmax_loss_sharded(a, b, scale, mesh=mesh,
                                               batch_axes=batch_axes)


@registry.register('contrastive_loss', 'sigmoid')
class Sigmoid(ContrastiveLoss):
  """SigLIP: a binary task per (a_i, b_j) (sigmoid_contrastive_loss)."""
  learns_bias = True

  def __call__(self, a, b, scale, bias):
    return sigmoid_contrastive_loss(a, b, scale, bias)

  def sharded(self, a, b, scale, bias, *, mesh, batch_axes):
    return sharded_losses.sigmoid_loss_sharded(a, b, scale, bias, mesh=mesh,
                                               batch_axes=batch_axes)
