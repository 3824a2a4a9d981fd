"""build_model: a registered model from a config naming it."""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from flax import nnx

from multimodal import registry


def config_to_dict(config: Any) -> dict[str, Any]:
  """A plain (shallow-copied) dict from a dict or ml_collections.ConfigDict."""
  if hasattr(config, 'to_dict'):
    return config.to_dict()
  if isinstance(config, Mapping):
    return dict(config)
  raise TypeError(f'Expected a dict or ConfigDict, got {type(config)}.')


def build_model(config: Any, *, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the model registered under ``config['name']``.

  Args:
    config: dict or ConfigDict; key `name` selects the registered model, the
      remaining keys are its constructor's keyword arguments.
    rngs: the parameter (and, if used, dropout) random streams.

  Raises:
    ValueError: naming the model, the unknown or missing arguments, and the
      accepted ones, when the config does not fit the constructor.
  """
  kwargs = config_to_dict(config)
  if 'name' not in kwargs:
    raise ValueError(f'Model config needs a `name` key; got keys '
                     f'{sorted(kwargs)}. Known models: '
                     f'{registry.names("model")}.')
  name = kwargs.pop('name')
  cls = registry.get('model', name)
  params = inspect.signature(cls.__init__).parameters
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    accepted = sorted(k for k, p in params.items()
                      if k not in ('self', 'rngs') and
                      p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    unknown = sorted(set(kwargs) - set(accepted))
    missing = sorted(k for k in accepted if k not in kwargs and
                     params[k].default is inspect.Parameter.empty)
    if unknown or missing:
      problems = []
      if unknown:
        problems.append(f'unknown argument(s) {unknown}')
      if missing:
        problems.append(f'missing required argument(s) {missing}')
      raise ValueError(f'Model {name!r} ({cls.__name__}): '
                       f'{" and ".join(problems)}. Accepted arguments: '
                       f'{", ".join(accepted)}.')
  return cls(**kwargs, rngs=rngs)
