"""Training tasks: what a batch holds, the loss, and what evaluation sees.

A task is registered with `@registry.register('task', name)`, is built once
per run as `Task(config)` (a subclass of multimodal.tasks.base.Task) and
provides
  fields                 batch fields of training (the pipeline makes them)
  eval_fields            fields + those its evaluators ask for
  loss(model, batch)     -> (scalar loss, dict of scalar metrics), traced in jit
  outputs_fn             jitted (model, global eval batch) -> dict of
                         per-example arrays [B, ...], built once per run
  postprocess(outputs, tokenizer) -> outputs (e.g. token ids decoded to text)
  evaluators             config.evals built once (multimodal.evaluators)
  evaluate(model, batches, tokenizer, mesh, prefix)
                         the one evaluation loop (tasks/base.py): every
                         batch through outputs_fn, padding rows dropped,
                         outputs concatenated, then every evaluator;
                         -> {'<split>/<metric>': float}, identical on every
                         process
  summary(metrics, prefix) -> one line for the log
"""
from multimodal.tasks import captioning  # pylint: disable=unused-import
from multimodal.tasks import contrastive  # pylint: disable=unused-import
from multimodal.tasks import tts  # pylint: disable=unused-import
from multimodal.tasks import vqa  # pylint: disable=unused-import
