"""Tests of the built-in digits_video dataset (a few records, not a build)."""
import collections
import io

import numpy as np
from PIL import Image
import pytest
import sentencepiece as spm

from projects.digits import data as digits_data
from projects.digits.data import digits_video
from projects.digits.data import motions
from projects.digits.data import sources
from projects.digits.data import video_captions
from projects.digits.data import voices


@pytest.fixture(scope='module')
def scan():
  images, _ = sources.load_images()
  return images[0]  # a zero


def _frames(record) -> np.ndarray:
  return np.stack([np.asarray(Image.open(io.BytesIO(f)))
                   for f in record['video']])


def test_records_are_deterministic():
  first = list(digits_video.generate_records('test', limit=4))
  again = list(digits_video.generate_records('test', limit=4))
  assert [k for k, _ in first] == ['test/00000', 'test/00001', 'test/00002',
                                   'test/00003']
  assert first == again
  # A prefix of a longer generation: records do not depend on `limit`.
  assert list(digits_video.generate_records('test', limit=2)) == first[:2]


def test_record_contents():
  for _, r in digits_video.generate_records('train', limit=12):
    frames = _frames(r)
    assert frames.shape == (motions.NUM_FRAMES, 32, 32)
    assert frames.dtype == np.uint8 and (frames.max(axis=(1, 2)) > 0).all()
    motion = motions.MOTIONS[r['motion']]
    assert r['motion_name'] == motion
    assert r['motion_kind'] == motions.KIND_OF[motion]
    word = voices.WORDS[r['label']]
    assert r['video_captions'][0] == (
        f'a {word} {video_captions.motion_phrase(motion)}')
    qa = dict(zip(r['question_types'], r['answers']))
    assert len(r['questions']) == len(qa) == 4
    assert qa['digit'] == str(r['label'])
    assert qa['direction'] == motion
    assert qa['match'] == ('yes' if r['qa_speech_label'] == r['label']
                           else 'no')
    assert r['speech'][:4] == r['qa_speech'][:4] == b'OggS'


def test_motions_are_balanced():
  counts = collections.Counter(
      r['motion_name'] for _, r in digits_video.generate_records(
          'validation'))
  assert sum(counts.values()) == 179
  assert set(counts) == set(motions.MOTIONS)
  assert max(counts.values()) - min(counts.values()) <= 2


@pytest.mark.parametrize('motion', motions.MOTIONS)
def test_reversed_clip_is_the_opposite_motion(scan, motion):
  """Only the order of the frames tells a motion from its opposite: the
  same draws played backwards are exactly the opposite motion's clip, whose
  caption and direction answer differ."""
  clip = motions.render(scan, motion, np.random.default_rng(7))
  opposite = motions.OPPOSITE[motion]
  other = motions.render(scan, opposite, np.random.default_rng(7))
  np.testing.assert_array_equal(clip[::-1], other)
  assert not np.array_equal(clip, other)
  for digit in range(10):
    assert not (set(video_captions.video_captions(digit, motion)) &
                set(video_captions.video_captions(digit, opposite)))
    _, answers, types = video_captions.qa(digit, motion, digit)
    _, other_answers, _ = video_captions.qa(digit, opposite, digit)
    differ = [t for t, a, b in zip(types, answers, other_answers) if a != b]
    assert differ == list(video_captions.ORDER_TYPES)


def _centroid(frames):
  f = frames.astype(np.float64)
  rows, cols = np.mgrid[0:f.shape[1], 0:f.shape[2]]
  mass = f.sum(axis=(1, 2))
  return ((f * cols).sum(axis=(1, 2)) / mass,
          (f * rows).sum(axis=(1, 2)) / mass, mass)


def test_motions_go_the_way_they_are_named(scan):
  rng = lambda: np.random.default_rng(3)
  x, _, _ = _centroid(motions.render(scan, 'left', rng()))
  assert (np.diff(x) < 0).all() and x[0] - x[-1] > 10
  _, y, _ = _centroid(motions.render(scan, 'down', rng()))
  assert (np.diff(y) > 0).all() and y[-1] - y[0] > 10
  _, _, mass = _centroid(motions.render(scan, 'growing', rng()))
  assert (np.diff(mass) > 0).all()
  # A dot above the centre: turning clockwise (on screen, y down) carries
  # it from the upper left to the upper right.
  dot = np.zeros((8, 8), np.int64)
  dot[0:2, 3:5] = 16
  x, y, _ = _centroid(motions.render(dot, 'clockwise', rng()))
  assert (np.diff(x) > 0).all() and (y < 16).all()


def test_bad_motion_is_a_clear_error(scan):
  with pytest.raises(ValueError, match='Unknown motion'):
    motions.render(scan, 'sideways', np.random.default_rng(0))
  with pytest.raises(ValueError, match='Unknown digits dataset'):
    digits_data.build('/nonexistent', 'digits_mnist')


def test_video_tokenizer_covers_every_text():
  sp = spm.SentencePieceProcessor(model_file=digits_data.VIDEO_TOKENIZER_PATH)
  for text in video_captions.all_texts():
    ids = sp.encode(text)
    assert sp.unk_id() not in ids and sp.decode(ids) == text
    assert len(ids) <= 10  # configs' max_text_len 12 leaves room for eos
