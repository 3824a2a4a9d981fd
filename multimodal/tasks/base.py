"""What every task shares: building its evaluators once and the one
evaluation loop (mask, fetch, concatenate, evaluate).

A task subclass sets `fields` (batch fields of training), builds
`self.outputs_fn` once in its constructor (a jitted (model, batch) -> dict
of per-example arrays, leading axis B) and may override `postprocess` (e.g.
decode token ids to strings) and `context`.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from multimodal import distributed
from multimodal import evaluators


def collect(fn, model, batches: Iterable[dict]) -> dict[str, np.ndarray]:
  """Runs `fn(model, batch)` over global batches and returns each output's
  rows of real examples (the batch's bool `mask`), concatenated in order,
  identical on every process."""
  parts: dict[str, list[np.ndarray]] = {}
  for batch in batches:
    keep = distributed.fetch(batch.pop('mask'))
    for key, value in fn(model, batch).items():
      parts.setdefault(key, []).append(distributed.fetch(value)[keep])
  return {k: np.concatenate(v) for k, v in parts.items()}


class Task:
  """Base of the tasks (contract in multimodal/tasks/__init__.py)."""
  fields: list[str]
  outputs_fn: Any
  # Methods the task calls on config.model's class: the config check names
  # a model without them (and the registered models that have them).
  model_methods: tuple[str, ...] = ()

  def build_evaluators(self, config) -> None:
    self.evaluators = evaluators.build(config.get('evals'), self)
    extra = {f for ev in self.evaluators.values() for f in ev.fields}
    self.eval_fields = sorted(set(self.fields) | extra)

  def postprocess(self, outputs: dict, tokenizer) -> dict:
    del tokenizer
    return outputs

  def context(self, model, tokenizer, mesh) -> evaluators.Context:
    del model, mesh
    return evaluators.Context(tokenizer=tokenizer)

  def evaluate(self, model, batches, tokenizer, mesh, prefix='test') -> dict:
    """One pass over the eval split, then every configured evaluator."""
    outputs = self.postprocess(collect(self.outputs_fn, model, batches),
                               tokenizer)
    ctx = self.context(model, tokenizer, mesh)
    metrics = evaluators.run(self.evaluators, outputs, ctx, prefix)
    metrics[f'{prefix}/num_examples'] = float(self.num_examples(outputs))
    return metrics

  @staticmethod
  def num_examples(outputs: dict) -> int:
    first = next(iter(outputs.values()), ())
    return len(first)

  def summary(self, metrics: dict, prefix='test') -> str:
    shown = [k for k in sorted(metrics) if k.startswith(prefix + '/')
             and not k.endswith('num_examples')][:6]
    return ', '.join(f'{k[len(prefix) + 1:]} {metrics[k]:.4f}' for k in shown)
