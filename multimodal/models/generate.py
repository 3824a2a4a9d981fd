"""Fixed-shape, jit-compiled decoding for TextDecoder: greedy, sampling, beam.

Every function takes per-example prompts, right-padded with `pad_id`
([B, P] int; each prompt holds at least one token, normally BOS), and
returns sequences [B, P + max_new_tokens]: the prompt, then up to
`max_new_tokens` generated tokens starting right after each example's own
prompt, then `pad_id`. Generation of an example stops after it emits
`eos_id` (the EOS is kept). `eos_id` and `pad_id` are required keyword
arguments with no defaults: they come from the tokenizer the model was
trained with (`multimodal.data.text.Tokenizer.ids`), never from constants.

Shapes never depend on the data: all examples advance one position per
step of a `jax.lax.while_loop`; an example still inside its prompt has the
prompt's token copied instead of a generated one, and the loop ends when
every example is finished. With `use_cache=True` (the default) each step
runs the decoder on one token against a preallocated KVCache (the prompt is
first run in one pass); `use_cache=False` recomputes the whole sequence
every step, as a slow reference.

Beam search scores a finished hypothesis as log p(generated tokens) / lp
with GNMT's length penalty lp = ((5 + length) / 6) ** alpha, length being
the number of generated tokens including EOS; alpha = 0 ranks by total
log-probability.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from multimodal.models.decoder import TextDecoder


class Decoded(NamedTuple):
  """Output of `greedy` and `sample`.

  tokens: int32 [B, P + max_new_tokens].
  logprob: float32 [B], the model's (untempered) log-probability of the
    generated tokens, EOS included.
  logits: float32 [B, P + max_new_tokens, vocab] when asked for, else None:
    logits[:, j] is the distribution the model gave for token j; rows the
    loop never computed (up to the end of the shortest prompt, and after
    every example finished) are 0.
  """
  tokens: jax.Array
  logprob: jax.Array
  logits: jax.Array | None


class Beams(NamedTuple):
  """Output of `beam_search`, best first along axis 1.

  tokens: int32 [B, beams, P + max_new_tokens].
  scores: float32 [B, beams], length-penalised (see module docstring);
    -inf for slots no hypothesis filled.
  logprob: float32 [B, beams], log-probability of the generated tokens.
  """
  tokens: jax.Array
  scores: jax.Array
  logprob: jax.Array


def length_penalty(length: jax.Array, alpha: float | jax.Array) -> jax.Array:
  """GNMT length penalty ((5 + length) / 6) ** alpha, float32."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def _check(model: TextDecoder, prompt: jax.Array, max_new_tokens: int):
  if prompt.ndim != 2:
    raise ValueError(f'prompt must be [B, P] token ids, got {prompt.shape}.')
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be >= 1, got {max_new_tokens}.')
  total = prompt.shape[1] + max_new_tokens
  if total > model.max_len:
    raise ValueError(f'prompt width {prompt.shape[1]} + max_new_tokens '
                     f'{max_new_tokens} = {total} exceeds the decoder\'s '
                     f'max_len={model.max_len}.')


def _stepper(model: TextDecoder, seq: jax.Array, prompt_width: int,
             memory, memory_mask, use_cache: bool
             ) -> tuple[Callable[..., Any], Any]:
  """(step, state): step(seq, t, state) -> (logits [B, V] for token t + 1,
  state), valid once seq[:, :t + 1] is final."""
  # The steps run inside a while_loop: they rebuild the model there, with
  # new Variables around its arrays, since NNX transforms in the model
  # (nnx.scan over stacked layers) refuse Variables of an enclosing trace.
  graphdef, variables = nnx.split(model)

  def loop_model() -> TextDecoder:
    return nnx.merge(graphdef, jax.tree.map(lambda a: a, variables))

  if not use_cache:
    def full_step(seq, t, state):
      logits = loop_model()(seq, memory, memory_mask)
      return jax.lax.dynamic_index_in_dim(logits, t, 1, keepdims=False), state
    return full_step, None

  cache = model.init_cache(seq.shape[0], seq.shape[1], memory, memory_mask)
  # Prefill: the whole prompt block in one pass. Positions past a short
  # prompt get pad keys here, but each is overwritten by a step before any
  # later query can attend to it.
  _, cache = model.decode(seq[:, :prompt_width], cache, 0)

  def cached_step(seq, t, cache):
    token = jax.lax.dynamic_slice_in_dim(seq, t, 1, axis=1)
    logits, cache = loop_model().decode(token, cache, t)
    return logits[:, 0], cache
  return cached_step, cache


def _prompt_lengths(prompt, pad_id):
  # A prompt of only padding is taken to be one token long.
  return jnp.maximum(jnp.sum(prompt != pad_id, axis=1), 1).astype(jnp.int32)


def _sample_token(logits, key, temperature, top_k):
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(key, logits).astype(jnp.int32)


@functools.partial(nnx.jit, static_argnames=(
    'max_new_tokens', 'top_k', 'greedy', 'use_cache', 'return_logits'))
def _sequential(model, prompt, memory, memory_mask, rng, temperature, eos_id,
                pad_id, *, max_new_tokens, top_k, greedy, use_cache,
                return_logits):
  """The greedy / sampling loop; see `greedy` and `sample`."""
  batch, width = prompt.shape
  total = width + max_new_tokens
  prompt = prompt.astype(jnp.int32)
  prompt_len = _prompt_lengths(prompt, pad_id)
  end = prompt_len + max_new_tokens  # first position past the budget
  seq = jnp.full((batch, total), pad_id, jnp.int32).at[:, :width].set(prompt)
  step, state = _stepper(model, seq, width, memory, memory_mask, use_cache)
  logits_buf = (jnp.zeros((batch, total, model.vocab_size), jnp.float32)
                if return_logits else None)

  def body(carry):
    t, seq, state, done, logprob, logits_buf = carry
    logits, state = step(seq, t, state)
    pos = t + 1
    if greedy:
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      token = _sample_token(logits, jax.random.fold_in(rng, t), temperature,
                            top_k)
    forced = pos < prompt_len
    active = ~forced & ~done
    current = jax.lax.dynamic_index_in_dim(seq, pos, 1, keepdims=False)
    new = jnp.where(forced, current, jnp.where(active, token, pad_id))
    seq = jax.lax.dynamic_update_slice_in_dim(seq, new[:, None], pos, 1)
    chosen = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None],
                                 axis=1)[:, 0]
    logprob = logprob + jnp.where(active, chosen, 0.0)
    done = done | (active & (token == eos_id)) | (pos + 1 >= end)
    if return_logits:
      logits_buf = jax.lax.dynamic_update_slice_in_dim(
          logits_buf, logits[:, None], pos, 1)
    return t + 1, seq, state, done, logprob, logits_buf

  def cond(carry):
    t, done = carry[0], carry[3]
    return (t + 1 < total) & ~jnp.all(done)

  start = jnp.min(prompt_len) - 1
  carry = (start, seq, state, jnp.zeros(batch, bool),
           jnp.zeros(batch, jnp.float32), logits_buf)
  _, seq, _, _, logprob, logits_buf = jax.lax.while_loop(cond, body, carry)
  return Decoded(seq, logprob, logits_buf)


def greedy(model: TextDecoder, prompt: jax.Array, *,
           memory: jax.Array | None = None,
           memory_mask: jax.Array | None = None, max_new_tokens: int,
           eos_id: int, pad_id: int, use_cache: bool = True,
           return_logits: bool = False) -> Decoded:
  """Greedy decoding: the most probable token at every step.

  Args:
    model: the decoder.
    prompt: int [B, P] right-padded prompts, each at least one token.
    memory: encoder tokens [B, M, memory_width] or None.
    memory_mask: bool [B, M] or None (all valid).
    max_new_tokens: generation budget per example (static).
    eos_id: stops an example once generated (the tokenizer's eos; an id
      outside the vocabulary, e.g. -1, never stops).
    pad_id: fills prompts' tails and finished sequences (the tokenizer's
      pad).
    use_cache: incremental decoding with a KVCache; False recomputes the
      whole sequence every step (for testing).
    return_logits: also return every step's logits.

  Returns:
    Decoded (tokens [B, P + max_new_tokens], logprob [B], logits or None).
  """
  _check(model, prompt, max_new_tokens)
  return _sequential(model, prompt, memory, memory_mask, jax.random.key(0),
                     1.0, eos_id, pad_id, max_new_tokens=max_new_tokens,
                     top_k=0, greedy=True, use_cache=use_cache,
                     return_logits=return_logits)


def sample(model: TextDecoder, prompt: jax.Array, rng: jax.Array, *,
           memory: jax.Array | None = None,
           memory_mask: jax.Array | None = None, max_new_tokens: int,
           temperature: float = 1.0, top_k: int = 0, eos_id: int,
           pad_id: int, use_cache: bool = True,
           return_logits: bool = False) -> Decoded:
  """Ancestral sampling from softmax(logits / temperature), top-k filtered.

  Args:
    rng: a PRNG key; step t uses fold_in(rng, t).
    temperature: > 0 (use `greedy` for the zero-temperature limit).
    top_k: sample among the k most probable tokens only (tokens tied with
      the k-th are kept too); 0 disables the filter.
    Others as in `greedy`.

  Returns:
    Decoded; logprob is under the untempered, unfiltered model.
  """
  _check(model, prompt, max_new_tokens)
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f'temperature must be > 0, got {temperature}.')
  if not 0 <= top_k <= model.vocab_size:
    raise ValueError(f'top_k must be in [0, {model.vocab_size}], got '
                     f'{top_k}.')
  return _sequential(model, prompt, memory, memory_mask, rng, temperature,
                     eos_id, pad_id, max_new_tokens=max_new_tokens,
                     top_k=top_k, greedy=False, use_cache=use_cache,
                     return_logits=return_logits)


def _gather_beams(x, index):
  """x [B, W, ...], index int [B, K] -> [B, K, ...]."""
  index = index.reshape(index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


@functools.partial(nnx.jit,
                   static_argnames=('max_new_tokens', 'beam_size', 'use_cache'))
def _beam(model, prompt, memory, memory_mask, alpha, eos_id, pad_id, *,
          max_new_tokens, beam_size, use_cache):
  """Beam search; see `beam_search`."""
  batch, width = prompt.shape
  beams, vocab = beam_size, model.vocab_size
  total = width + max_new_tokens
  prompt = prompt.astype(jnp.int32)
  prompt_len = _prompt_lengths(prompt, pad_id)
  end = prompt_len + max_new_tokens
  seq = jnp.full((batch, beams, total), pad_id, jnp.int32)
  seq = seq.at[:, :, :width].set(prompt[:, None])
  flat = lambda x: x.reshape((batch * beams,) + x.shape[2:])
  repeat = lambda x: None if x is None else jnp.repeat(x, beams, axis=0)
  step, state = _stepper(model, flat(seq), width, repeat(memory),
                         repeat(memory_mask), use_cache)
  best_possible_lp = length_penalty(jnp.asarray(max_new_tokens), alpha)
  # All beams start as copies of the prompt; only the first may expand, or
  # the first step would fill the beam with one hypothesis W times.
  alive_logprob = jnp.where(jnp.arange(beams) == 0, 0.0, -jnp.inf)
  alive_logprob = jnp.broadcast_to(alive_logprob, (batch, beams))
  finished = (seq, jnp.full((batch, beams), -jnp.inf),
              jnp.full((batch, beams), -jnp.inf))  # tokens, scores, logprob

  def body(carry):
    t, seq, state, alive_logprob, finished, done = carry
    logits, state = step(flat(seq), t, state)
    logp = jax.nn.log_softmax(logits).reshape(batch, beams, vocab)
    pos = t + 1
    forced = pos < prompt_len
    active = ~forced & ~done  # [B]: examples extending their beams now

    # The 2W best one-token extensions: at most W of them end in EOS, so
    # at least W remain to continue. As in fairseq, only ends ranked among
    # the best W enter the finished pool; this makes W = 1 greedy decoding.
    total_logp = (alive_logprob[..., None] + logp).reshape(batch, -1)
    top_logp, top_index = jax.lax.top_k(total_logp, 2 * beams)
    parent, token = top_index // vocab, top_index % vocab
    candidates = _gather_beams(seq, parent)
    candidates = jax.lax.dynamic_update_slice_in_dim(
        candidates, token[..., None], pos, axis=2)
    ends = (token == eos_id) | (pos + 1 >= end)[:, None]

    # Finished pool: the best W among the old ones and the new ends.
    length = (pos + 1 - prompt_len)[:, None]
    in_top = jnp.arange(2 * beams)[None] < beams
    score = jnp.where(ends & in_top & active[:, None],
                      top_logp / length_penalty(length, alpha), -jnp.inf)
    new_logp = jnp.where(score > -jnp.inf, top_logp, -jnp.inf)
    pool = [jnp.concatenate(pair, axis=1) for pair in zip(
        finished, (candidates, score, new_logp))]
    best_score, best = jax.lax.top_k(pool[1], beams)
    finished = (_gather_beams(pool[0], best), best_score,
                _gather_beams(pool[2], best))

    # Alive: the best W extensions that did not end.
    alive_logp, alive = jax.lax.top_k(jnp.where(ends, -jnp.inf, top_logp),
                                      beams)
    keep = ~active[:, None]
    parent = jnp.where(keep, jnp.arange(beams)[None],
                       _gather_beams(parent, alive))
    seq = jnp.where(keep[..., None], seq, _gather_beams(candidates, alive))
    alive_logprob = jnp.where(keep, alive_logprob, alive_logp)
    rows = (jnp.arange(batch)[:, None] * beams + parent).reshape(-1)
    state = jax.tree.map(lambda x: x[rows], state)

    # Done when out of budget, or when no alive beam can still beat the
    # worst finished one: for alpha >= 0 an alive beam's final score is at
    # most its log-probability now over the largest length penalty.
    hopeless = alive_logprob[:, 0] / best_possible_lp <= finished[1][:, -1]
    done = done | (active & ((pos + 1 >= end) | hopeless))
    return t + 1, seq, state, alive_logprob, finished, done

  def cond(carry):
    t, done = carry[0], carry[-1]
    return (t + 1 < total) & ~jnp.all(done)

  start = jnp.min(prompt_len) - 1
  carry = (start, seq, state, alive_logprob, finished,
           jnp.zeros(batch, bool))
  finished = jax.lax.while_loop(cond, body, carry)[4]
  return Beams(*finished)


def beam_search(model: TextDecoder, prompt: jax.Array, *,
                memory: jax.Array | None = None,
                memory_mask: jax.Array | None = None, max_new_tokens: int,
                beam_size: int = 4, alpha: float = 0.6,
                eos_id: int, pad_id: int,
                use_cache: bool = True) -> Beams:
  """Beam search with the GNMT length penalty.

  Keeps, per example, `beam_size` alive hypotheses (ranked by
  log-probability; all have the same length) and the `beam_size` best
  finished ones (ranked by length-penalised score). Each step extends the
  alive ones by every token; a hypothesis finishes on EOS (if it ranks among
  the step's best W extensions) or at the budget. With beam_size = 1 and
  alpha = 0 this is greedy decoding. The search stops early once no alive
  hypothesis can still beat the worst finished one.

  Args:
    beam_size: W (static); the vocabulary must have at least 2 tokens.
    alpha: length-penalty exponent, >= 0 (0: no length normalisation).
    Others as in `greedy`.

  Returns:
    Beams (tokens [B, W, P + max_new_tokens], scores [B, W], logprob
    [B, W]), best first.
  """
  _check(model, prompt, max_new_tokens)
  if beam_size < 1:
    raise ValueError(f'beam_size must be >= 1, got {beam_size}.')
  if isinstance(alpha, (int, float)) and alpha < 0:
    raise ValueError(f'alpha must be >= 0 (the early stop relies on it), '
                     f'got {alpha}.')
  return _beam(model, prompt, memory, memory_mask, alpha, eos_id, pad_id,
               max_new_tokens=max_new_tokens, beam_size=beam_size,
               use_cache=use_cache)
