r"""INT8 weights for serving: an export quantized with qwix (weight-only PTQ).

  python -m multimodal.quantize --pretrained exports/contrastive_digits \
      --out exports/contrastive_digits_int8 [--qtype int8] \
      [--include REGEX ...] [--exclude REGEX ...]

writes a complete export (model.json, config.json, preprocess.json,
tokenizer.model, README.md card) whose selected weight matrices are stored as
int8 with one float scale per output channel (qwix's symmetric absmax
calibration: scale = max |w| / 127.5 over the channel, qvalue =
round(w / scale) in [-128, 127], w ~= qvalue * scale), plus `quantization.json`, the record
of what was quantized and how. `multimodal.load_pretrained(OUT)` reads it and
`.build_model()` returns the model with the int8 weights in place: qwix's
PTQ modules keep them int8 on the device and dequantize inside each matmul
(XLA's CPU backend materialises the dequantized weights as temporaries of
each call; README.md, INT8 weights, has the measurements).

What is quantized: the kernels of nnx.Linear and nnx.LinearGeneral modules
(every projection, attention and MLP matrix of our towers, fusions and
decoders) whose parameter path, e.g.
'towers/image/core/encoder/blocks/0/mlp/fc1/kernel', matches an --include
regex and no --exclude regex (re.search, as init_from and optimizer groups
match paths). Everything else stays in its float dtype: biases, LayerNorms,
token embeddings (also the tied output head of a decoder: nnx.Embed.attend
is not a module call qwix intercepts), position tables, attention-pooling
probes and logit scales.

How qwix is used (its public API): qwix's NNX PTQ quantizes a model by
running one method of the model once (`qwix.quantize_model(model,
qwix.PtqProvider(rules), *inputs)`), and then intercepts only that method.
Our models are entered through several methods (embed, encode, the decoder's
cached `decode` during generation, the towers themselves in probes), so the
root model cannot be the unit. Each selected Linear / LinearGeneral module is
quantized on its own instead, with one rule
`qwix.QuantizationRule(module_path='.*', weight_qtype=QTYPE)` and a sample
input of its input shape; its own __call__ is then intercepted, whichever
method of the model reaches it. The selection by path is ours (the rule's
module_path would only see the module's path inside itself). Parameters are
quantized with `qwix.quantize_params` against the abstractly built quantized
model, without running the model on real weights.

Not supported: models with `scan_layers=True` (their blocks' kernels are
stacked along a layer axis, and a module quantized on its own expects one
layer's kernel); quantize an export trained with scan_layers=False.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from typing import Any, Iterable

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import qwix
import safetensors.numpy

from multimodal import pretrained
from multimodal import tree as tree_lib

QTYPES = ('int8',)
QUANTIZATION_JSON = pretrained.QUANTIZATION_JSON
# Files of an export copied unchanged into the quantized one.
COPIED = (pretrained.MODEL_JSON, pretrained.CONFIG_JSON,
          pretrained.PREPROCESS_JSON, pretrained.TOKENIZER)
FORMAT_VERSION = 1


class QuantizationError(ValueError):
  """An export cannot be quantized as asked (the message says why)."""


# ------------------------------------------------- which modules, inputs ---

def _sample_input(module: nnx.Module) -> jax.Array | None:
  """A zero input [1, *in_features] for a module whose __call__ contracts
  trailing input axes; None when it has another layout."""
  if isinstance(module, nnx.LinearGeneral):
    n = len(module.in_features)
    axes = tuple(a if a < 0 else a - (n + 1) for a in module.axis)
    if module.batch_axis or axes != tuple(range(-n, 0)):
      return None
    shape = module.in_features
  elif isinstance(module, nnx.Linear):
    shape = (module.in_features,)
  else:
    return None
  return jnp.zeros((1, *shape), module.param_dtype)


def _weight_modules(model: nnx.Module) -> dict[str, tuple[tuple, Any]]:
  """{kernel parameter path: (graph path, module)}; see weight_modules."""
  out = {}
  for path, node in nnx.iter_graph(model):
    if not isinstance(node, (nnx.Linear, nnx.LinearGeneral)):
      continue
    key = tree_lib.path_str(path + ('kernel',))
    sample = _sample_input(node)
    if sample is None:
      continue
    kernel = node.kernel
    want = sample.ndim - 1 + (len(node.out_features)
                              if isinstance(node, nnx.LinearGeneral) else 1)
    if isinstance(kernel, nnx.Param) and kernel.ndim != want:
      raise QuantizationError(
          f'{key} has shape {tuple(kernel.shape)}, a stack of layers '
          '(scan_layers=True): INT8 quantization needs one module per layer. '
          'Quantize an export of a model trained with scan_layers=False.')
    out[key] = (tuple(path), node)
  return out


def weight_modules(model: nnx.Module) -> dict[str, nnx.Module]:
  """{kernel parameter path: module} of every nnx.Linear and
  nnx.LinearGeneral of `model` this module can quantize (see the module
  doc), in graph order. Raises QuantizationError for stacked (scanned)
  layers."""
  return {k: node for k, (_, node) in _weight_modules(model).items()}


def _compile(patterns: Iterable[str], flag: str) -> list[re.Pattern]:
  out = []
  for p in patterns:
    try:
      out.append(re.compile(p))
    except re.error as e:
      raise QuantizationError(f'{flag} {p!r} is not a valid regex: {e}.'
                              ) from None
  return out


def select(paths: Iterable[str], include=('.*',), exclude=()
           ) -> tuple[list[str], dict[str, str]]:
  """(selected kernel paths, {left-out kernel path: why}) by re.search."""
  inc, exc = _compile(include, '--include'), _compile(exclude, '--exclude')
  chosen, left = [], {}
  for key in paths:
    if not any(p.search(key) for p in inc):
      left[key] = 'matched no --include'
    elif any(p.search(key) for p in exc):
      left[key] = 'matched --exclude'
    else:
      chosen.append(key)
  return chosen, left


def _rule(qtype: str) -> qwix.QuantizationRule:
  # One rule per module quantized on its own: every op inside it.
  return qwix.QuantizationRule(module_path='.*', weight_qtype=qtype)


def _set_child(model: nnx.Module, path: tuple, value) -> None:
  parent = model
  for key in path[:-1]:
    parent = (parent[key] if isinstance(parent, (nnx.Dict, nnx.List))
              else getattr(parent, key))
  if isinstance(parent, (nnx.Dict, nnx.List)):
    parent[path[-1]] = value
  else:
    setattr(parent, path[-1], value)


def apply(model: nnx.Module, kernels: Iterable[str], qtype: str
          ) -> nnx.Module:
  """Replaces the modules owning `kernels` (paths from weight_modules) by
  their qwix PTQ versions, in place; returns `model`.

  Each is run once on a zero sample input, which quantizes its current
  kernel (random or abstract; quantize_params or loading replaces it).
  """
  check_qtype(qtype)
  modules = _weight_modules(model)
  unknown = sorted(set(kernels) - set(modules))
  if unknown:
    raise QuantizationError(
        f'No Linear / LinearGeneral module owns {unknown[:5]} in this model '
        f'(it has {len(modules)} such kernels, e.g. {list(modules)[:3]}).')
  for key in kernels:
    path, module = modules[key]
    # qwix intercepts lax.dot_general; our dense layers' own product (a
    # custom VJP for training, models/matmul.py) would hide it inside
    # another trace.
    module.dot_general = jax.lax.dot_general
    quantized = qwix.quantize_model(module, qwix.PtqProvider([_rule(qtype)]),
                                    _sample_input(module))
    _set_child(model, path, quantized)
  return model


def check_qtype(qtype: str) -> None:
  if qtype not in QTYPES:
    raise QuantizationError(f'Unknown qtype {qtype!r}; supported: '
                            f'{", ".join(QTYPES)}.')


def abstract_quantized_model(model_config, kernels, qtype) -> nnx.Module:
  """The quantized model's structure, nothing computed on real weights."""
  return pretrained.abstract_model(
      model_config, prepare=lambda m: apply(m, kernels, qtype))


# ------------------------------------------------------- the parameters ---

def quantize_params(params, model_config, *, qtype: str = 'int8',
                    include=('.*',), exclude=()) -> tuple[Any, dict]:
  """Quantizes a float parameter tree (as read_params returns it).

  Returns:
    (the quantized pure parameter tree: each selected kernel replaced by
    {'array': {'qvalue': int8 [kernel shape], 'scale': float [kernel shape
    with the contracted axes 1]}}, the record written as quantization.json).
  """
  check_qtype(qtype)
  float_model = pretrained.abstract_model(model_config)
  candidates = weight_modules(float_model)
  kernels, left = select(candidates, include, exclude)
  if not kernels:
    raise QuantizationError(
        f'--include {list(include)} / --exclude {list(exclude)} select none '
        f'of the {len(candidates)} weight matrices, e.g. '
        f'{list(candidates)[:3]}.')
  abstract = abstract_quantized_model(model_config, kernels, qtype)
  quantized = qwix.quantize_params(jax.tree.map(jnp.asarray, params),
                                   abstract)
  quantized = jax.tree.map(np.asarray, quantized)
  flat_in, flat_out = tree_lib.flatten(params), tree_lib.flatten(quantized)
  record = {
      'format': FORMAT_VERSION,
      'qtype': qtype,
      'library': f'qwix {qwix.__version__}',
      'method': ('weight-only post-training quantization, symmetric, one '
                 'absmax scale per output channel; activations float'),
      'include': list(include), 'exclude': list(exclude),
      'rules': [{'modules': 'each quantized module on its own',
                 'module_path': '.*', 'weight_qtype': qtype}],
      'quantized': {k: {'shape': list(flat_in[k].shape),
                        'scale_shape': list(
                            flat_out[f'{k}/array/scale'].shape)}
                    for k in kernels},
      'kept_float': {**left, **{
          k: 'not a Linear/LinearGeneral kernel' for k in flat_in
          if k not in candidates}},
      'bytes': {'float': int(sum(v.nbytes for v in flat_in.values())),
                'quantized': int(sum(v.nbytes for v in flat_out.values()))},
  }
  return quantized, record


def dequantize_params(params) -> dict:
  """The float tree a quantized tree stands for: each kernel
  {'array': {'qvalue', 'scale'}} -> qvalue * scale (float32 NumPy), the
  other leaves unchanged. Nested dicts in, nested dicts out."""
  if isinstance(params, dict):
    if set(params) == {'array'} and isinstance(params['array'], dict) and \
        {'qvalue', 'scale'} <= set(params['array']):
      q = params['array']
      return np.asarray(q['qvalue'], np.float32) * np.asarray(q['scale'],
                                                              np.float32)
    return {k: dequantize_params(v) for k, v in params.items()}
  return params


def read_record(path: str) -> dict | None:
  """The quantization.json of an export, None for a float one."""
  file = os.path.join(path, QUANTIZATION_JSON)
  if not os.path.exists(file):
    return None
  with open(file) as f:
    record = json.load(f)
  if record.get('format') != FORMAT_VERSION:
    raise QuantizationError(f'{file} has format {record.get("format")}; this '
                            f'version reads format {FORMAT_VERSION}.')
  return record


def build_model(model_config, params, record, *, where: str) -> nnx.Module:
  """The quantized model of `record` with `params` (a quantized tree)."""
  kernels, qtype = list(record['quantized']), record['qtype']
  return pretrained.model_with_params(
      model_config, params, where=where,
      prepare=lambda m: apply(m, kernels, qtype))


# ------------------------------------------------------------ on disk ---

def dir_bytes(path: str) -> int:
  """Bytes of the files under `path` (a file: its size)."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def _card(source_card: str, record: dict, sizes: dict, out: str) -> str:
  n = len(record['quantized'])
  total = n + sum(1 for r in record['kept_float'].values()
                  if r != 'not a Linear/LinearGeneral kernel')
  mb = lambda b: f'{b / 1e6:.2f} MB'
  lines = [
      '', '## INT8 weights', '',
      f'Quantized with `python -m multimodal.quantize` ({record["library"]}):'
      f' {n} of {total} weight matrices stored as {record["qtype"]} with one '
      'float32 scale per output channel (the rest of the parameters and the '
      'activations stay float). `multimodal.load_pretrained'
      f'({out!r}).build_model()` runs them through qwix\'s quantized '
      'modules; `quantization.json` lists every parameter.', '',
      f'Parameters: {mb(sizes["float_params"])} float -> '
      f'{mb(sizes["params"])} (params/, on disk); model.safetensors '
      f'{mb(sizes["float_safetensors"])} -> {mb(sizes["safetensors"])}.', '',
      'The metrics above were measured with the float weights; '
      f'`python -m multimodal.evaluate --pretrained {out}` measures these.']
  return source_card.rstrip('\n') + '\n' + '\n'.join(lines) + '\n'


def quantize_export(src: str, out: str, *, qtype: str = 'int8',
                    include=('.*',), exclude=()) -> dict:
  """Writes the quantized export of `src` to `out`; returns the record.

  Raises FileNotFoundError when `src` is not an export, FileExistsError when
  `out` exists, QuantizationError for an unknown qtype, an already
  quantized source or a selection of no weights.
  """
  src, out = os.path.abspath(src), os.path.abspath(out)
  check_qtype(qtype)
  missing = [f for f in COPIED + (pretrained.PARAMS_DIR,)
             if not os.path.exists(os.path.join(src, f))]
  if missing:
    raise FileNotFoundError(
        f'{src} is not an export (missing {", ".join(missing)}). Quantize '
        'the directory written by `python -m multimodal.export --workdir W '
        '--out EXPORT`.')
  if read_record(src) is not None:
    raise QuantizationError(
        f'{src} is already quantized ({QUANTIZATION_JSON}); quantize the '
        'float export it was made from.')
  if os.path.exists(out):
    raise FileExistsError(f'{out} exists; choose a new --out directory.')
  export = pretrained.load_pretrained(src)
  params, record = quantize_params(export.params, export.model_config,
                                   qtype=qtype, include=include,
                                   exclude=exclude)
  record['source'] = src

  tmp = out + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(tmp, pretrained.PARAMS_DIR), params)
  flat = {k: np.ascontiguousarray(v)
          for k, v in tree_lib.flatten(params).items()}
  safetensors.numpy.save_file(
      flat, os.path.join(tmp, 'model.safetensors'),
      metadata={'format': 'multimodal', 'quantization': qtype})
  for name in COPIED:
    shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
  sizes = {
      'float_params': dir_bytes(os.path.join(src, pretrained.PARAMS_DIR)),
      'params': dir_bytes(os.path.join(tmp, pretrained.PARAMS_DIR)),
      'float_safetensors': dir_bytes(os.path.join(src, 'model.safetensors')),
      'safetensors': dir_bytes(os.path.join(tmp, 'model.safetensors'))}
  record['bytes'].update({f'disk_{k}': v for k, v in sizes.items()})
  with open(os.path.join(tmp, QUANTIZATION_JSON), 'w') as f:
    json.dump(record, f, indent=2, sort_keys=True)
  card = ''
  if os.path.exists(os.path.join(src, 'README.md')):
    with open(os.path.join(src, 'README.md')) as f:
      card = f.read()
  with open(os.path.join(tmp, 'README.md'), 'w') as f:
    f.write(_card(card, record, sizes, out))
  os.replace(tmp, out)  # a reader never sees a half-written export
  return record


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  if not args.pretrained or not args.out:
    raise app.UsageError('Both --pretrained and --out are required.')
  try:
    record = quantize_export(args.pretrained, args.out, qtype=args.qtype,
                             include=args.include or ('.*',),
                             exclude=args.exclude or ())
  except (QuantizationError, FileNotFoundError, FileExistsError) as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  b = record['bytes']
  print(f'Quantized {len(record["quantized"])} weight matrices to '
        f'{record["qtype"]} ({len(record["kept_float"])} parameters kept '
        f'float) into {args.out}: params/ {b["disk_float_params"]:,} -> '
        f'{b["disk_params"]:,} bytes, model.safetensors '
        f'{b["disk_float_safetensors"]:,} -> {b["disk_safetensors"]:,} bytes.')


if __name__ == '__main__':
  flags.DEFINE_string('pretrained', None, 'The float export to quantize.')
  flags.DEFINE_string('out', None, 'The quantized export (must not exist).')
  flags.DEFINE_enum('qtype', 'int8', QTYPES, 'Weight type.')
  flags.DEFINE_multi_string('include', None, 'Regex over kernel parameter '
                            'paths to quantize (repeatable; default all).')
  flags.DEFINE_multi_string('exclude', None, 'Regex over kernel parameter '
                            'paths to keep float (repeatable).')
  app.run(main)
