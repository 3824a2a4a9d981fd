"""Contrastive losses over a batch sharded across devices.

Both losses take row-aligned embeddings a, b: [N, E] (any float dtype; global
arrays whose batch dimension is split over the mesh axes `batch_axes`) and
return the same float32 scalar, with the same gradients, as the single-device
references in `multimodal.losses`. They compute in float32 whatever the input
dtype; gradients come back in the inputs' dtypes.

- `sigmoid_loss_sharded` (SigLIP) never gathers the batch: each device keeps
  its block of `a` and passes its block of `b` around a ring of the D batch
  shards with `ppermute`, so per-device memory is O(n * n + n * E) for the
  local batch n = N / D, whatever D is. The backward pass is a second ring
  (custom VJP) that carries each b-block's gradient along with it, because
  letting autodiff differentiate the forward loop would save every visiting
  block (and its logits) as residuals, i.e. memory growing with D again.
- `softmax_loss_sharded` (CLIP) all-gathers the other modality's features,
  since every row's softmax needs all N columns; each device builds only its
  own [n, N] rows of logits, so memory grows with N but not quadratically.

The ring is over the flattened product of `batch_axes` (row-major, the same
order in which `P(batch_axes)` lays out the batch blocks).
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

DEFAULT_BATCH_AXES = ('data', 'fsdp')
# The references in multimodal.losses use HIGHEST; match them by default so
# that the sharded losses are the same function, not just close on CPU.
_DEFAULT_PRECISION = jax.lax.Precision.HIGHEST


def _batch_shards(a, b, mesh, batch_axes: Sequence[str]) -> tuple[str, ...]:
  """Checks shapes and mesh; returns batch_axes as a tuple.

  Raises:
    ValueError: mismatched or non-2D inputs, a batch axis the mesh lacks, or
      a global batch that does not divide over the batch shards.
  """
  axes = tuple(batch_axes)
  if not axes:
    raise ValueError('batch_axes must name at least one mesh axis.')
  missing = [ax for ax in axes if ax not in mesh.shape]
  if missing:
    raise ValueError(
        f'batch_axes {axes} name axes {missing} that the mesh '
        f'{dict(mesh.shape)} does not have.')
  if a.ndim != 2 or a.shape != b.shape:
    raise ValueError(
        f'Expected a and b of the same shape [N, E]; got {a.shape} and '
        f'{b.shape}.')
  num_shards = math.prod(mesh.shape[ax] for ax in axes)
  n = a.shape[0]
  if n % num_shards:
    lower = n // num_shards * num_shards
    upper = lower + num_shards
    fits = f'{lower} or {upper}' if lower else f'{upper}'
    raise ValueError(
        f'Global batch {n} does not divide over the {num_shards} batch shards '
        f'(mesh axes {axes} of mesh {dict(mesh.shape)}). Use a multiple of '
        f'{num_shards}, e.g. {fits}.')
  return axes


def _ring_perm(num_shards: int) -> list[tuple[int, int]]:
  """Device i sends to i + 1: one cycle through all shards, any layout."""
  return [(i, (i + 1) % num_shards) for i in range(num_shards)]


def _as_f32(*xs):
  return tuple(jnp.asarray(x, jnp.float32) for x in xs)


# ----------------------------------------------------------------------------
# Sigmoid (SigLIP) loss: ring over b-blocks.
# ----------------------------------------------------------------------------


def _sigmoid_block(a, b_blk, scale, bias, own_block, precision):
  """Similarities, labels and signed logits of one [n, n] block.

  Args:
    a: [n, E] float32 local rows.
    b_blk: [n, E] float32 block of columns.
    scale, bias: float32 scalars.
    own_block: bool scalar (may be traced): True for the device's own block
      (label +1 on the diagonal, -1 elsewhere), False for a visiting block
      (all labels -1).
    precision: matmul precision.

  Returns:
    (sims, labels, labels * (scale * sims + bias)), each [n, n] float32.
  """
  sims = jnp.matmul(a, b_blk.T, precision=precision)
  z = scale * sims + bias
  eye = jnp.eye(a.shape[0], dtype=bool)
  labels = jnp.where(own_block & eye, 1.0, -1.0).astype(jnp.float32)
  return sims, labels, labels * z


def _ring_loop(num_shards, axes, body, init):
  """Runs body(step, b_cur, carry) -> carry over the D ring positions.

  At step r the device holds the b-block from r hops back (its own at r=0).
  The next block is sent before `body` uses the current one: the transfer
  does not depend on this step's matmuls, so the scheduler may overlap them
  (the block sent in the last step goes unused; one extra [n, E] transfer
  buys a single loop with no peeled steps, which keeps buffer lifetimes, and
  so peak memory, the same for every D).
  """
  perm = _ring_perm(num_shards)

  def step(r, state):
    b_cur, carry = state
    b_next = (jax.lax.ppermute(b_cur, axes, perm) if num_shards > 1
              else b_cur)
    return b_next, body(r, b_cur, carry)

  b, carry = init
  return jax.lax.fori_loop(0, num_shards, step, (b, carry))[1]


def _varying_zeros(shape, axes):
  """float32 zeros typed as varying over axes, like the loop's outputs."""
  return jax.lax.pcast(jnp.zeros(shape, jnp.float32), axes, to='varying')


def _sigmoid_fwd_local(a, b, scale, bias, *, axes, num_shards, global_n,
                       precision):
  """Per-device forward.

  Args:
    a, b: [n, E] float32 local blocks (n = N / D).
    scale, bias: float32 scalars.

  Returns:
    float32 scalar: the global loss (psum over devices / N).
  """

  def body(r, b_cur, acc):
    _, _, yz = _sigmoid_block(a, b_cur, scale, bias, r == 0, precision)
    return acc - jnp.sum(jax.nn.log_sigmoid(yz))

  loss = _ring_loop(num_shards, axes, body, (b, _varying_zeros((), axes)))
  return jax.lax.psum(loss, axes) / global_n


def _sigmoid_bwd_local(a, b, scale, bias, ct, *, axes, num_shards, global_n,
                       precision):
  """Per-device backward ring.

  With z_ij = scale * a_i.b_j + bias and L = -sum log_sigmoid(y_ij z_ij) / N,
  dL/dz_ij = -y_ij * sigmoid(-y_ij z_ij) / N =: g_ij, and
  da_i = scale * sum_j g_ij b_j, db_j = scale * sum_i g_ij a_i,
  dscale = sum g_ij a_i.b_j, dbias = sum g_ij.
  db_j needs every device's a, so each b-block travels with an accumulator of
  its gradient; after D hops (one per step) the accumulator is back home.

  Args:
    a, b: [n, E] float32 local blocks; scale, bias, ct: float32 scalars (ct is
      the cotangent of the loss).

  Returns:
    (da [n, E], db [n, E], dscale, dbias), all float32.
  """
  coef = -ct / global_n
  perm = _ring_perm(num_shards)

  def body(r, b_cur, carry):
    db_cur, da, dscale, dbias = carry
    sims, labels, yz = _sigmoid_block(a, b_cur, scale, bias, r == 0,
                                      precision)
    g = coef * labels * jax.nn.sigmoid(-yz)  # dL/dz, [n, n]
    da = da + scale * jnp.matmul(g, b_cur, precision=precision)
    db_cur = db_cur + scale * jnp.matmul(g.T, a, precision=precision)
    if num_shards > 1:  # the gradient travels on with its block
      db_cur = jax.lax.ppermute(db_cur, axes, perm)
    return (db_cur, da, dscale + jnp.sum(g * sims), dbias + jnp.sum(g))

  zeros = _varying_zeros(a.shape, axes)
  db, da, dscale, dbias = _ring_loop(
      num_shards, axes, body,
      (b, (zeros, zeros, _varying_zeros((), axes), _varying_zeros((), axes))))
  return da, db, jax.lax.psum(dscale, axes), jax.lax.psum(dbias, axes)


def sigmoid_loss_sharded(a: jax.Array, b: jax.Array, scale, bias, *,
                         mesh: jax.sharding.Mesh,
                         batch_axes: Sequence[str] = DEFAULT_BATCH_AXES,
                         precision=_DEFAULT_PRECISION) -> jax.Array:
  """SigLIP loss with the batch sharded over `batch_axes`, via a ring.

  Equals `multimodal.losses.sigmoid_contrastive_loss(a, b, scale, bias)` in
  value and gradients (w.r.t. a, b, scale and bias), but never gathers the
  batch: per-device peak memory depends on the local batch N / D only.

  Args:
    a: [N, E] embeddings, any float dtype, batch-sharded (or not: shard_map
      reshards) over `batch_axes`.
    b: [N, E] embeddings; (a[i], b[i]) positive, every other pair negative.
    scale: scalar multiplying the similarities.
    bias: scalar added to the scaled similarities.
    mesh: the device mesh; must contain every axis in `batch_axes`. Other mesh
      axes see replicated inputs and do redundant work.
    batch_axes: mesh axes the batch dimension is split over; the ring runs
      over their flattened product.
    precision: matmul precision (HIGHEST, as in the reference, by default).

  Returns:
    float32 scalar, replicated.

  Raises:
    ValueError: if N does not divide over the batch shards, or bad shapes.
  """
  axes = _batch_shards(a, b, mesh, batch_axes)
  num_shards = math.prod(mesh.shape[ax] for ax in axes)
  kw = dict(axes=axes, num_shards=num_shards, global_n=a.shape[0],
            precision=precision)
  batch, rep = P(axes), P()
  fwd_map = jax.shard_map(
      lambda a, b, s, t: _sigmoid_fwd_local(a, b, s, t, **kw), mesh=mesh,
      in_specs=(batch, batch, rep, rep), out_specs=rep)
  bwd_map = jax.shard_map(
      lambda a, b, s, t, ct: _sigmoid_bwd_local(a, b, s, t, ct, **kw),
      mesh=mesh, in_specs=(batch, batch, rep, rep, rep),
      out_specs=(batch, batch, rep, rep))

  @jax.custom_vjp
  def loss_fn(a, b, scale, bias):
    return fwd_map(a, b, scale, bias)

  def loss_fwd(a, b, scale, bias):
    # Residuals are the (sharded) inputs only; the backward ring recomputes
    # each block's logits instead of storing D of them.
    return fwd_map(a, b, scale, bias), (a, b, scale, bias)

  def loss_bwd(res, ct):
    return bwd_map(*res, ct)

  loss_fn.defvjp(loss_fwd, loss_bwd)
  # Cast outside the custom VJP: autodiff of the cast hands back gradients in
  # the caller's dtypes, while the VJP itself is all float32.
  return loss_fn(*_as_f32(a, b, scale, bias))


# ----------------------------------------------------------------------------
# Softmax (CLIP) loss: local rows against gathered columns.
# ----------------------------------------------------------------------------


def _softmax_local(a, b, scale, *, axes, global_n, precision):
  """Per-device summed cross-entropy of the local rows, both directions.

  Device k holds rows k*n .. k*n+n-1 of a and b (flattened index over axes,
  the same order `all_gather(..., tiled=True)` concatenates in), so the
  positive column of local row i is global column k*n + i, i.e. the matching
  local row of the other modality.

  Returns:
    float32 scalar: the global mean loss (psum over devices / 2N).
  """
  a_all = jax.lax.all_gather(a, axes, tiled=True)  # [N, E]
  b_all = jax.lax.all_gather(b, axes, tiled=True)  # [N, E]
  # Positive logit straight from the local pair: no [n, N] gather needed, and
  # it is the same number as logits[i, k*n + i].
  pos = scale * jnp.sum(a * b, axis=-1)  # [n]

  def cross_entropy_sum(rows, cols_all):
    logits = scale * jnp.matmul(rows, cols_all.T, precision=precision)
    return jnp.sum(jax.nn.logsumexp(logits, axis=-1) - pos)

  total = cross_entropy_sum(a, b_all) + cross_entropy_sum(b, a_all)
  return jax.lax.psum(total, axes) / (2 * global_n)


def softmax_loss_sharded(a: jax.Array, b: jax.Array, scale, *,
                         mesh: jax.sharding.Mesh,
                         batch_axes: Sequence[str] = DEFAULT_BATCH_AXES,
                         precision=_DEFAULT_PRECISION) -> jax.Array:
  """CLIP loss with the batch sharded over `batch_axes`.

  Equals `multimodal.losses.softmax_contrastive_loss(a, b, scale)` in value
  and gradients. Each device gathers both modalities' features ([N, E] each)
  and computes only its own rows of the logits in each direction ([n, N] for
  a->b and for b->a). Autodiff turns the gathers into reduce-scatters.

  Args:
    a: [N, E] embeddings, any float dtype, batch-sharded over `batch_axes`.
    b: [N, E] embeddings; b[i] is a[i]'s positive.
    scale: scalar multiplying the similarities (1 / temperature).
    mesh: the device mesh; must contain every axis in `batch_axes`.
    batch_axes: mesh axes the batch dimension is split over.
    precision: matmul precision (HIGHEST, as in the reference, by default).

  Returns:
    float32 scalar, replicated.

  Raises:
    ValueError: if N does not divide over the batch shards, or bad shapes.
  """
  axes = _batch_shards(a, b, mesh, batch_axes)
  global_n = a.shape[0]
  batch, rep = P(axes), P()
  local = jax.shard_map(
      lambda a, b, s: _softmax_local(a, b, s, axes=axes, global_n=global_n,
                                     precision=precision),
      mesh=mesh, in_specs=(batch, batch, rep), out_specs=rep)
  return local(*_as_f32(a, b, scale))
