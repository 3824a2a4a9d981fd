"""One validation pass over an experiment config, before anything runs.

`check(config)` raises one `ConfigError` listing every problem it finds
(the key, its value, what would be valid), or returns None. It reads no
record, puts nothing on a device and compiles nothing: the model is built
abstractly (`nnx.eval_shape`) and the training loss is traced abstractly
(`jax.eval_shape`) on a batch of the shapes the input config makes. The
trainer calls it first, and `python -m multimodal.train` prints the error
as one line and exits with code 2 (MULTIMODAL_TRACEBACK=1 shows the
traceback instead).

What is checked, in order. Every group runs, except that so one mistake
does not show up as several: an unknown registry name stops the pass
there; the task is built only when config.input, the tokenizer and the
model passed; the trace runs only when everything else passed.
  schedule   total_steps, batch sizes, log_every, checkpoint_every (>= 1);
             eval_every, checkpoint_keep, profile_steps, seed, the splits'
             slice syntax.
  optimizer  a registered name and the arguments it takes, a registered
             schedule, lr > 0, warmup_steps >= 0, betas, mu_dtype, weight
             decay, clip_norm, final_fraction, frozen and lr_mults regexes.
  input      sizes (image_size, image_channels, max_text_len, num_frames,
             num_mels), audio_front_end, on_error, max_skip_fraction,
             validate_records, reader threads and caches, augment keys,
             field kinds.
  mesh       axis sizes against the devices, batches that divide over the
             batch shards and processes (mesh.check_batch_size), sharding
             rules; with pipeline stages (mesh.stage > 1), batches that
             divide into pipeline.microbatches times the batch shards.
  files      init_from.path (on a fresh run; regexes always) and
             input.tokenizer exist; the tokenizer fits every vocab_size;
             restore_step names a checkpoint in the workdir.
  registry   task, model, towers, fusion, decoder, source and evaluator
             names (the message lists the registered ones).
  dataset    the source's own check (`check_config` attribute of its
             registered opener): settings, split names, paths, and record
             keys its metadata lists, all without reading a record.
  model      the task fits the model (Task.model_methods); the model builds
             abstractly; with pipeline stages, it stacks layers
             (scan_layers) in depths the stages divide; the task and its
             evaluators build; every field the task needs has a record key
             (input.fields) and a kind.
  trace      the training loss traced abstractly on the input shapes
             (FieldKind.example_shape), which finds sizes the towers do not
             take (image_size, num_frames, max_text_len...).
"""
from __future__ import annotations

import math
import numbers
import os
import re
from typing import Any, Iterable

from flax import nnx
import jax

from multimodal import base_config
from multimodal import checkpoint as ckpt_lib
from multimodal import mesh as mesh_lib
from multimodal import optimizer as optim_lib
from multimodal import pretrained
from multimodal import registry
from multimodal import runtime
from multimodal import sharding
from multimodal.data import audio as audio_lib
from multimodal.data import image as image_lib
from multimodal.data import kinds as kinds_lib
from multimodal.data import pipeline
from multimodal.data import sources
from multimodal.data import text as text_lib
from multimodal.models import build_model
from multimodal.models import pipeline_parallel
from multimodal.models import rng
from multimodal.models import video as video_model

# Problems longer than this are cut: a one-line error must stay readable.
_MAX_PROBLEM_CHARS = 500


class ConfigError(ValueError):
  """Every problem `check` found in a config, as one line.

  Attributes:
    problems: one string per problem, each naming its key
      ('config.total_steps=-1: ...').
  """

  def __init__(self, problems: Iterable[str]):
    self.problems = [_one_line(p) for p in problems]
    count = len(self.problems)
    head = ('a problem' if count == 1 else f'{count} problems')
    super().__init__(f'The config has {head}: ' + '; '.join(self.problems))


def _one_line(text: str) -> str:
  text = ' '.join(str(text).split())
  if len(text) > _MAX_PROBLEM_CHARS:
    text = text[:_MAX_PROBLEM_CHARS - 3] + '...'
  return text


def problem(key: str, value: Any, valid: str) -> str:
  """'config.KEY=VALUE: VALID', the usual form of a problem."""
  return f'config.{key}={value!r}: {valid}'


def check(config, workdir: str | None = None) -> None:
  """Raises ConfigError listing every problem of `config`; see the module
  docstring. `workdir` (optional): a run that will resume there does not
  read config.init_from, so its path is then not required."""
  problems = find_problems(config, workdir)
  if problems:
    raise ConfigError(problems)


def find_problems(config, workdir: str | None = None) -> list[str]:
  """The problems `check` raises for, in order; [] for a good config."""
  try:
    registry.import_modules(config.get('imports', ()))
  except ImportError as e:
    return [problem('imports', tuple(config.get('imports', ())), str(e))]
  problems = (_schedule(config) + _optimizer(config) + _input(config)
              + _mesh(config) + _files(config, workdir))
  names = _registry_names(config)
  if names:
    return problems + names
  problems += _dataset(config)
  # The task reads the input settings and the tokenizer, and the trace all
  # of the config: each runs only where what it reads passed.
  inputs_ok = not any(p.startswith(('config.input.', 'config.model'))
                      for p in problems)
  return problems + _model_and_task(config, build_task=inputs_ok,
                                    trace=inputs_ok and not problems)


# --------------------------------------------------------------- values ---

_MISSING = object()


def _get(config, key: str, default=_MISSING):
  """config['a.b.c'] by dotted key; `default` when a part is absent."""
  node = config
  for part in key.split('.'):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      if default is _MISSING:
        raise
      return default
  return node


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_at_least(config, key: str, low: int, what: str,
                  optional: bool = False) -> list[str]:
  """A problem unless config.key is an int >= low (or absent, if
  optional)."""
  value = _get(config, key, None)
  if value is None and optional:
    return []
  if _is_int(value) and value >= low:
    return []
  bound = 'a positive int' if low == 1 else f'an int >= {low}'
  return [problem(key, value, f'must be {bound} ({what})')]


def _number_in(config, key: str, low: float, high: float, what: str, *,
               low_open: bool = False, high_open: bool = False) -> list[str]:
  value = _get(config, key, None)
  if _is_number(value) and not (value < low or value > high or (
      low_open and value == low) or (high_open and value == high)):
    return []
  interval = (('(' if low_open else '[') + f'{low:g}, {high:g}'
              + (')' if high_open else ']'))
  return [problem(key, value, f'must be a number in {interval} ({what})')]


def _regexes(config, key: str, what: str) -> list[str]:
  """A problem for each entry of config.key that is not a valid regex."""
  value = _get(config, key, ())
  if isinstance(value, str):
    return [problem(key, value, f'must be a tuple of regexes ({what}), '
                    f'e.g. ({value!r},)')]
  out = []
  for pattern in value or ():
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      out.append(problem(key, tuple(value), f'{pattern!r} is not a regex '
                         f'({e}); {what}'))
  return out


# ------------------------------------------------------------- schedule ---

def _schedule(config) -> list[str]:
  out = []
  out += _int_at_least(config, 'total_steps', 1, 'training steps')
  out += _int_at_least(config, 'batch_size', 1, 'global training batch')
  out += _int_at_least(config, 'eval_batch_size', 1,
                       'global evaluation batch')
  out += _int_at_least(config, 'log_every', 1, 'steps between log lines')
  out += _int_at_least(config, 'eval_every', 0,
                       'steps between evaluations; 0: only at the end')
  policy = _get(config, 'on_nonfinite', 'stop')
  if policy not in base_config.NONFINITE_POLICIES:
    out.append(problem('on_nonfinite', policy, "must be 'stop' or 'skip' (what "
                       'a step with a non-finite loss does to the run)'))
  out += _int_at_least(config, 'max_nonfinite_in_a_row', 1,
                       "non-finite steps in a row before 'skip' stops",
                       optional=True)
  out += _int_at_least(config, 'input.device_prefetch', 0,
                       'batches placed on the devices ahead', optional=True)
  for key in ('xla_flags', 'compilation_cache_dir'):
    value = _get(config, key, '')
    if not isinstance(value, str):
      out.append(problem(key, value, "must be a string ('' for none)"))
  secs = _get(config, 'compilation_cache_min_compile_secs',
              runtime.MIN_COMPILE_SECS)
  if (isinstance(secs, bool) or not isinstance(secs, (int, float))
      or secs < 0):
    out.append(problem('compilation_cache_min_compile_secs', secs,
                       'must be a number of seconds >= 0 (0 caches every '
                       'program)'))
  out += _int_at_least(
      config, 'checkpoint_every', 1, 'steps between checkpoints; the last '
      'step and preemption always save, so a large value saves rarely')
  out += _int_at_least(config, 'checkpoint_keep', 1, 'checkpoints kept; '
                       'None keeps all', optional=True)
  if not _is_int(_get(config, 'seed', None)):
    out.append(problem('seed', _get(config, 'seed', None), 'must be an int'))
  steps = _get(config, 'profile_steps', ())
  total = _get(config, 'total_steps', None)
  if steps:
    if (not isinstance(steps, (tuple, list)) or len(steps) != 2
        or not all(_is_int(s) for s in steps)
        or not 1 <= steps[0] <= steps[1]):
      out.append(problem('profile_steps', steps, 'give (first, last) steps '
                         'with 1 <= first <= last, e.g. (10, 12), or () to '
                         'trace nothing'))
    elif _is_int(total) and steps[0] > total:
      out.append(problem('profile_steps', tuple(steps), f'first step after '
                         f'config.total_steps={total}: nothing would be '
                         'traced'))
  for key in ('train_split', 'eval_split'):
    split = _get(config, key, None)
    if not isinstance(split, str) or not split.strip():
      out.append(problem(key, split, 'must name a split, e.g. '
                         "'train' or 'train[:90%]'"))
      continue
    try:
      sources.parse_split(split)
    except ValueError as e:
      out.append(problem(key, split, str(e)))
  return out


# ------------------------------------------------------------ optimizer ---

def _optimizer(config) -> list[str]:
  opt = _get(config, 'optimizer', None)
  if opt is None:
    return [problem('optimizer', None, 'must be set (see base_config.py)')]
  out = _registered('optimizer', _get(opt, 'name', None), 'optimizer.name')
  if _get(opt, 'schedule', None) is not None:
    out += _registered('schedule', _get(opt, 'schedule', None),
                       'optimizer.schedule')
  if not out:
    unknown = optim_lib.unknown_arguments(opt)
    if unknown:
      out.append(problem('optimizer', _get(opt, 'name', None),
                         f'takes no argument(s) {unknown} (remove them or '
                         'set them to None; see multimodal/optimizer.py)'))
  dtype = _get(opt, 'mu_dtype', None)
  if dtype is not None and dtype not in ('bfloat16', 'float16', 'float32'):
    out.append(problem('optimizer.mu_dtype', dtype, "must be 'bfloat16', "
                       "'float16', 'float32' or None (the parameters' dtype)"))
  lr = _get(opt, 'lr', None)
  if not _is_number(lr) or lr <= 0:
    out.append(problem('optimizer.lr', lr, 'must be a number > 0 (the peak '
                       'learning rate)'))
  warmup = _get(opt, 'warmup_steps', None)
  # A warmup longer than the run is clamped by optimizer.schedule (a short
  # smoke run of a long config), not an error.
  if not _is_int(warmup) or warmup < 0:
    out.append(problem('optimizer.warmup_steps', warmup,
                       'must be an int >= 0'))
  for key in ('b1', 'b2'):
    if _get(opt, key, None) is not None:
      out += _number_in(config, f'optimizer.{key}', 0.0, 1.0,
                        'a moment decay rate', high_open=True)
  out += _number_in(config, 'optimizer.final_fraction', 0.0, 1.0,
                    'the final learning rate as a fraction of lr')
  for key, what in (('weight_decay', 'decoupled weight decay; 0: none'),
                    ('clip_norm', 'global gradient norm clip; 0: none')):
    value = _get(opt, key, 0.0)
    if value is not None and (not _is_number(value) or value < 0):
      out.append(problem(f'optimizer.{key}', value,
                         f'must be a number >= 0 ({what})'))
  out += _regexes(config, 'optimizer.frozen',
                  'the parameters that never change')
  mults = _get(opt, 'lr_mults', ()) or ()
  for entry in mults:
    if (not isinstance(entry, (tuple, list)) or len(entry) != 2
        or not _is_number(entry[1]) or entry[1] <= 0):
      out.append(problem('optimizer.lr_mults', tuple(mults), f'{entry!r} is '
                         'not a (regex, multiplier > 0) pair'))
      continue
    try:
      re.compile(entry[0])
    except (re.error, TypeError) as e:
      out.append(problem('optimizer.lr_mults', tuple(mults),
                         f'{entry[0]!r} is not a regex ({e})'))
  return out


# ---------------------------------------------------------------- input ---

_AUGMENT_KEYS = image_lib.JITTER_KEYS
_AUDIO_AUGMENT_KEYS = ('max_stretch', 'max_freq_shift', 'max_time_mask',
                       'max_freq_mask', 'max_tilt')


def _input(config) -> list[str]:
  out = []
  for key, what in (('image_size', 'pixels per side'),
                    ('max_text_len', 'tokens per text, eos included'),
                    ('num_frames', 'log-mel frames of 10 ms'),
                    ('num_mels', 'mel bins')):
    out += _int_at_least(config, f'input.{key}', 1, what)
  channels = _get(config, 'input.image_channels', 3)
  if channels not in (1, 3) or not _is_int(channels):
    out.append(problem('input.image_channels', channels,
                       'must be 1 (grey) or 3 (RGB)'))
  front_end = _get(config, 'input.audio_front_end', 'default')
  if front_end not in audio_lib.FRONT_ENDS:
    out.append(problem('input.audio_front_end', front_end,
                       f'must be one of {audio_lib.FRONT_ENDS}'))
  on_error = _get(config, 'input.on_error', 'raise')
  if on_error not in pipeline.ON_ERROR:
    out.append(problem('input.on_error', on_error,
                       f'must be one of {pipeline.ON_ERROR}'))
  workers = _get(config, 'input.num_workers', 0)
  if on_error == 'skip' and _is_int(workers) and workers > 0:
    out.append(problem('input.num_workers', workers,
                       "with input.on_error='skip' must be 0: skipped "
                       "records are counted in the trainer's process, and "
                       "worker processes' counts would be lost (use reader "
                       'threads, input.num_threads)'))
  out += _number_in(config, 'input.max_skip_fraction', 0.0, 1.0,
                    'the largest share of records that may be skipped')
  out += _int_at_least(config, 'input.validate_records', -1,
                       'records checked before training; -1: all, 0: none')
  for key, what in (('num_threads',
                     'reader threads; 0: read in the consuming thread'),
                    ('prefetch', 'examples read ahead'),
                    ('num_workers', 'worker processes; 0: none'),
                    ('audio_cache_size', 'clips kept in memory'),
                    ('image_cache_size', 'images kept in memory'),
                    ('aligned_items', 'items per example; 0: one at random')):
    if _get(config, f'input.{key}', None) is not None:
      out += _int_at_least(config, f'input.{key}', 0, what)
  for key, known in (('augment', _AUGMENT_KEYS),
                     ('audio_augment', _AUDIO_AUGMENT_KEYS)):
    value = _get(config, f'input.{key}', None)
    if not value:
      continue
    if not hasattr(value, 'items'):
      out.append(problem(f'input.{key}', value,
                         f'must be None or a dict of {known}'))
      continue
    for name, amount in value.items():
      if name not in known:
        out.append(problem(f'input.{key}.{name}', amount,
                           f'unknown key; use {known}'))
      elif not _is_number(amount) or amount < 0:
        out.append(problem(f'input.{key}.{name}', amount,
                           'must be a number >= 0'))
  fields = _get(config, 'input.fields', {}) or {}
  for field, record_key in fields.items():
    if not isinstance(record_key, str) or not record_key:
      out.append(problem(f'input.fields.{field}', record_key,
                         'must be the record key (a non-empty string) the '
                         'field reads'))
  kinds = registry.names('field')
  for field, kind in (_get(config, 'input.kinds', {}) or {}).items():
    if kind not in kinds:
      out.append(problem(f'input.kinds.{field}', kind,
                         f'not a registered field kind; registered: '
                         f'{", ".join(kinds)}'))
  return out


# ----------------------------------------------------------------- mesh ---

def _mesh(config) -> list[str]:
  out = []
  try:
    sharding.get_rules(_get(config, 'sharding.rules', None),
                       _get(config, 'sharding.overrides', ()) or ())
  except (ValueError, TypeError) as e:
    out.append(problem('sharding.rules', _get(config, 'sharding.rules', None),
                       str(e)))
  mesh_cfg = _get(config, 'mesh', None)
  try:
    mesh = mesh_lib.build_mesh(mesh_cfg)
  except (ValueError, TypeError, AssertionError) as e:
    shown = dict(mesh_cfg) if hasattr(mesh_cfg, 'items') else mesh_cfg
    return out + [problem('mesh', shown, str(e))]
  mode = _get(config, 'init_mode', 'jit')
  if mode not in base_config.INIT_MODES:
    out.append(problem('init_mode', mode, 'must be one of '
                       f'{base_config.INIT_MODES} (how a fresh run creates '
                       'its train state)'))
  elif mode == 'eager' and jax.process_count() > 1:
    out.append(problem('init_mode', mode, 'needs one process (this run has '
                       f'{jax.process_count()}); use init_mode=\'jit\', '
                       'which creates each array where it lives'))
  for key in ('batch_size', 'eval_batch_size'):
    size = _get(config, key, None)
    if not _is_int(size) or size < 1:
      continue  # reported by _schedule
    try:
      mesh_lib.check_batch_size(size, mesh)
    except ValueError as e:
      out.append(problem(key, size, str(e)))
  return out + pipeline_problems(config, mesh)


def pipeline_problems(config, mesh) -> list[str]:
  """config.pipeline against the mesh: microbatches that split every batch
  evenly, and each microbatch over the batch shards."""
  count = _get(config, 'pipeline.microbatches', 4)
  if not _is_int(count) or count < 1:
    return [problem('pipeline.microbatches', count, 'a count >= 1 of the '
                    'microbatches a pipelined batch is cut into')]
  stages = mesh.shape.get(mesh_lib.STAGE, 1)
  if stages == 1:
    return []
  out = []
  shards = math.prod(mesh.shape[a] for a in mesh_lib.BATCH_AXES)
  for key in ('batch_size', 'eval_batch_size'):
    size = _get(config, key, None)
    if _is_int(size) and size >= 1 and size % (count * shards):
      out.append(problem(key, size, f'with {stages} pipeline stages each '
                         f'batch is cut into config.pipeline.microbatches='
                         f'{count}, each split over the {shards} batch shards '
                         f'(mesh {dict(mesh.shape)}): use a multiple of '
                         f'{count * shards}, or change the microbatches'))
  return out


def _stacked_layers(model) -> dict[str, int]:
  """{path of a stacked block module: its depth} for every parameter whose
  leading axis is 'layers' (scan_layers): what a stage mesh pipelines."""
  found = {}
  for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = v.get_metadata().get('out_sharding') or ()
    if names and names[0] == 'layers':
      keys = [str(k) for k in path]
      end = keys.index('blocks') + 1 if 'blocks' in keys else len(keys)
      found['/'.join(keys[:end])] = v.shape[0]
  return found


def _pipeline_model(config, model) -> list[str]:
  stages = mesh_lib.stages(_get(config, 'mesh', {}) or {})
  if stages <= 1:
    return []
  stacks = _stacked_layers(model)
  if not stacks:
    return [problem('mesh.stage', stages, 'pipeline stages split stacked '
                    'layers, but no part of config.model stacks its layers: '
                    'set scan_layers=True on the towers or decoder to '
                    'pipeline (e.g. --config.model.towers.image.scan_layers='
                    'True), or use stage=1')]
  return [problem('mesh.stage', stages, f'{path} has {depth} layers, which '
                  f'do not split into {stages} pipeline stages: use a depth '
                  f'that is a multiple of {stages}, or another stage count')
          for path, depth in sorted(stacks.items()) if depth % stages]


# ---------------------------------------------------------------- files ---

def _files(config, workdir: str | None) -> list[str]:
  out = []
  init = _get(config, 'init_from', None) or {}
  path = _get(init, 'path', '') if init else ''
  resuming = bool(workdir and pretrained.checkpoint_steps(workdir))
  if path and not resuming:
    if not os.path.exists(os.path.expanduser(path)):
      out.append(problem('init_from.path', path, 'does not exist; give an '
                         'export directory, a training workdir or a '
                         'checkpoint step directory (or \'\' to train from '
                         'scratch)'))
    else:
      try:
        pretrained._state_dir(path)  # pylint: disable=protected-access
      except FileNotFoundError as e:
        out.append(problem('init_from.path', path, str(e)))
      if os.path.exists(os.path.join(os.path.expanduser(path),
                                     pretrained.QUANTIZATION_JSON)):
        out.append(problem('init_from.path', path, 'is a quantized export; '
                           'start from the float export it was made from'))
  restore_step = _get(config, 'restore_step', None)
  if restore_step is not None:
    if not _is_int(restore_step) or restore_step < 1:
      out.append(problem('restore_step', restore_step, 'must be None (the '
                         'newest complete checkpoint) or a step number >= 1'))
    elif workdir is not None:
      missing = ckpt_lib.restore_step_problem(workdir, restore_step)
      if missing:
        out.append(problem('restore_step', restore_step, missing))
  for key, what in (('include', 'the target parameters to load'),
                    ('exclude', 'the target parameters not to load')):
    if init and _get(init, key, None) is not None:
      out += _regexes(config, f'init_from.{key}', what)
  inflate = _get(init, 'inflate', None) if init else None
  if inflate is not None and inflate not in video_model.INFLATIONS:
    out.append(problem('init_from.inflate', inflate, 'must be one of '
                       f'{video_model.INFLATIONS} (how an image patch '
                       'kernel fills a video tubelet kernel)'))
  for entry in (_get(init, 'rename', ()) or ()) if init else ():
    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
      out.append(problem('init_from.rename', tuple(init.rename),
                         f'{entry!r} is not a (pattern, replacement) pair'))
      continue
    try:
      re.compile(entry[0])
    except (re.error, TypeError) as e:
      out.append(problem('init_from.rename', tuple(init.rename),
                         f'{entry[0]!r} is not a regex ({e})'))

  tokenizer = _get(config, 'input.tokenizer', None)
  if not tokenizer:
    out.append(problem('input.tokenizer', tokenizer, 'must name a '
                       'sentencepiece .model file (`python -m '
                       'multimodal.tokenizer train ...` makes one)'))
    return out
  max_len = _get(config, 'input.max_text_len', None)
  try:
    tok = text_lib.Tokenizer(os.path.expanduser(tokenizer),
                             max_len if _is_int(max_len) else 1)
  except (OSError, ValueError) as e:
    out.append(problem('input.tokenizer', tokenizer, str(e)))
    return out
  model = _get(config, 'model', None)
  if model is not None:
    try:
      text_lib.check_vocab(model, tok)
    except ValueError as e:
      out.append(_vocab_problem(str(e)))
  return out


def _vocab_problem(message: str) -> str:
  # check_vocab's message starts with the key and value ('config.model.
  # decoder.vocab_size=50 is smaller...'): already the problem's form.
  key, sep, rest = message.partition('=')
  value, _, rest = rest.partition(' ')
  if sep and key.startswith('config.'):
    return f'{key}={value}: {rest}'
  return problem('model', '...', message)


# ------------------------------------------------------------- registry ---

def _registered(kind: str, name, key: str) -> list[str]:
  names = registry.names(kind)
  if isinstance(name, str) and name in names:
    return []
  return [problem(key, name, f'not a registered {kind}; registered: '
                  f'{", ".join(names) or "(none)"} (your own register '
                  f'with @registry.register({kind!r}, NAME) in a module '
                  'listed in config.imports)')]


def _registry_names(config) -> list[str]:
  out = _registered('task', _get(config, 'task', None), 'task')
  model = _get(config, 'model', None)
  if model is None or not hasattr(model, 'get'):
    out.append(problem('model', model, 'must be a dict naming a registered '
                       'model (config.model.name) and its arguments'))
  else:
    out += _registered('model', model.get('name'), 'model.name')
    for tower, cfg in (model.get('towers') or {}).items():
      name = cfg.get('name') if hasattr(cfg, 'get') else cfg
      out += _registered('encoder', name, f'model.towers.{tower}.name')
      if hasattr(cfg, 'get') and cfg.get('activation') is not None:
        out += _registered('activation', cfg.get('activation'),
                           f'model.towers.{tower}.activation')
    for part, kind in (('fusion', 'fusion'), ('decoder', 'decoder')):
      cfg = model.get(part)
      if hasattr(cfg, 'get') and 'name' in cfg:
        out += _registered(kind, cfg.get('name'), f'model.{part}.name')
      if hasattr(cfg, 'get') and cfg.get('activation') is not None:
        out += _registered('activation', cfg.get('activation'),
                           f'model.{part}.activation')
  out += _registered('source', _get(config, 'dataset.source', 'tfds'),
                     'dataset.source')
  for name, entry in (_get(config, 'evals', None) or {}).items():
    kind = entry.get('type') if hasattr(entry, 'get') else None
    out += _registered('evaluator', kind, f'evals.{name}.type')
  return out


# -------------------------------------------------------------- dataset ---

def _splits(config) -> dict[str, str]:
  """{'train_split': name, 'eval_split': name}, slices stripped."""
  out = {}
  for key in ('train_split', 'eval_split'):
    try:
      out[key] = sources.parse_split(_get(config, key)).name
    except (ValueError, AttributeError):
      pass  # reported by _schedule
  return out


def _dataset(config) -> list[str]:
  """The source's own check (its opener's `check_config` attribute), given
  the record keys the run reads."""
  opener = registry.get('source', _get(config, 'dataset.source', 'tfds'))
  source_check = getattr(opener, 'check_config', None)
  if source_check is None:
    return []
  keys = dict((_get(config, 'input.fields', {}) or {}).items())
  return list(source_check(config.dataset, _splits(config), keys))


# ------------------------------------------------------- model and task ---

def _model_and_task(config, build_task: bool, trace: bool) -> list[str]:
  task_cls = registry.get('task', config.task)
  model_cls = registry.get('model', config.model.name)
  needs = tuple(getattr(task_cls, 'model_methods', ()))
  lacks = [m for m in needs if not callable(getattr(model_cls, m, None))]
  if lacks:
    fits = [n for n in registry.names('model') if all(
        callable(getattr(registry.get('model', n), m, None)) for m in needs)]
    return [problem('task', config.task, f'needs a model with '
                    f'{", ".join(needs)} (registered models that have it: '
                    f'{", ".join(fits) or "none"}), but config.model.name='
                    f'{config.model.name!r} ({model_cls.__name__}) has no '
                    f'{", ".join(lacks)}')]
  try:
    model = pretrained.abstract_model(config.model)
  except Exception as e:  # pylint: disable=broad-except
    return [_model_problem(config, e)]
  stages = _pipeline_model(config, model)
  if stages:
    return stages
  if not build_task:
    return []
  try:
    task = task_cls(config)
  except Exception as e:  # pylint: disable=broad-except
    return [_task_problem(config, e, task_cls)]
  shapes, out = _field_shapes(config, task)
  if out or not trace:
    return out
  return _trace_loss(config, task, model, shapes)


def _trace_loss(config, task, model, shapes) -> list[str]:
  """Traces task.loss abstractly (jax.eval_shape: no compile, no device
  memory) on a training batch of `shapes`, in the mesh and logical axis
  rules the train step uses, so the trace sees what the step would."""
  mesh = mesh_lib.build_mesh(config.mesh)
  batch = _batch(config, task, shapes, mesh_lib.batch_sharding(mesh))
  if batch is None:
    return []  # a field kind that cannot tell its shape: no trace
  rules = sharding.get_rules(config.sharding.rules,
                             config.sharding.get('overrides', ()))
  graphdef, state = nnx.split(model)
  try:
    with (jax.set_mesh(mesh), nnx.logical_axis_rules(rules),
          pipeline_parallel.microbatches(
              _get(config, 'pipeline.microbatches', 4))):
      jax.eval_shape(lambda s, b: task.loss(nnx.merge(graphdef, s), b),
                     state, batch)
  except Exception as e:  # pylint: disable=broad-except
    return [f'config.model ({config.model.name!r}) does not take the batch '
            f'config.input makes: {_first_line(e)} Check the towers\' sizes '
            '(image_size, channels, num_frames, num_mels, max_len) against '
            'config.input\'s (found by tracing the loss abstractly; nothing '
            'compiled).']
  return []


def _first_line(e: Exception) -> str:
  text = str(e).strip() or type(e).__name__
  if isinstance(e, (KeyError, AttributeError)) and len(text) < 60:
    text = f'{type(e).__name__} {text}'
  return text.split('\n\n')[0]


def _model_problem(config, e: Exception) -> str:
  """The model's build error, naming the tower whose config it is when one
  tower alone fails to build."""
  for name, tower in (config.model.get('towers') or {}).items():
    try:
      _abstract_encoder(tower)
    except Exception as tower_error:  # pylint: disable=broad-except
      return _build_problem(f'model.towers.{name}', tower, tower_error)
  return _build_problem('model', config.model, e)


def _build_problem(key: str, cfg, e: Exception) -> str:
  """'config.KEY.ARG=VALUE: ...' when the message starts with one of the
  module's arguments ('pool must be one of ...'), else 'config.KEY (NAME
  module) cannot be built: ...'."""
  message = _first_line(e)
  match = re.match(r'(\w+) (must|=)', message)
  if match and match.group(1) in cfg and match.group(1) != 'name':
    arg = match.group(1)
    return problem(f'{key}.{arg}', cfg[arg], message)
  return (f'config.{key} ({cfg.get("name")!r}) cannot be built: {message}')


def _abstract_encoder(tower_cfg):
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: build_model(tower_cfg, rngs=rng.Rngs(0),
                                              kind='encoder'))


def _short(cfg) -> dict:
  """A tower config shown in a message: its name and the keys set."""
  items = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
  return {k: v for k, v in items.items() if not isinstance(v, dict)}


def _task_problem(config, e: Exception, task_cls) -> str:
  message = _first_line(e)
  if message.startswith('config.'):
    return message  # names its key already (e.g. config.evals.NAME)
  if isinstance(e, (AttributeError, KeyError)):
    # ConfigDict names only the missing key, quoted: "'captioning'".
    key = str(e.args[0] if e.args else e).strip('"\'')
    module = task_cls.__module__
    message = (f'it reads the config key {key!r}, which is not set (the '
               f'docstring of {module} lists the keys it needs)')
  return problem('task', config.task, f'cannot be built: {message}')


def _field_shapes(config, task):
  """({field: (shape, dtype) or None} of one example, problems): every
  field the task and its evaluators need, made by its kind from
  config.input (the kinds check their own settings)."""
  input_cfg = config.input
  fields = input_cfg.get('fields') or {}
  tokenizer = pipeline.make_tokenizer(input_cfg)
  out, shapes = [], {}
  for field in sorted(set(task.fields) | set(task.eval_fields)):
    kind_name = kinds_lib.kind_of(field, input_cfg)
    try:
      kind = registry.get('field', kind_name)(input_cfg, train=True,
                                              tokenizer=tokenizer)
    except (ValueError, TypeError, KeyError) as e:
      out.append(problem(f'input.fields.{field}', fields.get(field),
                         f'its kind {kind_name!r} rejects config.input: '
                         f'{_first_line(e)}'))
      continue
    if not kind.generated and field not in fields:
      out.append(problem('input.fields', _short(fields), f'has no record '
                         f'key for {field!r}, which the {config.task!r} task '
                         f'(or an evaluator) needs; add config.input.fields.'
                         f'{field} = KEY (the record key it reads)'))
      continue
    shapes[field] = kind.example_shape()
  return shapes, out


def _batch(config, task, shapes, batch_sharding):
  """{field: ShapeDtypeStruct [batch_size, ...]} of the training batch, or
  None when a field kind cannot tell its shape."""
  input_cfg = config.input
  items = input_cfg.get('aligned_items', 0) or 0
  aligned = set(input_cfg.get('aligned_fields', ()) or ())
  batch = {}
  for field in task.fields:
    if shapes.get(field) is None:
      return None
    shape, dtype = shapes[field]
    if field in aligned and items:
      shape = (items,) + tuple(shape)
    batch[field] = jax.ShapeDtypeStruct(
        (config.batch_size,) + tuple(shape), dtype, sharding=batch_sharding)
  return batch
