"""Evaluators: metrics composed in config.evals (big_vision style).

  c.evals = dict(
      zeroshot_image=dict(type='zeroshot', media='image', text='image_text',
                          class_names=('cat', 'dog'),
                          prompts=('a photo of a {}',)),
      retrieval=dict(type='retrieval', ks=(1, 5, 10)),
  )

Each entry names a registered evaluator (``@registry.register('evaluator',
TYPE)``, here or in your own package listed in config.imports) and its
arguments. The task builds every entry once per run (`build`):

  ev = cls(task, **args)       # checks its arguments against the task
  ev.fields                    # batch fields it needs besides the task's
  ev(outputs, ctx) -> {name: float}

and after its one pass over the eval split (multimodal.tasks.base) calls
each with the task's outputs: per-example arrays or lists concatenated over
the split (each task's docstring lists them, e.g. contrastive's
'embedding/<field>' float32 [N, E]) and a `Context` (tokenizer, the task's
jitted helpers such as embedding texts). Metric names are
'<split>/<name the evaluator returns>'; two evaluators returning one name
is an error.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from multimodal import registry


@dataclasses.dataclass
class Context:
  """What an evaluator may use besides the outputs.

  tokenizer: multimodal.data.text.Tokenizer of the run.
  embed_texts: (text field, list of str) -> float32 [n, E] embeddings by
    that field's tower (contrastive tasks; None otherwise).
  """
  tokenizer: Any
  embed_texts: Callable[[str, list[str]], Any] | None = None


class Evaluator:
  """Base of the evaluators (see the module docstring)."""
  fields: tuple[str, ...] = ()

  def __call__(self, outputs: dict[str, Any], ctx: Context
               ) -> dict[str, float]:
    raise NotImplementedError


def build(evals, task) -> dict[str, Evaluator]:
  """{entry name: evaluator} for config.evals (a dict of dicts with `type`)."""
  out = {}
  for name, entry in (evals or {}).items():
    args = dict(entry.to_dict() if hasattr(entry, 'to_dict') else entry)
    kind = args.pop('type', None)
    if kind is None:
      raise ValueError(f'config.evals.{name} needs a `type` (one of '
                       f'{registry.names("evaluator")}).')
    cls = registry.get('evaluator', kind)
    try:
      out[name] = cls(task, **args)
    except (TypeError, ValueError) as e:
      raise ValueError(f'config.evals.{name} (type {kind!r}): {e}') from e
  return out


def run(evaluators: dict[str, Evaluator], outputs: dict[str, Any],
        ctx: Context, prefix: str) -> dict[str, float]:
  """Every evaluator on the outputs; names prefixed with the split."""
  metrics = {}
  for name, ev in evaluators.items():
    for key, value in ev(outputs, ctx).items():
      full = f'{prefix}/{key}'
      if full in metrics:
        raise ValueError(f'config.evals.{name} returns {key!r}, which '
                         'another evaluator returned too; give them '
                         'different arguments.')
      metrics[full] = float(value)
  return metrics


# pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
from multimodal.evaluators import captioning  # noqa: E402,F401 (registers)
from multimodal.evaluators import retrieval  # noqa: E402,F401 (registers)
from multimodal.evaluators import spectrogram  # noqa: E402,F401 (registers)
from multimodal.evaluators import vqa  # noqa: E402,F401 (registers)
from multimodal.evaluators import zeroshot  # noqa: E402,F401 (registers)
