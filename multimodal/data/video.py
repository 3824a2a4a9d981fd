"""Video clips: frames from arrays, encoded frames or video files; temporal
sampling; one augmentation draw for every frame of a clip.

A clip value is one of
  uint8 [T, H, W] or [T, H, W, C] pixels (C = 1 or 3);
  a sequence of T frames, each encoded image bytes or uint8 [H, W(, C)];
  bytes of one file: a .npy array as above (NumPy's magic prefix), or an
  encoded video (mp4, webm, ...) decoded with PyAV (`pip install av`, the
  'video' extra), when it is installed.
"""
from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import numpy as np

from multimodal.data import image as image_lib

OFFSETS = ('random', 'center')
FRAME_ORDERS = ('original', 'shuffled', 'reversed')
_NPY_MAGIC = b'\x93NUMPY'


class VideoDecodeError(ValueError):
  pass


def frame_indices(length: int, frames: int, stride: int, *,
                  rng: np.random.Generator | None = None) -> np.ndarray:
  """Indices of `frames` frames, `stride` apart, out of a clip of `length`.

  The window of (frames - 1) * stride + 1 frames starts at a random offset
  when `rng` is given, else centred. A clip shorter than the window repeats
  its last frame (indices clamped). Returns int64 [frames].
  """
  if length < 1:
    raise VideoDecodeError('The clip has no frames.')
  span = (frames - 1) * stride + 1
  free = max(length - span, 0)
  start = int(rng.integers(0, free + 1)) if rng is not None else free // 2
  return np.minimum(start + stride * np.arange(frames), length - 1)


def reorder(frames: list, order: str, rng: np.random.Generator) -> list:
  """The sampled frames in `order` (FRAME_ORDERS); 'shuffled' draws from
  `rng`, so one example's order is reproducible."""
  if order == 'reversed':
    return frames[::-1]
  if order == 'shuffled':
    return [frames[i] for i in rng.permutation(len(frames))]
  return frames


def clip_frames(value) -> tuple[int, Callable[[int], Any]]:
  """(number of frames, frame(i) -> encoded bytes or uint8 pixels).

  Only the frames asked for are decoded (a list of encoded frames); an
  encoded video file is decoded whole, once.
  """
  if isinstance(value, (bytes, bytearray, memoryview)):
    value = bytes(value)
    if value.startswith(_NPY_MAGIC):
      try:
        value = np.load(io.BytesIO(value), allow_pickle=False)
      except ValueError as e:
        raise VideoDecodeError(f'Could not read .npy bytes ({e}).') from e
    else:
      value = decode_video(value)
  if isinstance(value, np.ndarray) and value.dtype.kind == 'S':
    value = [bytes(v) for v in value]  # fixed-width bytes: encoded frames
  if isinstance(value, np.ndarray) and value.dtype != object:
    if value.dtype != np.uint8 or value.ndim not in (3, 4) or (
        value.ndim == 4 and value.shape[3] not in (1, 3)):
      raise VideoDecodeError(
          f'Expected uint8 frames [T, H, W] or [T, H, W, 1|3], got '
          f'{value.dtype} {value.shape}; store clips as uint8 arrays, '
          'lists of encoded frames or video files.')
    return value.shape[0], value.__getitem__
  if isinstance(value, (list, tuple, np.ndarray)):
    frames = list(value)
    return len(frames), frames.__getitem__
  raise VideoDecodeError(
      f'A video value must be uint8 frames, a list of frames or file bytes, '
      f'got {type(value).__name__}.')


def decode_video(data: bytes) -> np.ndarray:
  """Encoded video file bytes -> uint8 [T, H, W, 3] (every frame), with
  PyAV (FFmpeg's libraries). Raises ValueError when PyAV is not installed,
  VideoDecodeError when the bytes are not a video it can read."""
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError(
        f'{len(data)} bytes that are not .npy frames: decoding a video file '
        'needs PyAV, which is not installed (pip install av, or pip install '
        '-e .[video]). Or store clips as uint8 arrays or lists of encoded '
        'frames.') from e
  try:
    with av.open(io.BytesIO(data), mode='r') as container:
      frames = [f.to_ndarray(format='rgb24')
                for f in container.decode(video=0)]
  except (av.FFmpegError, IndexError, ValueError) as e:
    raise VideoDecodeError(f'Could not decode {len(data)} bytes as a video '
                           f'({e}).') from e
  if not frames:
    raise VideoDecodeError(f'{len(data)} bytes of video hold no frames.')
  return np.stack(frames)


def to_frames(frames: Sequence, size: int, channels: int, *,
              rng: np.random.Generator | None = None, max_shift: float = 0.0,
              max_scale: float = 0.0, max_rotate: float = 0.0
              ) -> np.ndarray:
  """Encoded or uint8 frames -> float32 [T, size, size, channels] in
  [-1, 1].

  With `rng`, one affine jitter (image_lib.draw_affine) is drawn for the
  clip and applied to every frame, so the motion between frames is kept.
  """
  affine = None
  if rng is not None:
    affine = image_lib.draw_affine(rng, size, max_shift=max_shift,
                                   max_scale=max_scale, max_rotate=max_rotate)
  out = []
  for frame in frames:
    try:
      img = image_lib.decode_image(frame, channels)
    except image_lib.ImageDecodeError as e:
      raise VideoDecodeError(f'A frame of the clip: {e}') from e
    out.append(image_lib.to_array(img, size, affine=affine))
  return np.stack(out)


def save_npy(frames: np.ndarray) -> bytes:
  """uint8 frames -> .npy bytes (what a record or a file may hold)."""
  buf = io.BytesIO()
  np.save(buf, np.asarray(frames), allow_pickle=False)
  return buf.getvalue()
