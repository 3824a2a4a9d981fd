"""The one registry of models and tasks.

Everything a config names by string is looked up here, so adding a model or a
task is one new module plus one ``@register`` line:

    @registry.register('model', 'vit')
    class ViT(nnx.Module): ...

    registry.get('model', 'vit')  # -> ViT

Kinds in use: 'model' (Flax NNX modules built from a config), 'task'
(training objectives with their evaluators) and 'source' (data formats,
functions (dataset_cfg, split) -> random-access source; see
multimodal.data.sources).
"""
from __future__ import annotations

from typing import Any, Callable

_REGISTRY: dict[str, dict[str, Any]] = {}


def register(kind: str, name: str) -> Callable[[Any], Any]:
  """Class/function decorator that files ``obj`` under ``(kind, name)``."""

  def wrap(obj):
    table = _REGISTRY.setdefault(kind, {})
    if name in table and table[name] is not obj:
      raise ValueError(f'{kind} {name!r} is registered twice: by '
                       f'{table[name]!r} and by {obj!r}. Pick another name.')
    table[name] = obj
    return obj

  return wrap


def get(kind: str, name: str) -> Any:
  """Returns the object registered as ``(kind, name)`` or a clear error."""
  _import_builtins()
  table = _REGISTRY.get(kind, {})
  if name not in table:
    known = ', '.join(sorted(table)) or '(none)'
    raise KeyError(f'Unknown {kind} {name!r}. Registered {kind}s: {known}.')
  return table[name]


def names(kind: str) -> list[str]:
  _import_builtins()
  return sorted(_REGISTRY.get(kind, {}))


def _import_builtins() -> None:
  # Importing the packages runs their @register decorators.
  # pylint: disable=g-import-not-at-top,unused-import
  import multimodal.data.sources
  import multimodal.models
  import multimodal.tasks
