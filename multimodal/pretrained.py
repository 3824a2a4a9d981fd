"""Pretrained parameters: reading exports and checkpoints, partial init.

Where parameters come from (any of these paths works everywhere below):
  an export directory   written by `python -m multimodal.export` (params/,
                        model.json, ...; see multimodal/export.py);
  a training workdir    its latest checkpoint (checkpoints/<step>/state);
  a checkpoint step     .../checkpoints/<step>.

Parameters are addressed by '/'-joined paths of the model's parameter tree,
e.g. 'towers/image/core/encoder/blocks/0/attn/query/kernel' (see
multimodal/tree.py); every regex below is matched against such a path
(re.search).

`init_from` (a config block, applied by the trainer when a run starts fresh):
  path        where the parameters come from (as above).
  include     regexes: the target parameters to load (default: all).
  exclude     regexes: target parameters to keep at their initialisation.
  rename      ((pattern, replacement), ...) applied to the SOURCE paths
              first (re.sub, in order), e.g. (('^towers/audio/', 'towers/speech/'),).
  resample_posemb  resample learned 2-D position tables when the patch grid
              differs (another image or spectrogram size); 1-D tables (text)
              are cut when the target is shorter.
  inflate     'average' (default) or 'center': how an image ViT's patch
              kernel [p*p*C, D] fills a video tower's tubelet kernel
              [p*p*t*C, D] (multimodal.models.video.inflate_kernel), so an
              image export initialises a video tower by the same paths.
Every selected target parameter must exist in the source with the same shape
(after resampling), and every source parameter that the selection names
must exist in the target: otherwise one error lists all missing, unexpected
and mismatched parameters.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterable, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp

from multimodal import registry
from multimodal import tree as tree_lib
from multimodal.models import build_model
from multimodal.models import rng
from multimodal.models.patch_transformer import PatchTransformer
from multimodal.models.posemb import LearnedPosEmb
from multimodal.models.video import VideoViT, inflate_kernel

PARAMS_DIR = 'params'
MODEL_JSON = 'model.json'
CONFIG_JSON = 'config.json'
PREPROCESS_JSON = 'preprocess.json'
TOKENIZER = 'tokenizer.model'
METRICS_JSON = 'metrics.json'
QUANTIZATION_JSON = 'quantization.json'  # multimodal/quantize.py's record


# ------------------------------------------------------------- reading ---

def abstract_model(model_config, prepare=None) -> nnx.Module:
  """The model with ShapeDtypeStruct parameters (nothing initialised), not
  placed on any mesh (whatever mesh is in context). `prepare` (model ->
  model), if given, transforms the model inside the abstract trace (e.g.
  multimodal.quantize swaps in quantized modules)."""
  prepare = prepare or (lambda m: m)
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: prepare(build_model(model_config,
                                                      rngs=rng.Rngs(0))))


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps with a saved train state under workdir/checkpoints, sorted."""
  ckpts = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(ckpts):
    return []
  return sorted(int(d) for d in os.listdir(ckpts)
                if d.isdigit() and os.path.isdir(os.path.join(ckpts, d,
                                                              'state')))


def _state_dir(path: str) -> str:
  """The orbax directory holding a parameter tree under `path`."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(os.path.join(path, PARAMS_DIR)):
    return os.path.join(path, PARAMS_DIR)
  if os.path.isdir(os.path.join(path, 'state')):  # a checkpoint step
    return os.path.join(path, 'state')
  steps = checkpoint_steps(path)
  if steps:
    return os.path.join(path, 'checkpoints', str(steps[-1]), 'state')
  raise FileNotFoundError(
      f'No parameters at {path}: expected an export directory (with '
      f'{PARAMS_DIR}/), a training workdir (with checkpoints/<step>/) or a '
      'checkpoint step directory (with state/).')


def experiment_config(path: str) -> dict | None:
  """config.json of an export or workdir, or of a checkpoint step's workdir."""
  for candidate in (os.path.join(path, CONFIG_JSON),
                    os.path.join(path, '..', '..', CONFIG_JSON)):
    config = _read_json(candidate)
    if config is not None:
      return config
  return None


def _model_config_of(path: str) -> dict:
  """The model config saved beside the parameters (export or workdir)."""
  path = os.path.abspath(os.path.expanduser(path))
  config = _read_json(os.path.join(path, MODEL_JSON))
  if config is None:
    config = (experiment_config(path) or {}).get('model')
  if config is None:
    raise FileNotFoundError(
        f'No {MODEL_JSON} or {CONFIG_JSON} found for {path}.')
  return config


def read_params(path: str, shardings=None):
  """The parameter tree (nested dicts) saved at `path`.

  Args:
    path: an export, a workdir or a checkpoint step (see the module doc).
    shardings: None to read NumPy arrays on the host; or a tree of
      jax.sharding.Sharding matching the saved tree to read each array
      straight onto its devices (any mesh: orbax reshards on read).

  Returns:
    The parameters: NumPy arrays, or jax.Arrays with `shardings`.
  """
  state_dir = _state_dir(path)
  checkpointer = ocp.PyTreeCheckpointer()
  meta = checkpointer.metadata(state_dir)
  tree = getattr(meta, 'item_metadata', meta)
  tree = getattr(tree, 'tree', tree)
  is_train_state = PARAMS_DIR in tree and 'opt_state' in tree
  abstract = tree[PARAMS_DIR] if is_train_state else tree
  if shardings is None:
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
  else:
    # By path: the saved tree names list items '0', nnx trees use 0.
    by_path = tree_lib.flatten(shardings)

    def restore_arg(path, m):
      key = tree_lib.path_str(path)
      if key not in by_path:
        raise ValueError(f'No sharding given for parameter {key} of '
                         f'{state_dir}.')
      return ocp.ArrayRestoreArgs(sharding=by_path[key],
                                  global_shape=m.shape, dtype=m.dtype)

    restore_args = jax.tree_util.tree_map_with_path(restore_arg, abstract)
  item = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                      abstract)
  if is_train_state:  # only the parameters of a train state
    item, restore_args = {PARAMS_DIR: item}, {PARAMS_DIR: restore_args}
  restored = checkpointer.restore(
      state_dir, args=ocp.args.PyTreeRestore(
          item=item, restore_args=restore_args,
          partial_restore=is_train_state))
  return restored[PARAMS_DIR] if is_train_state else restored


@dataclasses.dataclass
class Pretrained:
  """A loaded export.

  params: the parameter tree (NumPy arrays, or jax.Arrays when loaded with
    shardings). model_config: the `build_model` config. config: the
  experiment config that trained it (ConfigDict, for its input settings).
  preprocess: the input settings to feed it (image size, log-mel, text
  length, tokenizer). tokenizer: path to the sentencepiece model. metrics:
  evaluation metrics at export time.
  """
  path: str
  params: Any
  model_config: dict
  config: mlc.ConfigDict | None
  preprocess: dict
  tokenizer: str | None
  metrics: dict
  quantization: dict | None = None

  def build_model(self, **overrides) -> nnx.Module:
    """The NNX model with these parameters; `overrides` change the model
    config (e.g. dtype) but not parameter shapes. A quantized export gives
    the model with its quantized modules (multimodal/quantize.py)."""
    model_config = {**self.model_config, **overrides}
    if self.quantization:
      from multimodal import quantize  # pylint: disable=g-import-not-at-top
      return quantize.build_model(model_config, self.params,
                                  self.quantization, where=self.path)
    return model_with_params(model_config, self.params, where=self.path)

  def predictor(self, **kwargs):
    """The inference API over this model (multimodal.predictor.Predictor:
    embed, zero_shot, caption, answer); kwargs go to Predictor (buckets,
    model)."""
    from multimodal import predictor  # pylint: disable=g-import-not-at-top
    return predictor.Predictor(self, **kwargs)


def model_with_params(model_config, params, *, where: str,
                      rngs: nnx.Rngs | None = None,
                      prepare=None) -> nnx.Module:
  """Builds `model_config` with `params` (a pure parameter dict) loaded.

  Without `rngs` the model is traced abstractly, so no random weights are
  computed only to be overwritten; a model that also holds non-parameter
  state (e.g. dropout RNG streams), or one given `rngs` for them, is built
  for real. Raises one error naming every parameter that does not fit
  (`where` names the source). `prepare` as in abstract_model, applied to
  the model before the parameters are loaded.
  """
  model = None
  if rngs is None:
    model = abstract_model(model_config, prepare)
    if jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param))):
      model = None  # holds RNG streams etc.: build it for real
  if model is None:
    model = build_model(model_config, rngs=rngs or rng.Rngs(0))
    if prepare is not None:
      model = prepare(model)
  state = nnx.state(model, nnx.Param)
  tree_lib.check_same_tree(tree_lib.flatten(nnx.to_pure_dict(state)),
                           tree_lib.flatten(params), where=where)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  nnx.update(model, state)
  return model


def _read_json(path: str, default=None):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def load_pretrained(path: str, shardings=None) -> Pretrained:
  """Loads an export written by `python -m multimodal.export`.

  Also accepts a training workdir or checkpoint step (then preprocess and
  tokenizer come from its config.json). `shardings` as in read_params.
  """
  path = os.path.abspath(os.path.expanduser(path))
  params = read_params(path, shardings)
  model_config = _model_config_of(path)
  config = experiment_config(path)
  config = mlc.ConfigDict(config) if config is not None else None
  if config is not None:
    # The model may use modules of the user's own package (fusions,
    # encoders...): they register on import.
    registry.import_modules(config.get('imports', ()))
  preprocess = _read_json(os.path.join(path, PREPROCESS_JSON))
  if preprocess is None and config is not None:
    preprocess = config.input.to_dict()
  tokenizer = os.path.join(path, TOKENIZER)
  if not os.path.exists(tokenizer):
    tokenizer = (preprocess or {}).get('tokenizer')
  quantization = None
  if os.path.exists(os.path.join(path, QUANTIZATION_JSON)):
    from multimodal import quantize  # pylint: disable=g-import-not-at-top
    quantization = quantize.read_record(path)
  return Pretrained(path=path, params=params, model_config=model_config,
                    config=config, preprocess=preprocess or {},
                    tokenizer=tokenizer,
                    metrics=_read_json(os.path.join(path, METRICS_JSON), {}),
                    quantization=quantization)


# ------------------------------------------------------- position tables ---

def position_grids(model_config) -> dict[str, tuple[int, ...]]:
  """Path of each learned position table -> the grid its rows cover.

  2-D patch grids (gh, gw) for ViT / audio towers, (length,) for text.
  """
  model = abstract_model(model_config)
  grids = {}
  for path, node in nnx.iter_graph(model):
    if isinstance(node, PatchTransformer) and node.posemb is not None:
      key = tree_lib.path_str(path + ('posemb', 'embedding'))
      grids[key] = tuple(node.grid)
    elif isinstance(node, LearnedPosEmb):
      key = tree_lib.path_str(path + ('embedding',))
      grids.setdefault(key, (node.num_positions,))
  return grids


def tubelet_kernels(model_config) -> dict[str, tuple[int, int]]:
  """Path of each video tower's tubelet kernel -> (frames per tubelet,
  channels), the shapes an image patch kernel is inflated to."""
  model = abstract_model(model_config)
  return {tree_lib.path_str(path + ('core', 'embed', 'kernel')):
              (node.tubelet_time, node.channels)
          for path, node in nnx.iter_graph(model)
          if isinstance(node, VideoViT)}


def resample_posemb(table: np.ndarray, source_grid: tuple[int, ...],
                    target_grid: tuple[int, ...]) -> np.ndarray:
  """Resamples a learned position table [N_src, D] to [N_tgt, D].

  2-D grids: bilinear resize of the (gh, gw) table (rows beyond the grid,
  e.g. a class-token slot, are kept in front). 1-D tables: the first
  N_tgt rows when the target is shorter; longer targets cannot be made.
  """
  table = np.asarray(table)
  if len(source_grid) == 1:
    if target_grid[0] > source_grid[0]:
      raise ValueError(f'Cannot lengthen a 1-D position table from '
                       f'{source_grid[0]} to {target_grid[0]} rows; keep '
                       'max_len or exclude it from init_from.')
    return table[:target_grid[0]]
  extra = table.shape[0] - int(np.prod(source_grid))
  head, grid = table[:extra], table[extra:]
  grid = grid.reshape(*source_grid, table.shape[-1]).astype(np.float32)
  resized = jax.image.resize(grid, (*target_grid, table.shape[-1]),
                             method='bilinear', antialias=True)
  resized = np.asarray(resized).reshape(-1, table.shape[-1])
  return np.concatenate([head, resized]).astype(table.dtype)


# --------------------------------------------------------- init_from ---

def _matches(key: str, patterns: Iterable[str]) -> bool:
  return any(re.search(p, key) for p in patterns)


def select_params(target: Mapping[str, Any], source: Mapping[str, Any], *,
                  include=('.*',), exclude=(), rename=(),
                  source_grids=None, target_grids=None, tubelets=None,
                  inflate='average', where='source'
                  ) -> tuple[dict[str, np.ndarray], list[str]]:
  """Source arrays for the selected target parameters (flat dicts).

  Args:
    target: path -> array or ShapeDtypeStruct, the model being initialised.
    source: path -> array, the pretrained parameters.
    include, exclude, rename: as in the module docstring.
    source_grids, target_grids: position_grids() of the two models, for
      resampling position tables (None: no resampling).
    where: names the source in errors.

  Returns:
    ({target path: array of the target's shape}, [notes on resampling]).
  """
  renamed = {}
  for key, value in source.items():
    new = key
    for pattern, repl in rename:
      new = re.sub(pattern, repl, new)
    renamed[new] = value
  grids_src = {}
  for key, grid in (source_grids or {}).items():
    new = key
    for pattern, repl in rename:
      new = re.sub(pattern, repl, new)
    grids_src[new] = grid

  def chosen(key):
    return _matches(key, include) and not _matches(key, exclude)

  selected = [k for k in target if chosen(k)]
  missing = [k for k in selected if k not in renamed]
  unexpected = sorted(k for k in renamed if chosen(k) and k not in target)
  out, mismatched, notes = {}, [], []
  for key in selected:
    if key not in renamed:
      continue
    value, want = renamed[key], tuple(target[key].shape)
    if tuple(value.shape) != want and target_grids and key in target_grids \
        and key in grids_src:
      value = resample_posemb(value, grids_src[key], target_grids[key])
      notes.append(f'{key}: resampled {grids_src[key]} -> '
                   f'{target_grids[key]}')
    if (tuple(value.shape) != want and tubelets and key in tubelets
        and value.ndim == 2 and value.shape[0] * tubelets[key][0] == want[0]):
      value = inflate_kernel(value, *tubelets[key], method=inflate)
      notes.append(f'{key}: inflated {inflate!r} over '
                   f'{tubelets[key][0]} frames')
    if tuple(value.shape) != want:
      mismatched.append((key, tuple(value.shape), want))
      continue
    out[key] = value
  problems = tree_lib.describe_mismatch(missing, unexpected, mismatched)
  if problems:
    raise ValueError(
        f'init_from {where} does not fit the model:\n{problems}\n'
        'Narrow config.init_from.include/exclude, map names with '
        'config.init_from.rename, or change the model config to match.')
  if not out:
    raise ValueError(f'init_from {where}: include={tuple(include)} '
                     f'exclude={tuple(exclude)} select no parameter of the '
                     'model.')
  return out, notes


def init_from(init_cfg, model_config, abstract_params) -> tuple[dict, list]:
  """Loads the parameters `init_cfg` selects (see the module docstring).

  Args:
    init_cfg: config.init_from (path, include, exclude, rename,
      resample_posemb, inflate).
    model_config: the target model's config.
    abstract_params: the target parameter tree (ShapeDtypeStructs).

  Returns:
    ({target path: NumPy array}, [notes]) for the selected parameters.
  """
  if os.path.exists(os.path.join(os.path.expanduser(init_cfg.path),
                                 QUANTIZATION_JSON)):
    raise ValueError(
        f'init_from {init_cfg.path} is a quantized export '
        f'({QUANTIZATION_JSON}): training starts from float weights. Use the '
        'float export it was made from (its "source" in that file).')
  source = tree_lib.flatten(read_params(init_cfg.path))
  target = tree_lib.flatten(abstract_params)
  grids = {}
  if init_cfg.get('resample_posemb', True):
    grids = dict(source_grids=position_grids(_model_config_of(init_cfg.path)),
                 target_grids=position_grids(model_config))
  return select_params(
      target, source, include=tuple(init_cfg.get('include', ('.*',))),
      exclude=tuple(init_cfg.get('exclude', ())),
      rename=tuple(tuple(r) for r in init_cfg.get('rename', ())),
      tubelets=tubelet_kernels(model_config),
      inflate=init_cfg.get('inflate') or 'average',
      where=init_cfg.path, **grids)
