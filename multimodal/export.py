r"""Export a trained checkpoint as a self-contained, parameters-only model.

  python -m multimodal.export --workdir workdirs/demo --out exports/demo \
      [--step 900]

writes to --out:
  params/            the parameters, an orbax checkpoint (nested dicts);
                     loads onto any mesh or device count
  model.safetensors  the same parameters with flat 'a/b/0/c' names, for
                     other frameworks (float32 unless trained in another
                     float dtype)
  model.json         the model config (multimodal.models.build_model input)
  config.json        the whole experiment config that trained it
  preprocess.json    the input settings: image size and channels, log-mel
                     parameters, text length, record fields
  tokenizer.model    the sentencepiece model of its text
  metrics.json       the evaluation metrics logged at the exported step
  README.md          a card: model, size, step, metrics, how to load

Load it with `multimodal.load_pretrained(OUT)` or initialise part of a new
model from it with an experiment's `config.init_from.path=OUT`.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil

from absl import app
from absl import flags
import jax
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy

from multimodal import metrics_writer
from multimodal import pretrained
from multimodal import registry
from multimodal import tree as tree_lib
from multimodal.data import kinds
from multimodal.data import pipeline

TOKENIZER = pretrained.TOKENIZER


def _metrics_at(workdir: str, step: int) -> dict:
  """Evaluation metrics (not train/) that metrics.jsonl has for `step`."""
  if not os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
    return {}
  out = {}
  for row in metrics_writer.read_metrics(workdir):
    if row.get('step') == step:
      out.update({k: v for k, v in row.items()
                  if k not in ('step', 'time') and not k.startswith('train/')})
  return out


def preprocess_settings(config: mlc.ConfigDict) -> dict:
  """What a user must do to inputs to feed the model, as plain JSON:
  {kind: that field kind's settings (multimodal/data/kinds), e.g. 'image':
  size, channels, range; 'fields': {field: {'key': record key, 'kind'}}}."""
  registry.import_modules(config.get('imports', ()))
  tokenizer = pipeline.make_tokenizer(config.input)
  out = {'fields': {}}
  for field, key in config.input.fields.items():
    kind = kinds.kind_of(field, config.input)
    out['fields'][field] = {'key': key, 'kind': kind}
    if kind not in out:
      settings = registry.get('field', kind)(
          config.input, train=False, tokenizer=tokenizer).settings()
      if kind == 'text':
        settings['tokenizer'] = TOKENIZER
      if settings:
        out[kind] = settings
  return out


def _data_name(dataset) -> str:
  """What the model was trained on, for the card: a tfds name, else the
  source and its files or root."""
  if dataset.get('name'):
    return dataset.name
  where = dataset.get('root') or dict(dataset.get('splits') or {}).get(
      'train', '')
  return f'{dataset.get("source", "?")} {where}'.strip()


def _card(config, model_config, step, num_params, metrics, out) -> str:
  lines = [f'# {model_config["name"]} model ({config.get("task")} task)', '',
           f'Exported {datetime.date.today().isoformat()} from step {step} '
           f'of training on `{_data_name(config.dataset)}`; '
           f'{num_params / 1e6:.2f}M parameters.', '',
           '## Load', '', '```python', 'import multimodal',
           f'export = multimodal.load_pretrained({out!r})',
           'model = export.build_model()  # flax.nnx module', '```', '',
           'or initialise part of a new model from it: '
           f'`--config.init_from.path={out}` (see multimodal/pretrained.py).',
           '', '## Metrics at export', '']
  if metrics:
    lines += ['| metric | value |', '| --- | --- |']
    lines += [f'| {k} | {v:.4f} |' for k, v in sorted(metrics.items())]
  else:
    lines.append('None were logged at this step.')
  return '\n'.join(lines) + '\n'


def export(workdir: str, out: str, step: int | None = None) -> str:
  """Writes the export of `workdir`'s checkpoint `step` to `out`.

  Returns the export directory. Raises FileExistsError if `out` exists and
  FileNotFoundError if the workdir has no such checkpoint.
  """
  workdir, out = os.path.abspath(workdir), os.path.abspath(out)
  if os.path.exists(out):
    raise FileExistsError(f'{out} exists; choose a new --out directory.')
  steps = pretrained.checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(f'No checkpoints in {workdir}/checkpoints.')
  step = steps[-1] if step is None else step
  if step not in steps:
    raise FileNotFoundError(f'No checkpoint of step {step} in {workdir}; it '
                            f'has steps {steps}.')
  with open(os.path.join(workdir, pretrained.CONFIG_JSON)) as f:
    config_dict = json.load(f)
  config = mlc.ConfigDict(config_dict)
  params = pretrained.read_params(
      os.path.join(workdir, 'checkpoints', str(step)))

  tmp = out + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  with ocp.StandardCheckpointer() as checkpointer:  # waits for the write
    checkpointer.save(os.path.join(tmp, pretrained.PARAMS_DIR), params)
  flat = {k: np.ascontiguousarray(v) for k, v in
          tree_lib.flatten(params).items()}
  safetensors.numpy.save_file(
      flat, os.path.join(tmp, 'model.safetensors'),
      metadata={'format': 'multimodal', 'step': str(step)})
  files = {
      pretrained.MODEL_JSON: config_dict['model'],
      pretrained.CONFIG_JSON: config_dict,
      pretrained.PREPROCESS_JSON: preprocess_settings(config),
      pretrained.METRICS_JSON: _metrics_at(workdir, step),
  }
  for name, value in files.items():
    with open(os.path.join(tmp, name), 'w') as f:
      json.dump(value, f, indent=2, sort_keys=True)
  shutil.copyfile(pipeline.tokenizer_path(config.input),
                  os.path.join(tmp, TOKENIZER))
  num_params = sum(v.size for v in flat.values())
  with open(os.path.join(tmp, 'README.md'), 'w') as f:
    f.write(_card(config, config_dict['model'], step, num_params,
                  files[pretrained.METRICS_JSON], out))
  os.replace(tmp, out)  # a reader never sees a half-written export
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  if not args.workdir or not args.out:
    raise app.UsageError('Both --workdir and --out are required.')
  if jax.process_count() > 1:
    raise app.UsageError('Run the export as a single process.')
  path = export(args.workdir, args.out, args.step)
  print(f'Exported to {path}')


if __name__ == '__main__':
  # Defined here, not at import: the library imports this module next to
  # multimodal.train, whose --workdir flag has the same name.
  flags.DEFINE_string('workdir', None, 'Training workdir to export.')
  flags.DEFINE_string('out', None, 'Export directory (must not exist).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
  app.run(main)
