"""Local inputs of digits_trimodal: sklearn's digit scans and the clips."""
import csv
import pathlib

import numpy as np

SPEECH_DIR = pathlib.Path(__file__).resolve().parent / 'speech'
MANIFEST_PATH = SPEECH_DIR / 'manifest.csv'
_INT_COLUMNS = ('digit', 'speed', 'pitch', 'num_samples')


def load_images() -> tuple[np.ndarray, np.ndarray]:
  """sklearn's 1,797 handwritten digits.

  Returns:
    images: int64 [1797, 8, 8], values 0..16 (0 = background).
    labels: int64 [1797], digits 0..9.
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  return (digits.images.astype(np.int64),  # stored as exact float integers
          digits.target.astype(np.int64))


def load_clips() -> list[dict]:
  """Rows of speech/manifest.csv, in file order.

  Returns:
    dicts with str 'file' (relative to SPEECH_DIR), 'split', 'word',
    'accent', 'variant' and int 'digit', 'speed', 'pitch', 'num_samples'.
  """
  with open(MANIFEST_PATH, newline='') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    for key in _INT_COLUMNS:
      row[key] = int(row[key])
  return rows
