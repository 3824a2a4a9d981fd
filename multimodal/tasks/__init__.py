"""Training tasks: what a batch holds, the loss, and the evaluators.

A task is registered with `@registry.register('task', name)` and is built as
`Task(config)`; it provides
  fields                 batch fields the input pipeline must produce
  loss(model, batch)     -> (scalar loss, dict of scalar metrics), traced in jit
  evaluate(model, data)  -> dict of metrics (host side), on one eval pass
"""
from multimodal.tasks import captioning  # pylint: disable=unused-import
from multimodal.tasks import contrastive  # pylint: disable=unused-import
from multimodal.tasks import vqa  # pylint: disable=unused-import
