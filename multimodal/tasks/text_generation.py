"""Text-generation plumbing shared by the captioning and VQA tasks.

Every helper takes the special ids as a keyword argument `ids`
(multimodal.data.text.TokenIds, i.e. `Tokenizer.ids` of the tokenizer the
text fields were made with). A text field is int32 [B, L] holding pieces,
eos, then pads. A decoder sequence is a prompt (bos, or bos + question)
followed by the target text (with its eos); the loss covers the target
tokens only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from multimodal.data.text import TokenIds
from multimodal.models import generate


def bos_prompt(text: jax.Array | None = None, *, ids: TokenIds,
               batch: int | None = None) -> jax.Array:
  """int32 [B, 1 + L]: bos then `text` [B, L] (or just bos [batch, 1])."""
  if text is None:
    return jnp.full((batch, 1), ids.bos, jnp.int32)
  bos = jnp.full((text.shape[0], 1), ids.bos, jnp.int32)
  return jnp.concatenate([bos, text.astype(jnp.int32)], axis=1)


def lengths(tokens: jax.Array, *, ids: TokenIds) -> jax.Array:
  """int32 [B]: non-pad tokens per row (rows are right-padded)."""
  return jnp.sum(tokens != ids.pad, axis=1).astype(jnp.int32)


def join(prompt: jax.Array, target: jax.Array, *, ids: TokenIds
         ) -> jax.Array:
  """Each prompt's tokens, then its target's, then pads: int32 [B, P + T].

  Args:
    prompt: int [B, P], right-padded, at least one token per row.
    target: int [B, T], right-padded.
  """
  plen = lengths(prompt, ids=ids)[:, None]
  tlen = lengths(target, ids=ids)[:, None]
  width_p, width_t = prompt.shape[1], target.shape[1]
  pos = jnp.arange(width_p + width_t)[None]
  from_prompt = jnp.take_along_axis(
      prompt, jnp.broadcast_to(jnp.minimum(pos, width_p - 1),
                               (prompt.shape[0], pos.shape[1])), axis=1)
  from_target = jnp.take_along_axis(
      target, jnp.broadcast_to(jnp.clip(pos - plen, 0, width_t - 1),
                               (target.shape[0], pos.shape[1])), axis=1)
  tokens = jnp.where(pos < plen, from_prompt, from_target)
  return jnp.where(pos < plen + tlen, tokens, ids.pad).astype(jnp.int32)


def teacher_forcing(prompt: jax.Array, target: jax.Array, max_len: int, *,
                    ids: TokenIds):
  """Decoder inputs and labels for learning target given prompt.

  Args:
    prompt: int [B, P] right-padded (e.g. `bos_prompt(question)`).
    target: int [B, T] right-padded target text, eos included.
    max_len: the decoder's max_len; longer sequences are cut there.
    ids: the tokenizer's special ids (pad).

  Returns:
    inputs int32 [B, W], labels int32 [B, W] (inputs shifted by one),
    weights float32 [B, W] (1 on target tokens), truncated bool [B] (the
    example lost target tokens to the cut); W = min(P + T - 1, max_len).
  """
  seq = join(prompt, target, ids=ids)
  width = min(seq.shape[1] - 1, max_len)
  inputs, labels = seq[:, :width], seq[:, 1:width + 1]
  plen = lengths(prompt, ids=ids)[:, None]
  tlen = lengths(target, ids=ids)[:, None]
  pos = jnp.arange(width)[None] + 1  # the position each label sits at
  weights = ((pos >= plen) & (pos < plen + tlen)).astype(jnp.float32)
  truncated = (plen + tlen - 1 > width)[:, 0]
  return inputs, labels, weights, truncated


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """(mean token cross-entropy, token accuracy), float32 scalars, over the
  tokens with weight 1. logits float [B, W, V]; labels int [B, W]."""
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  total = jnp.maximum(jnp.sum(weights), 1.0)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return jnp.sum(losses * weights) / total, jnp.sum(correct * weights) / total


def generate_tokens(decoder, prompt: jax.Array, memory: jax.Array,
                    memory_mask: jax.Array, evals, *, ids: TokenIds
                    ) -> jax.Array:
  """int32 [B, P + max_new_tokens]: greedy (beam_size 1) or the best beam.

  `evals` is config.decoding: max_new_tokens, beam_size, alpha (the beam
  length penalty). Generation stops at `ids.eos` and pads with `ids.pad`.
  """
  max_new_tokens, beam_size, alpha = (evals.max_new_tokens, evals.beam_size,
                                      evals.alpha)
  if beam_size > 1:
    return generate.beam_search(
        decoder, prompt, memory=memory, memory_mask=memory_mask,
        max_new_tokens=max_new_tokens, beam_size=beam_size,
        alpha=alpha, eos_id=ids.eos, pad_id=ids.pad).tokens[:, 0]
  return generate.greedy(decoder, prompt, memory=memory,
                         memory_mask=memory_mask,
                         max_new_tokens=max_new_tokens, eos_id=ids.eos,
                         pad_id=ids.pad).tokens


def continuations(tokens: np.ndarray, prompt: np.ndarray, tokenizer, *,
                  ids: TokenIds) -> list[str]:
  """The generated text after each row's own prompt, up to eos.

  tokens: int [B, P + N] generated sequences; prompt: int [B, P] the
  right-padded prompts they started from.
  """
  plen = np.sum(prompt != ids.pad, axis=1)
  return [tokenizer.decode(row[p:]) for row, p in zip(tokens, plen)]


def references(refs: np.ndarray, tokenizer, *, ids: TokenIds
               ) -> list[list[str]]:
  """int [B, R, L] reference ids (all-pad rows unused) -> B lists of texts."""
  return [[tokenizer.decode(r) for r in example if np.any(r != ids.pad)]
          for example in refs]


def check_fits(prompt_width: int, max_new_tokens: int, max_len: int,
               what: str) -> None:
  """Clear error when generation cannot fit the decoder's positions."""
  if prompt_width + max_new_tokens > max_len:
    raise ValueError(
        f'{what}: a prompt of {prompt_width} tokens plus max_new_tokens='
        f'{max_new_tokens} exceeds the decoder max_len={max_len}; raise '
        'config.model.decoder.max_len or lower config.decoding.max_new_tokens '
        '(or config.input.max_text_len).')
