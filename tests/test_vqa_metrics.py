"""Tests for VQA answer normalisation and accuracy (hand-worked cases)."""
import pytest

from multimodal.evaluators import vqa


@pytest.mark.parametrize('raw,normalized', [
    ('Two dogs!', '2 dogs'),
    ('The cat.', 'cat'),
    ('  An apple\n', 'apple'),
    ('none', '0'),
    ('1,000', '1000'),  # a digit,digit comma: every mark deleted
    ('3.5', '3.5'),  # a period before a digit stays
    ('3.', '3'),
    ('dont', "don't"),
    ("don't", "don't"),
    ('Im', 'im'),  # the official table's capitalised keys never match
    ('yes , sir', 'yes sir'),  # a mark next to a space is deleted ...
    ('red/white', 'red white'),  # ... otherwise it becomes a space
    ('a b-c', 'b c'),
    ('What is on the table?', 'what is on table'),
    ('ten', '10'),
])
def test_normalize_answer(raw, normalized):
  assert vqa.normalize_answer(raw) == normalized


@pytest.mark.parametrize('matches,accuracy', [
    (0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_ten_references_leave_one_out(matches, accuracy):
  refs = ['yes'] * matches + ['no'] * (10 - matches)
  assert vqa.vqa_accuracy('Yes', refs) == pytest.approx(accuracy)


def test_references_are_normalised_like_the_prediction():
  refs = ['two', '2', 'Two.'] + ['3'] * 7
  assert vqa.vqa_accuracy('2', refs) == pytest.approx(0.9)
  assert vqa.vqa_accuracy('two', refs) == pytest.approx(0.9)


def test_official_reference_handling():
  # All references equal: left as they are, so 'two' never matches the
  # prediction's normalised '2'.
  assert vqa.vqa_accuracy('two', ['two'] * 10,
                          official_references=True) == 0.0
  assert vqa.vqa_accuracy('two', ['two'] * 10) == 1.0
  # References that differ only lose their punctuation ...
  refs = ['1000'] * 2 + ['1,000'] + ['3'] * 7
  assert vqa.vqa_accuracy('1,000', refs,
                          official_references=True) == pytest.approx(0.9)
  # ... or have it spaced out, which keeps '(2)' from matching '2'.
  assert vqa.strip_punctuation('(2)') == ' 2 '
  refs = ['2'] * 2 + ['(2)'] + ['3'] * 7
  assert vqa.vqa_accuracy('two', refs,
                          official_references=True) == pytest.approx(0.6)
  assert vqa.vqa_accuracy('two', refs) == pytest.approx(0.9)


def test_other_reference_counts_use_exact_match():
  assert vqa.vqa_accuracy('The dog', ['dog']) == 1.0
  assert vqa.vqa_accuracy('dog', ['cat', 'a dog', 'cow']) == 1.0
  assert vqa.vqa_accuracy('dog', ['cat', 'cow']) == 0.0
  with pytest.raises(ValueError):
    vqa.vqa_accuracy('dog', [])


def test_mean_accuracy():
  preds = ['yes', 'two', 'blue']
  refs = [['yes'] * 10, ['2'] * 2 + ['3'] * 8, ['red']]
  assert vqa.mean_vqa_accuracy(preds, refs) == pytest.approx(
      (1.0 + 0.6 + 0.0) / 3)
