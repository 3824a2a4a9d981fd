"""The motions of digits_video and the rendering of their frames.

Pure functions, no I/O. A clip is NUM_FRAMES frames of FRAME_SIZE x
FRAME_SIZE grayscale pixels, one of sklearn's 8x8 digit scans drawn with a
bilinear affine warp whose parameters (centre, angle, scale) change linearly
from the first frame to the last. Eight motions, in pairs of opposite
directions along one 'kind' of change:

  kind     motions (index)                      what changes
  slide    left (0), right (1), up (2), down (3)  the centre, by SLIDE_DISTANCE
  turn     clockwise (4), anticlockwise (5)       the angle, by TURN_DEGREES
  resize   growing (6), shrinking (7)             the scale, SCALE_RANGE

Each pair is made from one set of parameters drawn once: the second motion of
a pair is the first played backwards. So the frames of a clip and of its
reverse are the same multiset: a model that sees the frames in any order
can tell the kind of motion (and the digit) but not its direction, which
only the order of the frames holds (`trajectory` docstring).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

NUM_FRAMES = 8
FRAME_SIZE = 32
SCAN_SIZE = 8
BASE_PIXELS = 2.0  # frame pixels per scan pixel at scale 1 (a 16 px digit)

MOTIONS = ('left', 'right', 'up', 'down', 'clockwise', 'anticlockwise',
           'growing', 'shrinking')
KINDS = ('slide', 'turn', 'resize')
KIND_OF = {'left': 'slide', 'right': 'slide', 'up': 'slide', 'down': 'slide',
           'clockwise': 'turn', 'anticlockwise': 'turn',
           'growing': 'resize', 'shrinking': 'resize'}
# The motion that is this one played backwards.
OPPOSITE = {'left': 'right', 'right': 'left', 'up': 'down', 'down': 'up',
            'clockwise': 'anticlockwise', 'anticlockwise': 'clockwise',
            'growing': 'shrinking', 'shrinking': 'growing'}

SLIDE_DISTANCE = 12.0  # pixels from the first frame to the last
TURN_DEGREES = 90.0  # degrees from the first frame to the last
SCALE_RANGE = (0.6, 1.4)  # the smaller and the larger scale of a resize
_JITTER_DEGREES = 10.0  # random upright angle of slides and resizes, +-
_SCALE_JITTER = (0.8, 1.0)  # random scale of slides and turns


def trajectory(motion: str, rng: np.random.Generator) -> np.ndarray:
  """Per-frame warp parameters of one clip.

  Draws the unordered endpoints (two positions, angles or scales) and the
  fixed parameters from `rng`, then orders the endpoints by `motion`. The
  draws do not depend on the direction, so with the same rng state a motion
  and its OPPOSITE give the same frames in reverse order.

  Args:
    motion: one of MOTIONS.
    rng: the clip's generator (consumed identically for every motion of a
      kind).
  Returns:
    float64 [NUM_FRAMES, 4]: centre x, centre y (frame pixels, x right, y
    down), angle (degrees, positive = clockwise on screen), scale.
  """
  if motion not in MOTIONS:
    raise ValueError(f'Unknown motion {motion!r}; use one of {MOTIONS}.')
  kind = KIND_OF[motion]
  mid = FRAME_SIZE / 2
  lo_hi = np.stack([np.full(2, mid), np.full(2, mid),
                    np.zeros(2), np.ones(2)])  # [4 params, (start, end)]
  if kind == 'slide':
    # The moving coordinate spans [low, low + distance] inside [8, 24]; the
    # other is a random lane.
    low = rng.uniform(8.0, 24.0 - SLIDE_DISTANCE)
    lane = rng.uniform(12.0, 20.0)
    axis = 0 if motion in ('left', 'right') else 1
    lo_hi[axis] = (low, low + SLIDE_DISTANCE)
    lo_hi[1 - axis] = lane
    lo_hi[2] = rng.uniform(-_JITTER_DEGREES, _JITTER_DEGREES)
    lo_hi[3] = rng.uniform(*_SCALE_JITTER)
    forward = motion in ('right', 'down')  # increasing coordinate
  elif kind == 'turn':
    centre = rng.uniform(-_JITTER_DEGREES, _JITTER_DEGREES)
    lo_hi[0:2] = rng.uniform(14.0, 18.0, size=2)[:, None]
    lo_hi[2] = (centre - TURN_DEGREES / 2, centre + TURN_DEGREES / 2)
    lo_hi[3] = rng.uniform(*_SCALE_JITTER)
    forward = motion == 'clockwise'  # increasing angle
  else:
    lo_hi[0:2] = rng.uniform(14.0, 18.0, size=2)[:, None]
    lo_hi[2] = rng.uniform(-_JITTER_DEGREES, _JITTER_DEGREES)
    lo_hi[3] = SCALE_RANGE
    forward = motion == 'growing'  # increasing scale
  if not forward:
    lo_hi = lo_hi[:, ::-1]
  t = np.linspace(0.0, 1.0, NUM_FRAMES)[:, None]
  return lo_hi[:, 0] * (1 - t) + lo_hi[:, 1] * t


def render_frame(scan: np.ndarray, cx: float, cy: float, angle: float,
                 scale: float) -> np.ndarray:
  """One frame: the scan warped onto a black FRAME_SIZE square.

  Args:
    scan: [8, 8] ink intensities 0..16 (sklearn's digits).
    cx, cy: where the scan's centre lands (frame pixels).
    angle: clockwise rotation on screen, degrees.
    scale: size relative to BASE_PIXELS per scan pixel.
  Returns:
    uint8 [FRAME_SIZE, FRAME_SIZE], 0 = background, 255 = full ink.
  """
  src = Image.fromarray(np.asarray(scan, np.float32) / 16.0, mode='F')
  # PIL's AFFINE maps each output pixel (u, v) to the input pixel
  # (a u + b v + c, d u + e v + f): the inverse of rotate-then-scale about
  # the centre. With y pointing down, a positive angle turns clockwise.
  theta = np.deg2rad(angle)
  k = 1.0 / (BASE_PIXELS * scale)
  cos, sin = np.cos(theta) * k, np.sin(theta) * k
  half = SCAN_SIZE / 2
  coeffs = (cos, sin, half - cos * cx - sin * cy,
            -sin, cos, half + sin * cx - cos * cy)
  out = src.transform((FRAME_SIZE, FRAME_SIZE), Image.Transform.AFFINE,
                      coeffs, resample=Image.Resampling.BILINEAR, fillcolor=0)
  return np.round(np.clip(np.asarray(out), 0, 1) * 255).astype(np.uint8)


def render(scan: np.ndarray, motion: str,
           rng: np.random.Generator) -> np.ndarray:
  """uint8 [NUM_FRAMES, FRAME_SIZE, FRAME_SIZE]: `scan` doing `motion`."""
  return np.stack([render_frame(scan, *params)
                   for params in trajectory(motion, rng)])
