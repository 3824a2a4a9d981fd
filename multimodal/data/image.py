"""Image decoding, resizing, normalisation and light augmentation."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageDecodeError(ValueError):
  pass


def decode_image(data: bytes | np.ndarray, channels: int) -> Image.Image:
  """PNG/JPEG/... bytes (decoded with Pillow), or already decoded uint8
  pixels [H, W] / [H, W, 1 or 3] (what a tfds Image feature reads as), to a
  Pillow image of mode 'L' (channels 1) or 'RGB' (channels 3)."""
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, got {channels}.')
  if isinstance(data, np.ndarray):
    return _from_pixels(data).convert('L' if channels == 1 else 'RGB')
  try:
    img = Image.open(io.BytesIO(data))
    img.load()
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise ImageDecodeError(
        f'Could not decode {len(data)} bytes as an image ({e}). The record '
        'is corrupt or not an encoded image (store PNG/JPEG bytes).') from e
  return img.convert('L' if channels == 1 else 'RGB')


def _from_pixels(pixels: np.ndarray) -> Image.Image:
  if pixels.dtype != np.uint8 or not (
      pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (1, 3))):
    raise ImageDecodeError(
        f'Expected uint8 pixels [H, W] or [H, W, 1|3], got {pixels.dtype} '
        f'{pixels.shape}; store images as encoded bytes or uint8 arrays.')
  if pixels.ndim == 3 and pixels.shape[2] == 1:
    pixels = pixels[..., 0]
  return Image.fromarray(pixels)


def resize(img: Image.Image, size: int) -> Image.Image:
  """`img` at size x size (bilinear); itself when already that size."""
  if img.size == (size, size):
    return img
  return img.resize((size, size), Image.BILINEAR)


JITTER_KEYS = ('max_shift', 'max_scale', 'max_rotate')


def jitter_options(augment) -> dict[str, float]:
  """config.input.augment (a dict or ConfigDict, or None) as plain floats
  for draw_affine / to_array: read once per pipeline, because ConfigDict
  lookups per example cost more than the jitter itself. {} when None."""
  if not augment:
    return {}
  return {k: float(augment.get(k) or 0.0) for k in JITTER_KEYS}


def draw_affine(rng: np.random.Generator, size: int, *,
                max_shift: float = 0.0, max_scale: float = 0.0,
                max_rotate: float = 0.0) -> tuple[float, ...] | None:
  """A random affine jitter of a size x size image, as Pillow's AFFINE
  coefficients: rotation up to `max_rotate` degrees, zoom up to
  +-`max_scale` (fraction), shifts up to `max_shift` (fraction of the side).
  None when every amount is 0 (nothing drawn)."""
  if not (max_shift or max_scale or max_rotate):
    return None
  angle = np.deg2rad(rng.uniform(-max_rotate, max_rotate))
  scale = 1.0 + rng.uniform(-max_scale, max_scale)
  tx, ty = rng.uniform(-max_shift, max_shift, size=2) * size
  c = (size - 1) / 2
  cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
  # Pillow's affine maps output coordinates to input ones.
  return (cos, sin, c - cos * c - sin * c - tx,
          -sin, cos, c + sin * c - cos * c - ty)


def to_array(img: Image.Image, size: int, *, rng: np.random.Generator | None
             = None, max_shift: float = 0.0, max_scale: float = 0.0,
             max_rotate: float = 0.0,
             affine: tuple[float, ...] | None = None) -> np.ndarray:
  """Resizes to size x size and maps pixels to [-1, 1].

  With `rng`, applies a random affine jitter first (draw_affine's); or the
  given `affine` coefficients (one draw shared by the frames of a clip).
  Returns float32 [size, size, C].
  """
  img = resize(img, size)
  if rng is not None:
    affine = draw_affine(rng, size, max_shift=max_shift, max_scale=max_scale,
                         max_rotate=max_rotate)
  if affine is not None:
    img = img.transform((size, size), Image.AFFINE, affine, Image.BILINEAR)
  x = np.asarray(img, np.float32)
  if x.ndim == 2:
    x = x[..., None]
  return x / 127.5 - 1.0
