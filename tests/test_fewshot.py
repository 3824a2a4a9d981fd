"""Few-shot ridge probes: separable features score high, noise at chance."""
import numpy as np
import pytest

from multimodal.evaluators import fewshot


def _blobs(n_per_class, noise_seed, classes=5, dim=16, spread=0.3):
  """Gaussian blobs around fixed class centres; fresh noise per seed."""
  centres = np.random.default_rng(0).normal(size=(classes, dim)) * 3
  y = np.repeat(np.arange(classes), n_per_class)
  noise = np.random.default_rng(noise_seed).normal(size=(len(y), dim))
  return centres[y] + spread * noise, y


def test_separable_classes_are_found_from_one_shot():
  x, y = _blobs(30, noise_seed=1)
  tx, ty = _blobs(20, noise_seed=2)
  acc = fewshot.fewshot_accuracy(x, y, tx, ty, shots=(1, 5))
  assert acc[1] > 0.9 and acc[5] > 0.97, acc


def test_noise_features_score_near_chance():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(300, 16)), rng.integers(0, 5, 300)
  tx, ty = rng.normal(size=(500, 16)), rng.integers(0, 5, 500)
  acc = fewshot.fewshot_accuracy(x, y, tx, ty, shots=(5,), repeats=10)
  assert 0.1 < acc[5] < 0.32, acc


def test_too_few_examples_per_class_is_a_clear_error():
  x, y = _blobs(3, noise_seed=1)
  with pytest.raises(ValueError, match='5-shot needs more than 5'):
    fewshot.fewshot_accuracy(x, y, x, y, shots=(5,))
