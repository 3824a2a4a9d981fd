"""Tests for the text decoder, its KV cache, and greedy/sampling/beam decoding.

One tiny decoder serves every test; numeric checks compare decoding paths
against each other and against brute force on the uncached forward pass.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from multimodal import registry
from multimodal.models import LOGICAL_AXES, build_model
from multimodal.models import generate

V = 13
CONFIG = dict(name='text_decoder', vocab_size=V, max_len=12, width=16,
              depth=2, num_heads=2, mlp_ratio=2, memory_width=8)
# Special ids as the built-in tokenizer has them; generation takes them as
# arguments (from Tokenizer.ids in the tasks).
PAD, EOS = 0, 3
# Right-padded prompts of lengths 3, 1 and 4 (BOS = 2, pad = 0).
PROMPT = jnp.array([[2, 5, 6, 0], [2, 0, 0, 0], [2, 7, 8, 9]], jnp.int32)
PROMPT_LEN = np.array([3, 1, 4])
NEW = 5
MEMORY = jax.random.normal(jax.random.key(1), (3, 4, 8))
MEMORY_MASK = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)


pytestmark = pytest.mark.usefixtures('fast_compiles')


@functools.lru_cache(maxsize=None)
def _decoder(**kw):
  """A built (cached, so never mutate it) tiny decoder."""
  return build_model(dict(CONFIG, **kw), rngs=nnx.Rngs(0))


@nnx.jit
def _forward(model, tokens, memory=None, memory_mask=None):
  # One compile per shape; eager ops would each compile separately.
  return model(tokens, memory, memory_mask)


@nnx.jit
def _decode(model, tokens, cache, position):
  return model.decode(tokens, cache, position)


def _greedy(eos_id=EOS, use_cache=True):
  return generate.greedy(_decoder(), PROMPT, memory=MEMORY,
                         memory_mask=MEMORY_MASK, max_new_tokens=NEW,
                         eos_id=eos_id, pad_id=PAD, use_cache=use_cache,
                         return_logits=True)


@functools.lru_cache(maxsize=None)
def _greedy_cached(eos_id=-1):
  # eos_id = -1 is never generated, so all NEW tokens are.
  return _greedy(eos_id)


def _check_prompts_kept(tokens):
  tokens = np.asarray(tokens)
  for b, n in enumerate(PROMPT_LEN):
    np.testing.assert_array_equal(tokens[b, :n], PROMPT[b, :n])


# ------------------------------------------------------------- model ---


@pytest.mark.parametrize('tie', [True, False])
def test_logits_shape_dtype_and_axis_names(tie):
  config = dict(CONFIG, tie_embeddings=tie, dtype=jnp.bfloat16)
  model = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  logits = jax.eval_shape(lambda s: nnx.merge(graphdef, s)(PROMPT, MEMORY),
                          state)
  assert logits.shape == (3, 4, V) and logits.dtype == jnp.float32
  assert (model.head is None) == tie
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata().get('out_sharding')
    assert names is not None and len(names) == var.ndim, (path, names)
    assert set(names) <= set(LOGICAL_AXES) | {None}, (path, names)
  assert registry.get('model', 'text_decoder') is type(model)


def test_causal_and_memory_mask():
  model = _decoder()
  tokens = jnp.array([[2, 5, 6, 7, 8, 9]] * 3, jnp.int32)
  base = _forward(model, tokens, MEMORY, MEMORY_MASK)
  later = _forward(model, tokens.at[:, 4:].set(1), MEMORY, MEMORY_MASK)
  np.testing.assert_allclose(base[:, :4], later[:, :4], atol=1e-6)
  assert not np.allclose(base[:, 4:], later[:, 4:])
  # Masked memory has no effect; valid memory does.
  noise = jax.random.normal(jax.random.key(7), MEMORY.shape)
  masked_changed = jnp.where(MEMORY_MASK[..., None], MEMORY, noise)
  np.testing.assert_allclose(
      _forward(model, tokens, masked_changed, MEMORY_MASK), base, atol=1e-6)
  valid_changed = jnp.where(MEMORY_MASK[..., None], noise, MEMORY)
  changed = _forward(model, tokens, valid_changed, MEMORY_MASK)
  assert not np.allclose(changed[:2], base[:2], atol=1e-4)
  # Example 2 has no valid memory: the same as no memory at all.
  np.testing.assert_allclose(_forward(model, tokens)[2], base[2], atol=1e-6)
  assert np.all(np.isfinite(base))


@pytest.mark.parametrize('with_memory', [True, False])
def test_decode_in_chunks_matches_forward(with_memory):
  memory, mask = (MEMORY, MEMORY_MASK) if with_memory else (None, None)
  tokens = jnp.array([[2, 5, 6, 7, 8, 9]] * 3, jnp.int32)
  np.testing.assert_allclose(
      _decode_in_chunks(_decoder(), tokens, memory, mask),
      _forward(_decoder(), tokens, memory, mask), atol=1e-5)


def _decode_in_chunks(model, tokens, memory, mask):
  """Logits of a 3-token prompt chunk, then one token at a time."""
  cache = model.init_cache(3, 8, memory, mask)
  got, cache = _decode(model, tokens[:, :3], cache, 0)
  steps = [got]
  for t in range(3, tokens.shape[1]):
    logits, cache = _decode(model, tokens[:, t:t + 1], cache, t)
    steps.append(logits)
  return jnp.concatenate(steps, 1)


def test_errors():
  with pytest.raises(ValueError, match='max_len'):
    _decoder()(jnp.ones((1, 13), jnp.int32))
  with pytest.raises(ValueError, match='cross_attention=False'):
    _decoder(cross_attention=False)(PROMPT, MEMORY)
  with pytest.raises(ValueError, match='exceeds'):
    generate.greedy(_decoder(), PROMPT, max_new_tokens=9, eos_id=EOS,
                    pad_id=PAD)
  with pytest.raises(ValueError, match='alpha'):
    generate.beam_search(_decoder(), PROMPT, max_new_tokens=2, alpha=-1.0,
                         eos_id=EOS, pad_id=PAD)


# ---------------------------------------------------------- decoding ---


def test_greedy_with_cache_equals_full_recompute():
  cached, full = _greedy_cached(), _greedy(eos_id=-1, use_cache=False)
  np.testing.assert_array_equal(cached.tokens, full.tokens)
  np.testing.assert_allclose(cached.logits, full.logits, atol=1e-5)
  np.testing.assert_allclose(cached.logprob, full.logprob, atol=1e-5)
  tokens, logits = np.asarray(cached.tokens), np.asarray(cached.logits)
  assert tokens.shape == (3, 4 + NEW)
  _check_prompts_kept(tokens)
  for b, n in enumerate(PROMPT_LEN):
    generated = slice(n, n + NEW)
    # Every generated token is the argmax of the logits that produced it.
    np.testing.assert_array_equal(tokens[b, generated],
                                  logits[b, generated].argmax(-1))
    assert np.all(tokens[b, n + NEW:] == 0)
    logp = jax.nn.log_softmax(logits[b, generated])
    np.testing.assert_allclose(
        cached.logprob[b],
        np.take_along_axis(logp, tokens[b, generated, None], 1).sum(),
        rtol=1e-5)


def test_eos_stops_each_example_and_pads():
  reference = np.asarray(_greedy_cached().tokens)
  eos = int(reference[0, PROMPT_LEN[0] + 1])  # example 0's 2nd new token
  assert eos != 0, 'pick another test prompt: 0 is the pad id'
  got = np.asarray(_greedy(eos_id=eos).tokens)
  stopped = 0
  for b, n in enumerate(PROMPT_LEN):
    hits = np.flatnonzero(reference[b, n:n + NEW] == eos)
    stop = n + hits[0] + 1 if len(hits) else n + NEW
    stopped += len(hits) > 0
    np.testing.assert_array_equal(got[b, :stop], reference[b, :stop])
    assert np.all(got[b, stop:] == 0), (b, got[b])
  assert stopped >= 1


def test_beam_size_one_is_greedy():
  beams = generate.beam_search(_decoder(), PROMPT, memory=MEMORY,
                               memory_mask=MEMORY_MASK, max_new_tokens=NEW,
                               beam_size=1, alpha=0.0, eos_id=EOS,
                               pad_id=PAD)
  greedy = _greedy()
  np.testing.assert_array_equal(beams.tokens[:, 0], greedy.tokens)
  np.testing.assert_allclose(beams.scores[:, 0], greedy.logprob, rtol=1e-5)
  np.testing.assert_allclose(beams.logprob[:, 0], greedy.logprob, rtol=1e-5)


def test_sampling_with_top_k_one_is_greedy():
  sampled = generate.sample(_decoder(), PROMPT, jax.random.key(5),
                            memory=MEMORY, memory_mask=MEMORY_MASK,
                            max_new_tokens=NEW, temperature=0.7, top_k=1,
                            eos_id=-1, pad_id=PAD)
  np.testing.assert_array_equal(sampled.tokens, _greedy_cached().tokens)


def test_sampling_stays_in_top_k_and_varies_with_rng():
  outs = [generate.sample(_decoder(), PROMPT, jax.random.key(seed),
                          memory=MEMORY, memory_mask=MEMORY_MASK,
                          max_new_tokens=NEW, temperature=3.0, top_k=3,
                          eos_id=-1, pad_id=PAD, return_logits=True)
          for seed in (0, 1)]
  for out in outs:
    tokens, logits = np.asarray(out.tokens), np.asarray(out.logits)
    _check_prompts_kept(tokens)
    for b, n in enumerate(PROMPT_LEN):
      top3 = np.argsort(-logits[b, n:n + NEW], axis=-1)[:, :3]
      assert np.all(np.any(top3 == tokens[b, n:n + NEW, None], axis=1))
  assert not np.array_equal(outs[0].tokens, outs[1].tokens)


def test_beam_search_is_exact_on_a_tiny_problem():
  # With beams >= V**2 no hypothesis is ever pruned before the last of 3
  # new tokens, so the beams must be the W best of all distinct
  # continuations, scored by brute force with the uncached forward pass.
  model, new, alpha, beams = _decoder(), 3, 0.6, V * V
  prompt, memory, mask = PROMPT[:2], MEMORY[:2], MEMORY_MASK[:2]
  # An EOS the model likes makes short hypotheses compete with long ones.
  eos = int(_greedy_cached().tokens[0, PROMPT_LEN[0]])
  out = generate.beam_search(model, prompt, memory=memory, memory_mask=mask,
                             max_new_tokens=new, beam_size=beams,
                             alpha=alpha, eos_id=eos, pad_id=PAD)
  tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
  assert tokens.shape == (2, beams, 4 + new)
  conts = np.array(list(itertools.product(range(V), repeat=new)))
  is_eos = conts == eos
  length = np.where(is_eos.any(1), is_eos.argmax(1) + 1, new)
  for b, n in enumerate(PROMPT_LEN[:2]):
    seqs = np.zeros((len(conts), 4 + new), np.int32)
    seqs[:, :n] = prompt[b, :n]
    seqs[:, n:n + new] = conts
    logits = _forward(model, jnp.asarray(seqs),
                      jnp.repeat(memory[b:b + 1], len(conts), 0),
                      jnp.repeat(mask[b:b + 1], len(conts), 0))
    logp = np.asarray(jax.nn.log_softmax(logits))
    step_logp = np.take_along_axis(
        logp[:, n - 1:n - 1 + new], conts[..., None], 2)[..., 0]
    total = np.where(np.arange(new)[None] < length[:, None], step_logp,
                     0).sum(1)
    # Distinct hypotheses: the tokens up to EOS, padded after.
    brute = {}
    for seq, l, lp in zip(seqs, length, total):
      seq = seq.copy()
      seq[n + l:] = 0
      brute[tuple(seq)] = (lp / ((5 + l) / 6) ** alpha, lp)
    assert len(brute) > beams
    best = sorted(brute.values(), reverse=True)[:beams]
    np.testing.assert_allclose(scores[b], [s for s, _ in best], rtol=1e-5)
    for seq, score, lp in zip(tokens[b], scores[b], out.logprob[b]):
      np.testing.assert_allclose((score, lp), brute[tuple(seq)], rtol=1e-5)


# ------------------------------------- scanned layers and rematerialisation ---


def _scanned_copy(model, **kw):
  """A scan_layers decoder holding `model`'s (unrolled) parameters: the
  per-layer blocks/i/... stacked into blocks/... [depth, ...]."""
  scanned = build_model(dict(CONFIG, scan_layers=True, **kw),
                        rngs=nnx.Rngs(1))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  blocks = params['blocks']
  params['blocks'] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                  *[blocks[i] for i in sorted(blocks)])
  state = nnx.state(scanned, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(scanned, state)
  return scanned


@functools.lru_cache(maxsize=None)
def _scanned(**kw):
  """_decoder()'s parameters in a scan_layers decoder (cached: never mutate)."""
  return _scanned_copy(_decoder(), **kw)


def test_scanned_layers_are_stacked_with_a_layers_axis():
  model = _scanned()
  kernel = nnx.state(model.blocks, nnx.Param)['mlp']['fc1']['kernel']
  assert kernel.shape == (2, 16, 32)
  assert kernel.get_metadata()['out_sharding'] == ('layers', 'embed', 'mlp')
  paths = {'/'.join(map(str, p))
           for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  assert 'blocks/self_attn/query/kernel' in paths
  assert not any(p.startswith('blocks/0/') for p in paths)
  # The cache stays batch-major: the layers are its second axis.
  cache = model.init_cache(3, 8, MEMORY, MEMORY_MASK)
  assert cache.keys.shape == (3, 2, 8, 2, 8)
  assert cache.memory_values.shape == (3, 2, 4, 2, 8)
  with pytest.raises(ValueError, match='scan_layers=False'):
    _decoder().decode(PROMPT, cache, 0)


@pytest.mark.parametrize('remat', ['none', 'full'])
def test_scanned_layers_give_the_unrolled_training_logits(remat):
  tokens = jnp.array([[2, 5, 6, 7, 8, 9]] * 3, jnp.int32)
  want = _forward(_decoder(), tokens, MEMORY, MEMORY_MASK)
  got = _forward(_scanned(remat=remat), tokens, MEMORY, MEMORY_MASK)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(_forward(_scanned(), tokens),
                             _forward(_decoder(), tokens), atol=1e-5)


@pytest.mark.parametrize('with_memory', [True, False])
def test_scanned_layers_decode_in_chunks_as_unrolled(with_memory):
  memory, mask = (MEMORY, MEMORY_MASK) if with_memory else (None, None)
  tokens = jnp.array([[2, 5, 6, 7, 8, 9]] * 3, jnp.int32)
  np.testing.assert_allclose(
      _decode_in_chunks(_scanned(), tokens, memory, mask),
      _forward(_decoder(), tokens, memory, mask), atol=1e-5)


@pytest.mark.parametrize('use_cache', [True, False])
def test_scanned_layers_generate_as_unrolled(use_cache):
  got = generate.greedy(_scanned(), PROMPT, memory=MEMORY,
                        memory_mask=MEMORY_MASK, max_new_tokens=NEW,
                        eos_id=-1, pad_id=PAD, use_cache=use_cache,
                        return_logits=True)
  want = _greedy_cached()
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_allclose(got.logits, want.logits, atol=1e-5)
  if not use_cache:
    return
  # Beam search reorders the (batch-major) stacked cache between steps.
  kw = dict(memory=MEMORY, memory_mask=MEMORY_MASK, max_new_tokens=NEW,
            beam_size=3, alpha=0.6, eos_id=EOS, pad_id=PAD)
  got = generate.beam_search(_scanned(), PROMPT, **kw)
  want = generate.beam_search(_decoder(), PROMPT, **kw)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)


@nnx.jit
def _loss_and_grads(model, tokens, memory):
  """Teacher-forced loss and its gradients for the parameters and memory."""
  def loss(model, memory):
    logits = model(tokens[:, :-1], memory, MEMORY_MASK)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                         tokens[:, 1:, None], -1))
  value, (grads, memory_grad) = nnx.value_and_grad(loss, argnums=(0, 1))(
      model, memory)
  return value, nnx.to_pure_dict(nnx.state(grads, nnx.Param)), memory_grad


# Both layouts, two policies: every policy on both would repeat the
# encoder's tests (tests/test_models.py) at ~15 s of compiling each.
@pytest.mark.parametrize('scan,policy', [(False, 'full'),
                                         (True, 'dots_no_batch')])
def test_remat_keeps_loss_and_grads(scan, policy):
  tokens = jnp.array([[2, 5, 6, 7, 8, 9, 3]] * 3, jnp.int32)
  if scan:
    base, remat = _scanned(), _scanned(remat=policy)
  else:  # the same seed gives the same parameters
    base, remat = _decoder(), _decoder(remat=policy)
  want = _loss_and_grads(base, tokens, MEMORY)
  got = _loss_and_grads(remat, tokens, MEMORY)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               got[1:], want[1:])
  assert np.abs(np.asarray(want[2])).max() > 0  # the memory gets gradients


def test_unknown_remat_policy_is_a_clear_error():
  with pytest.raises(ValueError, match='remat must be one of'):
    _decoder(remat='everything')
