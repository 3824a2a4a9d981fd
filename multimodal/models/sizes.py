"""Named transformer sizes, big_vision style: variant='B/16', 'S', 'L/14'.

The letter names a row of SIZES (width, depth, mlp_dim, num_heads, as in
the ViT scaling papers); an optional '/N' after it is a patch size (N x N
patches) for towers that cut patches. Every encoder and the decoder take
`variant`; keys given explicitly in the same config override the variant's
values (`variant='B', depth=6` is a 6-layer B). An explicit `mlp_ratio`
without `mlp_dim` drops the variant's mlp_dim, so the ratio is used.
"""
from __future__ import annotations

from typing import Any, Mapping

# name: (width, depth, mlp_dim, num_heads). Ti..H from "An Image is Worth
# 16x16 Words" / DeiT, g and G from "Scaling Vision Transformers", So400m
# from "Getting ViT in Shape"; mu is a toy size for tests.
SIZES: dict[str, tuple[int, int, int, int]] = {
    'mu': (32, 1, 128, 2),
    'Ti': (192, 12, 768, 3),
    'S': (384, 12, 1536, 6),
    'M': (512, 12, 2048, 8),
    'B': (768, 12, 3072, 12),
    'L': (1024, 24, 4096, 16),
    'So400m': (1152, 27, 4304, 16),
    'H': (1280, 32, 5120, 16),
    'g': (1408, 40, 6144, 16),
    'G': (1664, 48, 8192, 16),
    'e': (1792, 56, 15360, 16),
}
SIZE_KEYS = ('width', 'depth', 'mlp_dim', 'num_heads')
# Without a variant or explicit keys: a small model (mlp_dim None: the MLP
# hidden size is int(width * mlp_ratio)).
DEFAULT_SIZE = dict(width=128, depth=2, num_heads=4, mlp_ratio=4,
                    mlp_dim=None)


def parse_variant(variant: str) -> tuple[dict[str, int], int | None]:
  """'B/16' -> ({width: 768, depth: 12, mlp_dim: 3072, num_heads: 12}, 16).

  The patch size is None when the variant has no '/N'.
  """
  name, _, patch = str(variant).partition('/')
  if name not in SIZES:
    raise ValueError(f'Unknown model variant {variant!r}: the size must be '
                     f'one of {", ".join(SIZES)}, optionally followed by '
                     "'/<patch size>' (e.g. 'B/16').")
  if patch and not (patch.isdigit() and int(patch) > 0):
    raise ValueError(f'Model variant {variant!r}: the patch size after '
                     "'/' must be a positive integer, e.g. 'B/16'.")
  return dict(zip(SIZE_KEYS, SIZES[name])), int(patch) if patch else None


def resolve(variant: str | None, given: Mapping[str, Any], *,
            patches: bool) -> tuple[dict[str, Any], int | None]:
  """The variant's sizes overridden by the explicitly `given` keys.

  Args:
    variant: e.g. 'B/16', 'B', or None (only given and the defaults).
    given: the keys the config sets explicitly (only those: a constructor
      default must not count as an override).
    patches: whether the module cuts patches; if not, a '/N' is an error.

  Returns:
    (given, plus the variant's sizes it does not set, plus DEFAULT_SIZE's
    for the rest; patch size from '/N' or None).
  """
  if variant is None:
    return {**DEFAULT_SIZE, **given}, None
  values, patch = parse_variant(variant)
  if patch is not None and not patches:
    raise ValueError(f'Model variant {variant!r} has a patch size, but this '
                     "module cuts no patches: use the size alone, e.g. 'B'.")
  if 'mlp_ratio' in given and 'mlp_dim' not in given:
    del values['mlp_dim']
  return {**DEFAULT_SIZE, **values, **given}, patch
