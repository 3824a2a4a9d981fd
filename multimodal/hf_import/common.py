"""Shared pieces of the HuggingFace importers: reading checkpoints and configs,
PyTorch -> Flax layout transforms, and key bookkeeping with clear errors.

Layouts (PyTorch on the left, ours on the right; all float32 numpy):
  Linear weight [out, in]                -> kernel [in, out]
  q/k/v Linear weight [H * K, D]         -> kernel [D, H, K], bias [H, K]
  attention out Linear weight [D, H * K] -> kernel [H, K, D], bias [D]
  Conv2d weight [O, C, ph, pw] (stride = kernel = patch)
                                         -> patch Linear kernel [ph*pw*C, O]
                                            over row-major (ph, pw, C) patches
  Conv1d weight [O, I, K]                -> kernel [K, I, O]
  LayerNorm weight / bias                -> scale / bias
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

# How many names an error message lists per category before summarising.
_MAX_LISTED = 40


class ConversionError(ValueError):
  """A checkpoint or config that does not fit the converter (see message)."""


# ----------------------------------------------------------------------------
# Reading tensors and configs.


def to_numpy(value: Any) -> np.ndarray:
  """A numpy array from a numpy array, a torch tensor, or an array-like.

  bfloat16 / float16 tensors come back as float32 (our parameters are
  float32); torch is never imported here (a torch tensor is recognised by
  its `detach` method).
  """
  if hasattr(value, 'detach'):  # torch.Tensor
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()  # numpy has no bfloat16
    return value.numpy()
  array = np.asarray(value)
  if array.dtype.kind == 'f' or array.dtype.name == 'bfloat16':
    array = array.astype(np.float32)
  return array


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of one .safetensors file as numpy arrays.

  Uses the `safetensors` numpy API; bfloat16 tensors, which numpy cannot
  represent, are decoded from the file's raw bytes (little-endian bf16 is
  the top half of a float32) into float32.
  """
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    (header_len,) = struct.unpack('<Q', f.read(8))
    header = json.loads(f.read(header_len))
  header.pop('__metadata__', None)
  out = {}
  bf16 = [k for k, v in header.items() if v['dtype'] == 'BF16']
  with safe_open(path, framework='numpy') as f:
    for name in header:
      if name not in bf16:
        out[name] = f.get_tensor(name)
  if bf16:
    with open(path, 'rb') as f:
      for name in bf16:
        begin, end = header[name]['data_offsets']
        f.seek(8 + header_len + begin)
        raw = np.frombuffer(f.read(end - begin), dtype='<u2')
        out[name] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(
            header[name]['shape'])
  return out


def _read_directory(path: str) -> dict[str, np.ndarray]:
  """Tensors of a HF save_pretrained directory (single or sharded)."""
  single = os.path.join(path, 'model.safetensors')
  index = os.path.join(path, 'model.safetensors.index.json')
  if os.path.exists(single):
    return read_safetensors(single)
  if os.path.exists(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    out = {}
    for shard in shards:
      out.update(read_safetensors(os.path.join(path, shard)))
    return out
  present = sorted(os.listdir(path))
  raise ConversionError(
      f'{path} holds no model.safetensors or model.safetensors.index.json '
      f'(found {present}). PyTorch .bin checkpoints are not read (that '
      'needs torch.load); re-save with save_pretrained(..., '
      'safe_serialization=True) or pass a state dict.')


def load_state_dict(source: Any) -> dict[str, np.ndarray]:
  """name -> numpy array (floating point ones as float32), from any source.

  Args:
    source: a mapping name -> numpy array / torch tensor (e.g. a PyTorch
      `model.state_dict()`), a torch module with `state_dict()`, a path to a
      .safetensors file, or a HF save_pretrained directory.
  """
  if isinstance(source, Mapping):
    return {str(k): to_numpy(v) for k, v in source.items()}
  if hasattr(source, 'state_dict') and callable(source.state_dict):
    return load_state_dict(source.state_dict())
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if os.path.isdir(path):
      tensors = _read_directory(path)
    elif os.path.isfile(path) and path.endswith('.safetensors'):
      tensors = read_safetensors(path)
    elif os.path.exists(path):
      raise ConversionError(f'{path} is not a .safetensors file or a '
                            'save_pretrained directory.')
    else:
      raise ConversionError(f'No such checkpoint: {path}.')
    return {k: to_numpy(v) for k, v in tensors.items()}
  raise ConversionError(
      'source must be a state dict (name -> tensor), a torch module, a '
      f'.safetensors path or a save_pretrained directory; got {type(source)}.')


def find_config(source: Any, hf_config: Any) -> Any:
  """The HF config to use: `hf_config` if given, else one found with source.

  A torch module's `.config`, or config.json in a save_pretrained directory
  or next to a .safetensors file.
  """
  if hf_config is not None:
    if isinstance(hf_config, (str, os.PathLike)):
      with open(os.fspath(hf_config)) as f:
        return json.load(f)
    return hf_config
  if hasattr(source, 'config') and not isinstance(source, Mapping):
    return source.config
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    candidate = os.path.join(folder, 'config.json')
    if os.path.exists(candidate):
      with open(candidate) as f:
        return json.load(f)
  raise ConversionError(
      'No HF config: pass hf_config (a transformers config object, its '
      'to_dict(), or a config.json path), or a directory holding '
      'config.json.')


class ConfigView:
  """Uniform read access to a transformers config object or its dict.

  Keys the config lacks fall back to `defaults` (HF's defaults for that
  config class, since save_pretrained may omit values equal to them).
  """

  def __init__(self, config: Any, defaults: Mapping[str, Any], what: str):
    if hasattr(config, 'to_dict') and not isinstance(config, Mapping):
      self._get = lambda k: getattr(config, k, _MISSING)
    elif isinstance(config, Mapping):
      self._get = lambda k: config.get(k, _MISSING)
    else:
      raise ConversionError(f'{what}: expected a transformers config or a '
                            f'dict, got {type(config)}.')
    self._raw = config
    self._defaults = dict(defaults)
    self.what = what

  def __getitem__(self, key: str) -> Any:
    value = self._get(key)
    if value is _MISSING or (value is None and key in self._defaults):
      if key not in self._defaults:
        raise ConversionError(f'{self.what} has no {key!r}.')
      return self._defaults[key]
    return value

  def sub(self, key: str, defaults: Mapping[str, Any]) -> 'ConfigView':
    """A nested config (e.g. 'text_config'); missing means all defaults."""
    value = self._get(key)
    if value is _MISSING or value is None:
      value = {}
    return ConfigView(value, defaults, f'{self.what}.{key}')


_MISSING = object()


# Activation names HF configs use -> our activation names (transformer.py).
_ACTIVATIONS = {
    'gelu': 'gelu',  # exact erf GELU (torch nn.GELU())
    'quick_gelu': 'quick_gelu',  # x * sigmoid(1.702 x)
    'gelu_pytorch_tanh': 'gelu_tanh',  # tanh approximation
    'gelu_new': 'gelu_tanh',  # same tanh formula
    'gelu_fast': 'gelu_tanh',  # same tanh formula
}


def activation(name: str, what: str) -> str:
  """Our activation name for HF's `name`; errors on one we do not have."""
  if name not in _ACTIVATIONS:
    raise ConversionError(f'{what}: activation {name!r} has no equivalent '
                          f'here; supported: {sorted(_ACTIVATIONS)}.')
  return _ACTIVATIONS[name]


# ----------------------------------------------------------------------------
# Key bookkeeping.


class StateReader:
  """Hands out checkpoint tensors by name, checking their shapes.

  Problems (missing keys, shape mismatches) are collected rather than raised
  one at a time, so that `finish` can report all of them, along with the
  keys nothing consumed. A missing or mismatched tensor is replaced by zeros
  of the expected shape so conversion can go on collecting.
  """

  def __init__(self, state: Mapping[str, np.ndarray], family: str):
    self.state = dict(state)
    self.family = family
    self.used: set[str] = set()
    self.missing: list[str] = []
    self.mismatched: list[str] = []
    self.ignored: list[str] = []

  def has(self, name: str) -> bool:
    return name in self.state

  def take(self, name: str, shape: Sequence[int]) -> np.ndarray:
    """The tensor `name` as float32, which must have `shape`."""
    shape = tuple(int(s) for s in shape)
    if name not in self.state:
      self.missing.append(name)
      return np.zeros(shape, np.float32)
    self.used.add(name)
    value = self.state[name]
    if tuple(value.shape) != shape:
      self.mismatched.append(f'{name}: checkpoint {tuple(value.shape)}, '
                             f'config expects {shape}')
      return np.zeros(shape, np.float32)
    return np.asarray(value, np.float32)

  def ignore(self, patterns: Iterable[str]) -> None:
    """Marks keys matching any regex in `patterns` (re.match) as unused."""
    regexes = [re.compile(p) for p in patterns]
    for name in self.state:
      if name not in self.used and any(r.match(name) for r in regexes):
        self.used.add(name)
        self.ignored.append(name)

  def finish(self) -> None:
    """Raises ConversionError listing every problem, if there is any."""
    unexpected = sorted(set(self.state) - self.used)
    problems = []
    for title, names in (('missing keys', self.missing),
                         ('unexpected keys', unexpected),
                         ('shape mismatches', self.mismatched)):
      if names:
        listed = '\n    '.join(names[:_MAX_LISTED])
        more = (f'\n    ... and {len(names) - _MAX_LISTED} more'
                if len(names) > _MAX_LISTED else '')
        problems.append(f'  {title} ({len(names)}):\n    {listed}{more}')
    if problems:
      raise ConversionError(
          f'The checkpoint does not fit the {self.family!r} converter with '
          'this config:\n' + '\n'.join(problems))
    if self.ignored:
      logger.info('%s import: ignored %d checkpoint tensors with no '
                  'counterpart here: %s', self.family, len(self.ignored),
                  ', '.join(sorted(self.ignored)))


# ----------------------------------------------------------------------------
# Layout transforms (torch -> ours), each taking its tensors from a reader.


def dense(r: StateReader, prefix: str, d_in: int, d_out: int, *,
          bias: bool = True) -> dict[str, np.ndarray]:
  """torch Linear `prefix`.{weight [out, in], bias} -> {kernel [in, out], bias}."""
  out = {'kernel': r.take(f'{prefix}.weight', (d_out, d_in)).T.copy()}
  if bias:
    out['bias'] = r.take(f'{prefix}.bias', (d_out,))
  return out


def layer_norm(r: StateReader, prefix: str, width: int
               ) -> dict[str, np.ndarray]:
  """torch LayerNorm `prefix`.{weight, bias} -> {scale, bias}."""
  return {'scale': r.take(f'{prefix}.weight', (width,)),
          'bias': r.take(f'{prefix}.bias', (width,))}


def heads_in(kernel: np.ndarray, bias: np.ndarray | None, num_heads: int
             ) -> dict[str, np.ndarray]:
  """q/k/v projection: kernel [D, H*K] (already [in, out]) -> [D, H, K];
  bias [H*K] -> [H, K] (zeros when the checkpoint has none)."""
  d, hk = kernel.shape
  k = hk // num_heads
  if bias is None:
    bias = np.zeros((hk,), np.float32)
  return {'kernel': kernel.reshape(d, num_heads, k),
          'bias': bias.reshape(num_heads, k)}


def heads_out(kernel: np.ndarray, bias: np.ndarray, num_heads: int
              ) -> dict[str, np.ndarray]:
  """Output projection: kernel [H*K, D] (already [in, out]) -> [H, K, D]."""
  hk, d = kernel.shape
  return {'kernel': kernel.reshape(num_heads, hk // num_heads, d),
          'bias': bias}


def attention(r: StateReader, *, q: str, k: str, v: str, o: str, width: int,
              num_heads: int, q_bias: bool = True, k_bias: bool = True,
              v_bias: bool = True) -> dict[str, Any]:
  """Separate torch q/k/v/out Linears -> our MultiHeadAttention params.

  A projection without bias gets a zero bias: the same function (and for
  the key, bias never changes attention at all: it adds the same q.b to
  every key's score of a query, which softmax ignores).
  """
  def proj(prefix, has_bias):
    p = dense(r, prefix, width, width, bias=has_bias)
    return heads_in(p['kernel'], p.get('bias'), num_heads)
  out = dense(r, o, width, width)
  return {'query': proj(q, q_bias), 'key': proj(k, k_bias),
          'value': proj(v, v_bias),
          'out': heads_out(out['kernel'], out['bias'], num_heads)}


def packed_attention(r: StateReader, prefix: str, *, width: int,
                     num_heads: int) -> dict[str, Any]:
  """torch nn.MultiheadAttention `prefix` -> our MultiHeadAttention params.

  Its in_proj_weight [3D, D] / in_proj_bias [3D] stack the q, k, v
  projections in that order; out_proj is a Linear.
  """
  w = r.take(f'{prefix}.in_proj_weight', (3 * width, width))
  b = r.take(f'{prefix}.in_proj_bias', (3 * width,))
  out = dense(r, f'{prefix}.out_proj', width, width)
  params = {}
  for i, name in enumerate(('query', 'key', 'value')):
    rows = slice(i * width, (i + 1) * width)
    params[name] = heads_in(w[rows].T.copy(), b[rows], num_heads)
  params['out'] = heads_out(out['kernel'], out['bias'], num_heads)
  return params


def mlp(r: StateReader, fc1: str, fc2: str, width: int, hidden: int
        ) -> dict[str, Any]:
  """Two torch Linears -> our Mlp params {fc1, fc2}."""
  return {'fc1': dense(r, fc1, width, hidden),
          'fc2': dense(r, fc2, hidden, width)}


def encoder_block(r: StateReader, names: dict[str, str], *, width: int,
                  num_heads: int, mlp_dim: int, **bias) -> dict[str, Any]:
  """One pre-LN transformer layer -> our EncoderBlock params.

  names: the torch module names of the layer's parts, keys ln1, q, k, v, o,
  ln2, fc1, fc2. bias: q_bias / k_bias / v_bias as in `attention`.
  """
  return {
      'norm1': layer_norm(r, names['ln1'], width),
      'attn': attention(r, q=names['q'], k=names['k'], v=names['v'],
                        o=names['o'], width=width, num_heads=num_heads,
                        **bias),
      'norm2': layer_norm(r, names['ln2'], width),
      'mlp': mlp(r, names['fc1'], names['fc2'], width, mlp_dim),
  }


def patch_embedding(r: StateReader, prefix: str, *, channels: int,
                    patch: int, width: int, bias: bool
                    ) -> dict[str, np.ndarray]:
  """torch Conv2d [D, C, ph, pw] (stride = kernel) -> our patch Linear.

  Our PatchTransformer flattens each patch row-major over (ph, pw, C), so
  kernel row (i * pw + j) * C + c holds the conv weight [:, c, i, j].
  """
  w = r.take(f'{prefix}.weight', (width, channels, patch, patch))
  out = {'kernel': w.transpose(2, 3, 1, 0).reshape(-1, width).copy()}
  if bias:
    out['bias'] = r.take(f'{prefix}.bias', (width,))
  return out


def conv1d(r: StateReader, prefix: str, *, d_in: int, d_out: int,
           kernel_size: int) -> dict[str, np.ndarray]:
  """torch Conv1d [O, I, K] -> Flax Conv kernel [K, I, O] (and bias [O])."""
  w = r.take(f'{prefix}.weight', (d_out, d_in, kernel_size))
  return {'kernel': w.transpose(2, 1, 0).copy(),
          'bias': r.take(f'{prefix}.bias', (d_out,))}


def detect_prefix(state: Mapping[str, Any], probe: str,
                  candidates: Sequence[str], family: str) -> str:
  """The first candidate prefix p for which p + probe is a key."""
  for prefix in candidates:
    if prefix + probe in state:
      return prefix
  raise ConversionError(
      f'Not a {family!r} checkpoint: none of '
      f'{[p + probe for p in candidates]} is among its {len(state)} keys '
      f'(e.g. {sorted(state)[:5]}).')


# ----------------------------------------------------------------------------
# Checking the result against the model it is for.


def check_against_model(model_config: Mapping[str, Any],
                        params: Mapping[str, Any], family: str) -> None:
  """Raises ConversionError unless `params` is exactly the model's pure
  parameter dict (same paths, same shapes). Traced abstractly (no arrays)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from multimodal import pretrained, tree as tree_lib

  model = pretrained.abstract_model(model_config)
  expected = tree_lib.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  try:
    tree_lib.check_same_tree(expected, tree_lib.flatten(params),
                             where=f'the {family} import')
  except ValueError as e:
    raise ConversionError(f'{family} import produced parameters that do not '
                          f'fit the model config:\n{e}') from None
