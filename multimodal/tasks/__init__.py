"""Training tasks: what a batch holds, the loss, and the evaluators.

A task is registered with `@registry.register('task', name)` and is built as
`Task(config)`; it provides
  fields                 batch fields the input pipeline must produce
  loss(model, batch)     -> (scalar loss, dict of scalar metrics), traced in jit
  evaluate(model, batches, tokenizer, mesh, prefix='test')
                         -> {name: float}, identical on every process, from
                         one pass of the eval split. `model`'s parameters may
                         be sharded over `mesh`; `batches` are global batches
                         (jax.Arrays split over the mesh's batch axes) with a
                         bool `mask` field marking real (not padding) rows;
                         `tokenizer` is multimodal.data.text.Tokenizer;
                         metric names start with `prefix` (the split).
  summary(metrics, prefix) -> one line for the log
"""
from multimodal.tasks import captioning  # pylint: disable=unused-import
from multimodal.tasks import contrastive  # pylint: disable=unused-import
from multimodal.tasks import vqa  # pylint: disable=unused-import
