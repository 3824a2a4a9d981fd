r"""Evaluate an export (or workdir) with its experiment's evaluators.

  python -m multimodal.evaluate --pretrained exports/contrastive_digits \
      [--config.dataset.data_dir=data] [--config.eval_split=test] \
      [--config.eval_batch_size=64 ...] [--out metrics.json]

Runs the evaluators of the experiment config recorded with the model
(config.json: `config.evals`, the task's outputs, the eval split) over
config.eval_split, through the trainer's own evaluation
(multimodal.train.evaluate_model), so the figures are the ones training
logs. `--config.key=value` overrides any key of that recorded config (e.g.
where the data now lives). Quantized exports (multimodal/quantize.py) run
with their quantized weights. Prints the metrics and writes them as JSON to
--out if given.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from flax import nnx
import jax
import ml_collections as mlc
from ml_collections import config_flags

from multimodal import config as config_lib
from multimodal import mesh as mesh_lib
from multimodal import pretrained
from multimodal import registry
from multimodal import sharding
from multimodal import train
from multimodal.data import pipeline


def evaluate_pretrained(path: str, config: mlc.ConfigDict | None = None
                        ) -> dict:
  """{'<split>/<metric>': float} of the model at `path` (an export, a
  workdir or a checkpoint step) on config.eval_split.

  config: the experiment config to evaluate with; default the one recorded
  with the model (config.json).
  """
  export = pretrained.load_pretrained(path)
  config = config if config is not None else export.config
  if config is None:
    raise FileNotFoundError(
        f'{path} has no {pretrained.CONFIG_JSON}: evaluating needs the '
        'experiment config that trained it (its evals, data and input '
        'settings).')
  registry.import_modules(config.get('imports', ()))
  mesh = mesh_lib.build_mesh(config.mesh)
  mesh_lib.check_batch_size(config.eval_batch_size, mesh)
  task = registry.get('task', config.task)(config)
  rules = sharding.get_rules(config.sharding.rules,
                             config.sharding.get('overrides', ()))
  model = export.build_model()
  # Replicated on the mesh, beside the batches split over it.
  graphdef, state = nnx.split(model)
  model = nnx.merge(graphdef, jax.device_put(state, mesh_lib.replicated(mesh)))
  source = pipeline.open_source(config.dataset, config.eval_split)
  return train.evaluate_model(config, task, model, rules, mesh, source)


def _recorded_config(argv) -> mlc.ConfigDict | None:
  """The config.json recorded with --pretrained (read before the
  --config.* overrides are parsed against it)."""
  flags.FLAGS(argv, known_only=True)
  path = flags.FLAGS.pretrained
  if not path:
    return None
  config = pretrained.experiment_config(
      os.path.abspath(os.path.expanduser(path)))
  return mlc.ConfigDict(config) if config is not None else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  if not args.pretrained:
    raise app.UsageError('--pretrained (an export or workdir) is required.')
  logging.set_verbosity(logging.WARNING)
  config = args.config if 'config' in args else None
  try:
    metrics = evaluate_pretrained(args.pretrained, config)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  for k in sorted(metrics):
    print(f'{k}: {metrics[k]:.4f}')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(metrics, f, indent=2, sort_keys=True)


if __name__ == '__main__':
  flags.DEFINE_string('pretrained', None, 'Export or workdir to evaluate.')
  flags.DEFINE_string('out', None, 'Write the metrics to this JSON file.')
  recorded = _recorded_config(sys.argv)
  if recorded is not None:
    # multimodal.train (imported for its evaluation) defines --config as an
    # experiment *file*; here it is the recorded config, overridable key by
    # key.
    if 'config' in flags.FLAGS:
      delattr(flags.FLAGS, 'config')
    try:
      config_flags.DEFINE_config_dict('config', recorded, lock_config=True)
    except config_lib.FLAG_ERRORS as e:
      config_lib.exit_bad_flags(sys.argv, e)
  app.run(main, flags_parser=config_lib.parse_flags)
