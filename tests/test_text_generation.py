"""Prompt + target sequences, teacher forcing and decoded continuations."""
import jax.numpy as jnp
import numpy as np

from multimodal.data.text import TokenIds
from multimodal.tasks import text_generation

# Right-padded texts ending in eos (3); BOS is 2.
IDS = TokenIds(pad=0, bos=2, eos=3)
QUESTION = jnp.array([[10, 11, 12, 3, 0], [20, 3, 0, 0, 0]], jnp.int32)
ANSWER = jnp.array([[5, 6, 3, 0], [7, 3, 0, 0]], jnp.int32)


def test_join_puts_each_target_right_after_its_prompt():
  prompt = text_generation.bos_prompt(QUESTION, ids=IDS)
  np.testing.assert_array_equal(prompt[:, 0], [2, 2])
  np.testing.assert_array_equal(text_generation.join(prompt, ANSWER, ids=IDS), [
      [2, 10, 11, 12, 3, 5, 6, 3, 0, 0],
      [2, 20, 3, 7, 3, 0, 0, 0, 0, 0]])


def test_teacher_forcing_weights_only_target_tokens():
  prompt = text_generation.bos_prompt(QUESTION, ids=IDS)
  inputs, labels, weights, truncated = text_generation.teacher_forcing(
      prompt, ANSWER, max_len=20, ids=IDS)
  assert inputs.shape == labels.shape == weights.shape == (2, 9)
  np.testing.assert_array_equal(inputs[:, 1:], labels[:, :-1])
  # Exactly the answer tokens (eos included) are predicted with weight 1.
  np.testing.assert_array_equal(
      np.where(weights > 0, labels, -1),
      [[-1, -1, -1, -1, 5, 6, 3, -1, -1], [-1, -1, 7, 3, -1, -1, -1, -1, -1]])
  assert not np.any(truncated)


def test_teacher_forcing_flags_targets_cut_by_max_len():
  prompt = text_generation.bos_prompt(QUESTION, ids=IDS)
  inputs, _, weights, truncated = text_generation.teacher_forcing(
      prompt, ANSWER, max_len=6, ids=IDS)
  assert inputs.shape == (2, 6)
  np.testing.assert_array_equal(truncated, [True, False])
  assert weights[0].sum() == 2 and weights[1].sum() == 2


def test_captioning_prompt_is_bos_alone():
  prompt = text_generation.bos_prompt(batch=2, ids=IDS)
  inputs, labels, weights, _ = text_generation.teacher_forcing(
      prompt, ANSWER, 8, ids=IDS)
  np.testing.assert_array_equal(inputs, [[2, 5, 6, 3], [2, 7, 3, 0]])
  np.testing.assert_array_equal(labels, [[5, 6, 3, 0], [7, 3, 0, 0]])
  np.testing.assert_array_equal(weights, [[1, 1, 1, 0], [1, 1, 0, 0]])


class _Tokenizer:
  """Decodes like multimodal.data.text.Tokenizer: drop pads, stop at eos."""

  def decode(self, ids):
    ids = [int(i) for i in ids if i != 0]
    if 3 in ids:
      ids = ids[:ids.index(3)]
    return ' '.join(str(i) for i in ids)


def test_continuations_and_references():
  prompt = np.asarray(text_generation.bos_prompt(QUESTION, ids=IDS))
  tokens = np.asarray(text_generation.join(prompt, ANSWER, ids=IDS))
  assert text_generation.continuations(tokens, prompt, _Tokenizer(),
                                       ids=IDS) == ['5 6', '7']
  refs = np.zeros((2, 3, 4), np.int32)
  refs[0, 0], refs[0, 1], refs[1, 0] = [5, 3, 0, 0], [6, 6, 3, 0], [9, 3, 0, 0]
  assert text_generation.references(refs, _Tokenizer(), ids=IDS) == [
      ['5', '6 6'], ['9']]
