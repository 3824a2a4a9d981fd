"""Parameter trees as flat dicts keyed by '/'-joined paths.

A path names one leaf of a nested parameter tree, e.g.
'towers/image/core/encoder/blocks/0/attn/query/kernel' (list items and
nnx.List entries by index). Configs address parameters with regexes over
such paths (optimizer groups, init_from); checkpoints and imports compare
trees by them. Depends on jax (tree utilities) only.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import jax


def _key_str(key) -> str:
  for attr in ('key', 'idx', 'name'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(path: Iterable[Any]) -> str:
  """A jax key path (or tuple of keys) -> 'a/b/0/c'."""
  return '/'.join(_key_str(k) for k in path)


def flatten(tree) -> dict[str, Any]:
  """{'a/b/0/c': leaf} for every leaf of a (nested dict) parameter tree."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {path_str(p): leaf for p, leaf in leaves}


def unflatten_like(flat: Mapping[str, Any], reference):
  """The tree of `reference`'s structure with leaves taken from `flat`."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(reference)
  return jax.tree_util.tree_unflatten(
      treedef, [flat[path_str(p)] for p, _ in leaves])


def check_same_tree(expected: Mapping[str, Any], got: Mapping[str, Any],
                    where: str) -> None:
  """Raises one error naming every missing/unexpected/reshaped parameter.

  Args:
    expected, got: flat dicts (path -> array or ShapeDtypeStruct).
    where: names `got`'s source in the error.
  """
  problems = describe_mismatch(
      missing=sorted(set(expected) - set(got)),
      unexpected=sorted(set(got) - set(expected)),
      mismatched=[(k, tuple(got[k].shape), tuple(expected[k].shape))
                  for k in sorted(set(expected) & set(got))
                  if tuple(got[k].shape) != tuple(expected[k].shape)])
  if problems:
    raise ValueError(f'The parameters at {where} do not fit the model:\n'
                     + problems)


# '<stack>/blocks/<i>/<rest>': one layer of an unrolled stack of blocks.
_LAYER = re.compile(r'^((?:.*/)?blocks)/\d+/(.*)$')


def layer_layout_hint(missing, unexpected) -> str:
  """A sentence when the two trees hold the same stacks of blocks, one per
  layer ('.../blocks/0/...') and the other stacked ('.../blocks/...' with a
  leading layer axis, as `scan_layers=True` stores them); '' otherwise.

  missing, unexpected: paths the model has and the source lacks, and the
  reverse.
  """
  for per_layer, stacked, model_stacks in ((unexpected, set(missing), True),
                                           (missing, set(unexpected), False)):
    stacks = sorted({m[1] for m in map(_LAYER.match, per_layer)
                     if m and f'{m[1]}/{m[2]}' in stacked})
    if stacks:
      layouts = ('per layer', 'stacked')[::1 if model_stacks else -1]
      return (f'  {", ".join(stacks)}: the source holds them {layouts[0]}, '
              f'the model {layouts[1]} (scan_layers={model_stacks}). Set '
              'scan_layers in the model config to match the source: '
              'parameters are not converted between the two layouts.')
  return ''


def describe_mismatch(missing, unexpected, mismatched,
                      limit: int = 25) -> str:
  """Indented lines listing the paths in each problem ('' if none), and a
  hint when the problem is scan_layers (see layer_layout_hint).

  mismatched: (path, source shape, model shape) triples.
  """
  lines = []
  for title, items in (('missing (the model has them, the source does not)',
                        missing),
                       ('unexpected (the source has them, the model does '
                        'not)', unexpected),
                       ('shape mismatch (source -> model)',
                        [f'{k}: {s} -> {t}' for k, s, t in mismatched])):
    if items:
      lines.append(f'  {len(items)} {title}:')
      lines += [f'    {k}' for k in items[:limit]]
      if len(items) > limit:
        lines.append(f'    ... and {len(items) - limit} more')
  hint = layer_layout_hint(missing, unexpected)
  if hint:
    lines.append(hint)
  return '\n'.join(lines)
