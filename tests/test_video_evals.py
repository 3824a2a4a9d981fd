"""Tests of digits_video's evaluators (projects/digits/video_evals.py) on
made-up outputs: no model, no data."""
import types

import numpy as np
import pytest

from multimodal import evaluators
from multimodal import registry
from projects.digits import video_evals  # noqa: F401 (registers)
from projects.digits.data import motions
from projects.digits.data import video_captions

NUM_CLASSES = 10 * len(motions.MOTIONS)


def _class_of(text):
  digit, motion = video_captions.parse_caption(text)
  return digit * len(motions.MOTIONS) + motions.MOTIONS.index(motion)


def _ctx():
  """Embeds a caption as the one-hot vector of the class it names."""
  def embed_texts(field, texts):
    assert field == 'video_text'
    return np.eye(NUM_CLASSES, dtype=np.float32)[[_class_of(t)
                                                  for t in texts]]
  return evaluators.Context(tokenizer=None, embed_texts=embed_texts)


def _zeroshot():
  task = types.SimpleNamespace(fields=['video', 'video_text'])
  return registry.get('evaluator', 'digits_video_zeroshot')(task)


def test_zeroshot_separates_content_from_order():
  rng = np.random.default_rng(0)
  n = 400
  digit = rng.integers(0, 10, n)
  motion = rng.integers(0, len(motions.MOTIONS), n)
  eye = np.eye(NUM_CLASSES, dtype=np.float32)
  true = eye[digit * 8 + motion]
  outputs = {'embedding/video': true, 'label': digit, 'motion': motion}
  got = _zeroshot()(outputs, _ctx())
  assert got == {'zeroshot/video/digit': 1.0, 'zeroshot/video/kind': 1.0,
                 'zeroshot/video/motion': 1.0,
                 'zeroshot/video/direction': 1.0}
  # An order-blind model: as close to the reversed motion as to the true
  # one (up to noise). Content stays, the direction falls to chance.
  opposite = np.array([motions.MOTIONS.index(motions.OPPOSITE[m])
                       for m in motions.MOTIONS])[motion]
  blind = true + eye[digit * 8 + opposite] + 1e-3 * rng.normal(
      size=true.shape).astype(np.float32)
  got = _zeroshot()({**outputs, 'embedding/video': blind}, _ctx())
  assert got['zeroshot/video/digit'] == got['zeroshot/video/kind'] == 1.0
  assert 0.4 < got['zeroshot/video/direction'] < 0.6
  assert 0.4 < got['zeroshot/video/motion'] < 0.6


def test_zeroshot_needs_embedded_fields():
  task = types.SimpleNamespace(fields=['image', 'image_text'])
  with pytest.raises(ValueError, match='does not embed'):
    registry.get('evaluator', 'digits_video_zeroshot')(task)


def test_caption_parts():
  task = types.SimpleNamespace(media=['video'])
  ev = registry.get('evaluator', 'digits_video_caption_parts')(task)
  refs = [video_captions.video_captions(3, 'left')] * 5
  predictions = [
      'a three moving to the left',   # all right
      'the digit 3 sliding right',    # direction wrong
      'a five going left',            # digit wrong
      'a three turning clockwise',    # kind wrong
      'a three',                      # no motion
  ]
  got = ev({'prediction/video': predictions, 'references/video': refs},
           None)
  assert got == {'caption_parts/video/digit': 0.8,
                 'caption_parts/video/kind': 0.6,
                 'caption_parts/video/motion': 0.4,
                 'caption_parts/video/direction': pytest.approx(2 / 3)}
  with pytest.raises(ValueError, match='not a captioned media'):
    registry.get('evaluator', 'digits_video_caption_parts')(task, media='audio')
