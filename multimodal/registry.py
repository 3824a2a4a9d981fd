"""The one registry of the framework's extension points.

Everything a config names by string is looked up here, so adding a fusion,
an encoder, a data source, a field kind, a task or an evaluator is one new
module with one ``@register`` line, in this package or in your own:

    @registry.register('fusion', 'my_fusion')
    class MyFusion(nnx.Module): ...

    registry.get('fusion', 'my_fusion')  # -> MyFusion

Kinds and where their contracts are documented:
  model      models built from a top-level config.model, e.g. contrastive,
             encoder_decoder, or one tower on its own (multimodal/models)
  encoder    modality towers of those models (multimodal/models/builder.py)
  decoder    text decoders (multimodal/models/decoder.py)
  fusion     memory fusions of an encoder-decoder (multimodal/models/fusion.py)
  layer      building blocks named by config inside a model
  activation the MLPs' nonlinearities (multimodal/models/activations.py)
  source     data sources named by config.dataset.source
             (multimodal/data/sources)
  field      preprocessing of one field kind, e.g. image, audio, text
             (multimodal/data/kinds)
  task       training objectives (multimodal/tasks)
  contrastive_loss
             a contrastive model's pair loss (multimodal/losses.py)
  optimizer  optax optimizers named by config.optimizer.name
  schedule   learning-rate decays after the warmup, config.optimizer.schedule
             (both in multimodal/optimizer.py)
  evaluator  metrics composed in config.evals (multimodal/evaluators)

A module outside the package registers when it is imported: list it in
`config.imports` (e.g. ``('my_lab.fusions',)``) and the trainer imports it
before building anything (`import_modules`).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Iterable

_REGISTRY: dict[str, dict[str, Any]] = {}


def register(kind: str, name: str) -> Callable[[Any], Any]:
  """Class/function decorator that files ``obj`` under ``(kind, name)``."""

  def wrap(obj):
    table = _REGISTRY.setdefault(kind, {})
    if name in table and table[name] is not obj and not _same_definition(
        table[name], obj):
      raise ValueError(f'{kind} {name!r} is registered twice: by '
                       f'{table[name]!r} and by {obj!r}. Pick another name.')
    table[name] = obj
    return obj

  return wrap


def _same_definition(a, b) -> bool:
  # One file imported under two module names (run as __main__ and imported)
  # registers the same definition twice; that is not a clash.
  return (getattr(a, '__qualname__', None) == getattr(b, '__qualname__', '')
          and _source_file(a) == _source_file(b) is not None)


def _source_file(obj) -> str | None:
  try:
    return inspect.getsourcefile(obj)
  except TypeError:
    return None


def get(kind: str, name: str) -> Any:
  """Returns the object registered as ``(kind, name)`` or a clear error."""
  _import_builtins()
  table = _REGISTRY.get(kind, {})
  if name not in table:
    known = ', '.join(sorted(table)) or '(none)'
    raise KeyError(f'Unknown {kind} {name!r}. Registered {kind}s: {known}. '
                   'A module of your own registers with @registry.register('
                   f'{kind!r}, NAME) and is imported by listing it in '
                   'config.imports.')
  return table[name]


def names(kind: str) -> list[str]:
  _import_builtins()
  return sorted(_REGISTRY.get(kind, {}))


def import_modules(modules: Iterable[str]) -> None:
  """Imports each dotted module name (config.imports) so its @register
  lines run; a clear error names a module that cannot be imported."""
  for name in modules or ():
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise ImportError(
          f'config.imports lists {name!r}, which cannot be imported ({e}). '
          'Install your package (pip install -e .) or put its directory on '
          'PYTHONPATH.') from e


def _import_builtins() -> None:
  # Importing the packages runs their @register decorators.
  # pylint: disable=g-import-not-at-top,unused-import
  import multimodal.data.kinds
  import multimodal.evaluators
  import multimodal.losses
  import multimodal.data.sources
  import multimodal.models
  import multimodal.optimizer
  import multimodal.tasks
