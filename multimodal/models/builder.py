"""build_model: a registered module from a config naming it.

Registry kinds of modules (see multimodal.registry):
  'model'    a whole model, what config.model names: contrastive,
             encoder_decoder, and every encoder or decoder that can stand
             alone (an imported ViT or Whisper encoder is a whole model).
  'encoder'  a tower: (inputs, *, deterministic) -> (pooled [B, width],
             tokens [B, N, width]), with a `width` attribute.
  'decoder'  a text decoder, as TextDecoder (its memory_width is set by the
             model using it).
  'fusion'   fuses the towers' tokens into a decoder memory; the contract is
             in fusion.py's docstring.
  'layer'    building blocks a config may name inside a custom model (e.g.
             'gated_xattn'), none of the contracts above.
"""
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


def with_defaults(config: Any, **defaults: Any) -> dict[str, Any]:
  """A part's config (dict) with `defaults` filling the keys it leaves out.

  A key the part sets to None also takes the default (None: "the enclosing
  model's", so an experiment config can list the key for the command line
  without fixing its value); defaults that are None fill nothing. E.g. a
  tower's dtype from the model's dtype.
  """
  config = {k: v for k, v in config_to_dict(config).items()
            if not (k in defaults and v is None)}
  for key, value in defaults.items():
    if value is not None:
      config.setdefault(key, value)
  return config


def accepted_arguments(cls) -> list[str] | None:
  """The config keys `cls` takes, or None when it takes any (**kwargs).

  A module that passes its **options on says where with a class attribute
  OPTIONS = that callable (e.g. a dataclass of options, or the parent
  class): its keyword parameters are accepted too.
  """
  params = inspect.signature(cls.__init__).parameters
  names = [k for k, p in params.items() if k not in ('self', 'rngs') and
           p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
  if any(p.kind is p.VAR_KEYWORD for p in params.values()):
    options = getattr(cls, 'OPTIONS', None)
    if options is None:
      return None
    init = options.__init__ if isinstance(options, type) else options
    names += [k for k, p in inspect.signature(init).parameters.items()
              if k not in ('self', 'rngs') and p.kind is not p.VAR_KEYWORD]
  return sorted(set(names))


def build_model(config: Any, *, rngs: nnx.Rngs,
                kind: str = 'model') -> nnx.Module:
  """Builds the module registered as (`kind`, config['name']).

  Args:
    config: dict or ConfigDict; key `name` selects the registered module,
      the remaining keys are its constructor's keyword arguments.
    rngs: the parameter (and, if used, dropout) random streams.
    kind: the registry kind to look `name` up in (see the module docstring).

  Raises:
    KeyError: for a name not registered as `kind`, listing those that are.
    ValueError: naming the module, the unknown or missing arguments, and
      the accepted ones, when the config does not fit the constructor.
  """
  kwargs = config_to_dict(config)
  if 'name' not in kwargs:
    raise ValueError(f'A {kind} config needs a `name` key; got keys '
                     f'{sorted(kwargs)}. Registered {kind}s: '
                     f'{registry.names(kind)}.')
  name = kwargs.pop('name')
  cls = registry.get(kind, name)
  accepted = accepted_arguments(cls)
  if accepted is not None:
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    missing = sorted(k for k in accepted if k not in kwargs and k in params
                     and params[k].default is inspect.Parameter.empty)
    if unknown or missing:
      problems = []
      if unknown:
        problems.append(f'unknown argument(s) {unknown}')
      if missing:
        problems.append(f'missing required argument(s) {missing}')
      raise ValueError(f'{kind.capitalize()} {name!r} ({cls.__name__}): '
                       f'{" and ".join(problems)}. Accepted arguments: '
                       f'{", ".join(accepted)}.')
  return cls(**kwargs, rngs=rngs)
