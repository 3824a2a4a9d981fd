"""The config check (multimodal/config_checks.py): a battery of bad configs,
each a one-line error naming its key, found before any data is read or
anything is compiled or placed on a device."""
import gc
import importlib
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from multimodal import config_checks
from multimodal.data import pipeline
from multimodal.data import sources
from multimodal.data.sources import base as sources_base
from projects.digits import data as digits_data

REPO = pathlib.Path(__file__).resolve().parents[1]

# What jax records when it lowers a jaxpr to XLA and when XLA compiles it
# (jax._src.dispatch); eval_shape traces without either.
_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')


@pytest.fixture()
def nothing_runs(monkeypatch):
  """Counts lowerings and compilations while a test runs (the list it
  yields), fails a test that opens a data source, and checks that no device
  array was left behind."""
  events = []

  def listener(name, *args, **kwargs):
    del args, kwargs
    if name in _COMPILE_EVENTS:
      events.append(name)

  def no_data(*args, **kwargs):
    raise AssertionError(f'the config check opened data: {args}')

  for module in (pipeline, sources, sources_base):
    monkeypatch.setattr(module, 'open_source', no_data)
  monkeypatch.setattr(pipeline, 'make_iterator', no_data)
  # Earlier tests in this process may leave garbage (and threads) behind:
  # count after collecting, and only new arrays are the check's.
  gc.collect()
  before = {id(a) for a in jax.live_arrays()}
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  gc.collect()
  new = [a.shape for a in jax.live_arrays() if id(a) not in before]
  assert not new, f'the check left device arrays behind: {new}'


@pytest.fixture(scope='module')
def no_data_dir(tmp_path_factory):
  """An empty data_dir: the digits source would build its data there if
  anything opened it (and nothing does)."""
  return str(tmp_path_factory.mktemp('no_data'))


def _config(experiment, data_dir):
  """The tiny variant of a digits experiment, or 'own_jsonl':
  experiments/image_text.py's tiny SigLIP on JSONL manifests."""
  if experiment == 'own_jsonl':
    config = importlib.import_module('experiments.image_text').get_config(
        'siglip,tiny')
    config.input.tokenizer = digits_data.TOKENIZER_PATH
    config.model.towers.text.vocab_size = 320
    config.dataset.splits.train = '/nonexistent/train.jsonl'
    config.dataset.splits.val = __file__  # exists; nothing reads it
    return config
  config = importlib.import_module(
      f'projects.digits.configs.{experiment}').get_config('tiny')
  config.dataset.data_dir = data_dir
  return config


def _set(key, value):
  def mutate(config):
    *parents, last = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[last] = value
  return mutate


def _delete_field(field):
  def mutate(config):
    del config.input.fields[field]
  return mutate


# (id, experiment, mutation, strings the error must hold: the key first).
BATTERY = [
    ('total_steps', 'contrastive', _set('total_steps', -1),
     ['config.total_steps=-1', 'positive int']),
    ('batch_size', 'contrastive', _set('batch_size', 0),
     ['config.batch_size=0']),
    ('eval_batch_size', 'contrastive', _set('eval_batch_size', -2),
     ['config.eval_batch_size=-2']),
    ('log_every', 'contrastive', _set('log_every', 0),
     ['config.log_every=0']),
    ('eval_every', 'contrastive', _set('eval_every', -5),
     ['config.eval_every=-5', '0: only at the end']),
    ('checkpoint_every', 'contrastive', _set('checkpoint_every', 0),
     ['config.checkpoint_every=0', 'positive int']),
    ('profile_steps', 'contrastive', _set('profile_steps', (5,)),
     ['config.profile_steps=(5,)', '(first, last)']),
    ('train_split_slice', 'contrastive', _set('train_split', 'train[::2]'),
     ["config.train_split='train[::2]'", 'NAME[START:STOP]']),
    ('lr', 'contrastive', _set('optimizer.lr', 0.0),
     ['config.optimizer.lr=0.0', '> 0']),
    ('warmup', 'contrastive', _set('optimizer.warmup_steps', -1),
     ['config.optimizer.warmup_steps=-1', 'int >= 0']),
    ('on_nonfinite', 'contrastive', _set('on_nonfinite', 'ignore'),
     ["config.on_nonfinite='ignore'", "'stop' or 'skip'"]),
    ('device_prefetch', 'contrastive', _set('input.device_prefetch', -1),
     ['config.input.device_prefetch=-1']),
    ('frozen_regex', 'contrastive', _set('optimizer.frozen', ('(towers',)),
     ['config.optimizer.frozen', 'not a regex']),
    ('image_size', 'contrastive', _set('input.image_size', 0),
     ['config.input.image_size=0', 'positive int']),
    ('image_channels', 'contrastive', _set('input.image_channels', 2),
     ['config.input.image_channels=2', '1 (grey) or 3 (RGB)']),
    ('max_text_len', 'contrastive', _set('input.max_text_len', 0),
     ['config.input.max_text_len=0']),
    ('num_frames', 'contrastive', _set('input.num_frames', -1),
     ['config.input.num_frames=-1']),
    ('num_mels', 'contrastive', _set('input.num_mels', 0),
     ['config.input.num_mels=0']),
    ('audio_front_end', 'contrastive', _set('input.audio_front_end', 'htk'),
     ["config.input.audio_front_end='htk'", "('default', 'whisper')"]),
    ('on_error', 'contrastive', _set('input.on_error', 'ignore'),
     ["config.input.on_error='ignore'", "('raise', 'skip')"]),
    ('skip_with_workers', 'contrastive',
     lambda c: (_set('input.on_error', 'skip')(c),
                _set('input.num_workers', 2)(c)),
     ['config.input.num_workers=2', "on_error='skip'"]),
    ('max_skip_fraction', 'contrastive', _set('input.max_skip_fraction', 1.5),
     ['config.input.max_skip_fraction=1.5', '[0, 1]']),
    ('augment_key', 'contrastive',
     _set('input.augment', dict(max_shift=0.1, rotate=3)),
     ['config.input.augment.rotate=3', 'max_rotate']),
    ('mesh', 'contrastive', _set('mesh.data', 3),
     ['config.mesh=', 'needs 3 devices']),
    ('sharding_rules', 'contrastive', _set('sharding.rules', 'fsdpp'),
     ["config.sharding.rules='fsdpp'", 'data_parallel']),
    ('init_from', 'contrastive', _set('init_from.path', '/nonexistent/x'),
     ["config.init_from.path='/nonexistent/x'", 'does not exist']),
    ('tokenizer', 'contrastive', _set('input.tokenizer', '/nonexistent.model'),
     ["config.input.tokenizer='/nonexistent.model'", 'does not exist']),
    ('vocab_size', 'contrastive', _set('model.towers.text.vocab_size', 50),
     ['config.model.towers.text.vocab_size=50', '320 pieces']),
    ('task_name', 'contrastive', _set('task', 'contrastiv'),
     ["config.task='contrastiv'", 'captioning, contrastive, tts, vqa']),
    ('model_name', 'contrastive', _set('model.name', 'clip'),
     ["config.model.name='clip'", 'contrastive, encoder_decoder']),
    ('tower_name', 'contrastive', _set('model.towers.image.name', 'vitt'),
     ["config.model.towers.image.name='vitt'", 'vit']),
    ('source_name', 'contrastive', _set('dataset.source', 'parquet'),
     ["config.dataset.source='parquet'", 'jsonl']),
    ('evaluator_type', 'contrastive', _set('evals.retrieval.type', 'recall'),
     ["config.evals.retrieval.type='recall'", 'retrieval, spectrogram, vqa']),
    ('field_kind', 'contrastive', _set('input.kinds.image', 'picture'),
     ["config.input.kinds.image='picture'", 'image']),
    ('tfds_name', 'contrastive',
     lambda c: (_set('dataset.source', 'tfds')(c),
                _set('dataset.name', 'digits_trimodall')(c)),
     ["config.dataset.name='digits_trimodall'", 'digits_trimodal']),
    ('eval_split', 'contrastive', _set('eval_split', 'testt'),
     ["config.eval_split='testt'", 'train, validation, test']),
    ('record_key', 'contrastive', _set('input.fields.audio', 'speechh'),
     ["config.input.fields.audio='speechh'", 'speech_captions']),
    ('missing_field', 'contrastive', _delete_field('audio'),
     ['config.input.fields=', "no record key for 'audio'"]),
    ('manifest', 'own_jsonl', lambda c: None,
     ["config.train_split='train'", 'manifest of split', 'does not exist']),
    ('loss', 'contrastive', _set('model.loss', 'hinge'),
     ["config.model.loss='hinge'", '(sigmoid, softmax)']),
    ('pool', 'contrastive', _set('model.towers.image.pool', 'max'),
     ["config.model.towers.image.pool='max'", "('cls', 'mean', 'map')"]),
    ('patch_size', 'contrastive', _set('model.towers.image.patch_size', 5),
     ['config.model.towers.image', 'patch size (5, 5) divides']),
    ('tower_argument', 'contrastive',
     _set('model.towers.image.dropoutt', 0.1),
     ['config.model.towers.image', "unknown argument(s) ['dropoutt']"]),
    ('pair_field', 'contrastive', _set('model.pairs', (('image', 'caption'),)),
     ["config.model ('contrastive')", "('image', 'caption')"]),
    ('task_model_mismatch', 'contrastive', _set('task', 'captioning'),
     ["config.task='captioning'", 'encoder_decoder']),
    ('evaluator_argument', 'contrastive',
     _set('evals.zeroshot_image.media', 'video'),
     ['config.evals.zeroshot_image', "['video']"]),
    ('input_vs_tower_size', 'contrastive', _set('input.image_size', 32),
     ["config.model ('contrastive')", 'got (16, 32, 32, 1)']),
    ('text_vs_tower_len', 'contrastive', _set('input.max_text_len', 40),
     ["config.model ('contrastive')", 'max_len=24']),
    ('fusion_name', 'captioning', _set('model.fusion.name', 'concatt'),
     ["config.model.fusion.name='concatt'", 'perceiver_resampler']),
    ('decoding_length', 'captioning', _set('decoding.max_new_tokens', 40),
     ["config.task='captioning'", 'max_new_tokens=40']),
    ('vqa_media', 'vqa', _set('vqa.media', ('video',)),
     ["config.vqa.media=('video',)", 'towers']),
    ('vqa_metric_one_reference', 'vqa', _set('evals.vqa.metric', 'vqa_acc'),
     ["config.evals.vqa (type 'vqa')", 'max_references=1',
      "metric='exact_match'"]),
    ('vqa_metric_name', 'vqa', _set('evals.vqa.metric', 'vqa_accuracy'),
     ["config.evals.vqa (type 'vqa')", "Unknown VQA metric 'vqa_accuracy'"]),
    ('contrastive_task_on_encoder_decoder', 'vqa', _set('task', 'contrastive'),
     ["config.task='contrastive'", "'encoder_decoder'"]),
    ('init_mode', 'contrastive', _set('init_mode', 'lazy'),
     ["config.init_mode='lazy'", "one of ('jit', 'eager')"]),
    ('cache_min_compile', 'contrastive',
     _set('compilation_cache_min_compile_secs', -1.0),
     ['config.compilation_cache_min_compile_secs=-1.0', '>= 0']),
    ('imports', 'contrastive', _set('imports', ('no_such_lab.module',)),
     ["config.imports=('no_such_lab.module',)", 'cannot be imported']),
]


@pytest.mark.parametrize('experiment,mutate,expected',
                         [case[1:] for case in BATTERY],
                         ids=[case[0] for case in BATTERY])
def test_bad_config_is_one_line_naming_the_key(
    experiment, mutate, expected, no_data_dir, nothing_runs):
  config = _config(experiment, no_data_dir)
  mutate(config)
  with pytest.raises(config_checks.ConfigError) as info:
    config_checks.check(config)
  message = str(info.value)
  assert '\n' not in message
  assert len(info.value.problems) == 1, info.value.problems
  for piece in expected:
    assert piece in message, (piece, message)
  assert not nothing_runs, nothing_runs


def test_the_compile_counter_sees_a_compile(nothing_runs):
  """The battery's 'nothing compiled' is not vacuous: a fresh jitted
  function is seen."""
  jax.block_until_ready(jax.jit(lambda x: x * 3 + 1)(np.arange(3.0)))
  assert nothing_runs


def test_every_problem_is_listed_in_one_error(no_data_dir, nothing_runs):
  config = _config('contrastive', no_data_dir)
  config.total_steps = -1
  config.checkpoint_every = 0
  config.optimizer.lr = -1.0
  config.input.image_size = 0
  config.model.loss = 'hinge'
  with pytest.raises(config_checks.ConfigError) as info:
    config_checks.check(config)
  keys = [p.split('=')[0] for p in info.value.problems]
  assert keys == ['config.total_steps', 'config.checkpoint_every',
                  'config.optimizer.lr', 'config.input.image_size',
                  'config.model.loss']
  assert str(info.value).startswith('The config has 5 problems: ')
  assert not nothing_runs


@pytest.mark.parametrize('experiment', ['contrastive', 'captioning', 'vqa'])
def test_good_configs_pass(experiment, no_data_dir, nothing_runs):
  config_checks.check(_config(experiment, no_data_dir))
  assert not nothing_runs, nothing_runs


def test_eager_init_needs_one_process(no_data_dir, monkeypatch):
  config = _config('contrastive', no_data_dir)
  config.init_mode = 'eager'
  config_checks.check(config)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  problems = config_checks.find_problems(config)
  assert any(p.startswith("config.init_mode='eager': needs one process "
                          '(this run has 2)') for p in problems), problems


def test_resuming_run_does_not_need_init_from(no_data_dir, tmp_path):
  """A run that resumes never reads config.init_from (its checkpoint has
  the parameters), so a path gone since is no error then."""
  config = _config('contrastive', no_data_dir)
  config.init_from.path = str(tmp_path / 'deleted_export')
  with pytest.raises(config_checks.ConfigError, match='init_from.path'):
    config_checks.check(config, str(tmp_path / 'fresh'))
  os.makedirs(tmp_path / 'run' / 'checkpoints' / '3' / 'state')
  config_checks.check(config, str(tmp_path / 'run'))


def test_train_exits_2_with_one_line(tmp_path):
  """Three bad flags (one a batch that 2 devices cannot split): exit code
  2, one 'error:' line naming all three, no traceback, no workdir."""
  workdir = tmp_path / 'wd'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  env.pop('MULTIMODAL_TRACEBACK', None)
  proc = subprocess.run(
      [sys.executable, '-m', 'multimodal.train',
       '--config=projects/digits/configs/contrastive.py:tiny',
       f'--workdir={workdir}', '--config.total_steps=-1',
       '--config.checkpoint_every=0', '--config.batch_size=7'],
      capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  for key in ('config.total_steps=-1', 'config.checkpoint_every=0',
              'config.batch_size=7'):
    assert key in lines[0]
  assert 'does not divide over the 2 batch shards' in lines[0]
  assert not workdir.exists()
