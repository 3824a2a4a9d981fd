"""Captions and QA text of digits_trimodal, derived from measured attributes.

Pure functions, no I/O. Image attributes are measured on the 8x8 scans of
sklearn's digits (values 0..16) and bucketed into 3 levels by tertiles over
all 1,797 images:
  thickness  total ink / median total ink of the same digit class
             -> 'thin' | 'medium' | 'thick'
  slant      -mu11 / mu02 (second-order central moments, rows pointing down;
             positive = top leans right) -> 'left' | 'upright' | 'right'
  size       ink spread sqrt(mu20 + mu02) / median spread of the same class
             -> 'small' | 'medium' | 'large'
Thickness and size are relative to the class, so that e.g. every "1" is not
"thin and small" and the attributes are not a proxy for the label.
"""
import numpy as np

from projects.digits.data import voices

WORDS = voices.WORDS
THICKNESS_LEVELS = ('thin', 'medium', 'thick')
SLANT_LEVELS = ('left', 'upright', 'right')
SIZE_LEVELS = ('small', 'medium', 'large')

QUESTION_TYPES = ('written', 'spoken', 'match', 'larger', 'sum')
QUESTIONS = {
    'written': 'what number is written?',
    'spoken': 'what number is spoken?',
    'match': 'do the written and the spoken number match?',
    'larger': 'which is larger, the written or the spoken number?',
    'sum': 'what is the written number plus the spoken number?',
}

# Phrase tables, indexed by bucket level 0..2.
_STROKE_ADJ = ('thin', 'medium-weight', 'thick')
_STROKE_WITH = ('with a thin stroke', 'with a medium stroke',
                'with a thick stroke')
_BOLD_ADJ = ('light', 'regular', 'bold')
_SLANT_PHRASE = ('leaning left', 'upright', 'leaning right')
_SLANT_ALT = ('slanted to the left', 'standing upright',
              'slanted to the right')
_SLANT_ADJ = ('left-slanted', 'upright', 'right-slanted')
_SIZE_ADJ = ('small', 'medium-sized', 'large')
_SIZE_ALT = ('compact', 'average-sized', 'big')
_SPEED_ADV = {'slow': 'slowly', 'fast': 'quickly'}


def _a(phrase: str) -> str:
  """Prefixes the indefinite article ('a'/'an') to a phrase."""
  return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def image_measurements(images: np.ndarray) -> np.ndarray:
  """Raw attribute measurements.

  Args:
    images: float or int [N, 8, 8], ink intensity (0 = background).
  Returns:
    float64 [N, 3]: total ink, slant (-mu11/mu02), spread sqrt(mu20+mu02).
  """
  img = np.asarray(images, np.float64)
  rows, cols = np.mgrid[0:img.shape[1], 0:img.shape[2]]
  mass = img.sum(axis=(1, 2))
  safe = np.maximum(mass, 1e-9)
  cy = (img * rows).sum(axis=(1, 2)) / safe
  cx = (img * cols).sum(axis=(1, 2)) / safe
  dy = rows[None] - cy[:, None, None]
  dx = cols[None] - cx[:, None, None]
  mu02 = (img * dy * dy).sum(axis=(1, 2)) / safe
  mu20 = (img * dx * dx).sum(axis=(1, 2)) / safe
  mu11 = (img * dx * dy).sum(axis=(1, 2)) / safe
  slant = -mu11 / np.maximum(mu02, 1e-9)
  return np.stack([mass, slant, np.sqrt(mu20 + mu02)], axis=1)


def _relative_to_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
  out = np.empty_like(values)
  for digit in np.unique(labels):
    mask = labels == digit
    out[mask] = values[mask] / np.median(values[mask])
  return out


def _tertile_levels(values: np.ndarray) -> np.ndarray:
  """int64 [N] in {0, 1, 2} by the 1/3 and 2/3 quantiles of `values`."""
  thresholds = np.quantile(values, [1 / 3, 2 / 3])
  return np.searchsorted(thresholds, values, side='right').astype(np.int64)


def image_attributes(images: np.ndarray,
                     labels: np.ndarray) -> list[tuple[str, str, str]]:
  """Bucketed attributes of every image.

  Args:
    images: [N, 8, 8] ink intensities; must be the whole population (all
      1,797 scans) since class medians and tertiles are computed over it.
    labels: int [N] digits.
  Returns:
    N tuples (thickness, slant, size) of level words, e.g.
    ('thick', 'upright', 'small').
  """
  labels = np.asarray(labels)
  m = image_measurements(images)
  thick = _tertile_levels(_relative_to_class(m[:, 0], labels))
  slant = _tertile_levels(m[:, 1])
  size = _tertile_levels(_relative_to_class(m[:, 2], labels))
  return [(THICKNESS_LEVELS[t], SLANT_LEVELS[s], SIZE_LEVELS[z])
          for t, s, z in zip(thick, slant, size)]


def image_captions(digit: int, thickness: str, slant: str,
                   size: str) -> list[str]:
  """Five phrasings; the first is the canonical 'a handwritten <word>'."""
  word, num = WORDS[digit], str(digit)
  t = THICKNESS_LEVELS.index(thickness)
  s = SLANT_LEVELS.index(slant)
  z = SIZE_LEVELS.index(size)
  return [
      f'a handwritten {word}',
      f'{_a(_STROKE_ADJ[t])} handwritten {word} {_SLANT_PHRASE[s]}',
      f'the digit {num} written {_STROKE_WITH[t]}, {_SLANT_PHRASE[s]} and '
      f'{_SIZE_ADJ[z]}',
      f'{_a(_SIZE_ADJ[z])}, {_BOLD_ADJ[t]} {num}, {_SLANT_ALT[s]}',
      f'{_a(_SIZE_ALT[z])} {_SLANT_ADJ[s]} {word} drawn {_STROKE_WITH[t]}',
  ]


def speech_captions(digit: int, accent: str, variant: str, speed: int,
                    pitch: int) -> list[str]:
  """Five phrasings of a clip; the first is the canonical 'the word <word>'.

  Args:
    digit: the spoken digit.
    accent, variant: ids as in voices.ACCENTS / voices.VARIANTS.
    speed, pitch: espeak-ng values as in voices.SPEEDS / voices.PITCHES.
  """
  word, num = WORDS[digit], str(digit)
  accent_phrase = voices.ACCENTS[accent][1]
  _, name, gender = voices.VARIANTS[variant]
  speed_word, pitch_word = voices.SPEEDS[speed], voices.PITCHES[pitch]
  return [
      f'the word {word}',
      f'someone saying {word} in {accent_phrase}',
      f'{word}, spoken {_SPEED_ADV[speed_word]} in {_a(pitch_word)} voice '
      f'by {name}',
      f'{_a(gender)} voice saying the number {num} {_SPEED_ADV[speed_word]}',
      f'the spoken digit {num} with {accent_phrase}, {pitch_word}-pitched '
      f'and {speed_word}',
  ]


def qa(written: int, spoken: int) -> tuple[list[str], list[str], list[str]]:
  """Questions about an (image of `written`, clip of `spoken`) pair.

  Returns:
    (questions, answers, question_types), aligned lists of length 5 in the
    order of QUESTION_TYPES; answers are short strings ('7', 'yes',
    'written' / 'spoken' / 'equal', '10').
  """
  if written > spoken:
    larger = 'written'
  elif spoken > written:
    larger = 'spoken'
  else:
    larger = 'equal'
  answers = {
      'written': str(written),
      'spoken': str(spoken),
      'match': 'yes' if written == spoken else 'no',
      'larger': larger,
      'sum': str(written + spoken),
  }
  types = list(QUESTION_TYPES)
  return [QUESTIONS[t] for t in types], [answers[t] for t in types], types
