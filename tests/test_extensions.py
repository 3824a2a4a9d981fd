"""Extension without editing the library: a fusion, an evaluator and an
optimizer from a package of the user's own, reached from the command line
via config.imports.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import multimodal
from multimodal import metrics_writer
from multimodal import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODULES = '''
"""my_lab.modules: a fusion, an evaluator and an optimizer registered from
outside."""
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from multimodal import evaluators
from multimodal import registry


@registry.register('fusion', 'mean_tokens')
class MeanTokens(nnx.Module):
  """One token per modality: the mean of its present tokens, scaled."""

  def __init__(self, *, modalities, width, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs):
    self.modalities = tuple(modalities)
    self.scale = nnx.Param(jnp.ones((width,), param_dtype))

  def __call__(self, tokens, masks, *, deterministic=True):
    del deterministic
    memory, mask = [], []
    for m in tokens:
      w = masks[m][..., None].astype(tokens[m].dtype)
      mean = (tokens[m] * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
      memory.append(mean * self.scale.value)
      mask.append(masks[m].any(1))
    return jnp.stack(memory, 1), jnp.stack(mask, 1)


@registry.register('evaluator', 'mean_words')
class MeanWords(evaluators.Evaluator):
  """Mean number of words in the generated captions, per media."""

  def __init__(self, task):
    self.media = task.media

  def __call__(self, outputs, ctx):
    return {f'mean_words/{m}': float(np.mean(
        [len(p.split()) for p in outputs[f'prediction/{m}']]))
            for m in self.media}


@registry.register('optimizer', 'signum')
def signum(learning_rate, *, weight_decay, decay_mask, momentum=0.9):
  """Sign of the momentum, with decoupled weight decay."""
  print(f'signum: momentum={momentum} weight_decay={weight_decay}')
  return optax.chain(optax.trace(decay=momentum), optax.scale_by_sign(),
                     optax.add_decayed_weights(weight_decay, decay_mask),
                     optax.scale_by_learning_rate(learning_rate))
'''

EXPERIMENT = '''
"""my_lab.experiment: digits captioning with the lab's fusion and metric."""
from projects.digits.configs import captioning


def get_config(arg=None):
  c = captioning.get_config('tiny')
  c.imports = tuple(c.imports) + ('my_lab.modules',)
  c.model.fusion = dict(name='mean_tokens')
  c.evals.mean_words = dict(type='mean_words')
  c.optimizer = dict(c.optimizer.to_dict(), name='signum', lr=1e-4, b1=None,
                     b2=None, mu_dtype=None, momentum=0.8)
  return c
'''


@pytest.fixture
def lab(tmp_path):
  pkg = tmp_path / 'my_lab'
  pkg.mkdir()
  (pkg / '__init__.py').write_text('')
  (pkg / 'modules.py').write_text(textwrap.dedent(MODULES))
  (pkg / 'experiment.py').write_text(textwrap.dedent(EXPERIMENT))
  return tmp_path


def test_user_fusion_evaluator_and_optimizer_train_from_the_command_line(
    lab, tmp_path, digits_data_dir, monkeypatch):
  workdir = tmp_path / 'wd'
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(lab), ROOT]))
  run = subprocess.run(
      [sys.executable, '-m', 'multimodal.train',
       f'--config={lab}/my_lab/experiment.py', f'--workdir={workdir}',
       f'--config.dataset.data_dir={digits_data_dir}',
       '--config.total_steps=4', '--config.eval_split=validation',
       '--config.optimizer.momentum=0.7'],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'signum: momentum=0.7 weight_decay=0.0001' in run.stdout
  with open(workdir / 'final_validation.json') as f:
    final = json.load(f)
  for media in ('image', 'audio'):
    assert final[f'validation/mean_words/{media}'] > 0
    assert f'validation/caption/{media}/cider' in final  # built-in ones too
  # The checkpoint holds the lab fusion's parameter; loading it imports the
  # lab's module again (config.imports), as any user of the workdir would.
  monkeypatch.syspath_prepend(str(lab))
  params = multimodal.load_pretrained(str(workdir)).params
  assert params['fusion']['scale'].shape == (32,)
  losses = [m['train/loss'] for m in metrics_writer.read_metrics(
      str(workdir)) if 'train/loss' in m]
  assert len(losses) == 2 and all(l > 0 for l in losses)


def test_unknown_names_and_imports_are_clear_errors():
  with pytest.raises(KeyError, match="Unknown fusion 'nope'.*concat"):
    registry.get('fusion', 'nope')
  with pytest.raises(ImportError, match='config.imports lists'):
    registry.import_modules(['no_such_lab.modules'])


def test_one_definition_registered_twice_is_not_a_clash():
  class Thing:
    pass

  registry.register('evaluator', '_test_thing')(Thing)
  registry.register('evaluator', '_test_thing')(Thing)
  with pytest.raises(ValueError, match='registered twice'):
    registry.register('evaluator', '_test_thing')(type('Other', (), {}))
