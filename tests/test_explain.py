"""Modality attribution (multimodal/explain.py): exact Shapley values over
the modality-present mask, gradient x input saliency, explain() through
the predictor, the plot and the per-group table."""
import itertools
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import multimodal
from multimodal import explain
from multimodal import explain_plot
from multimodal.data import pipeline
from multimodal.inputs import InputError
from multimodal.predictor import Predictor
from multimodal.tasks import text_generation

pytestmark = pytest.mark.usefixtures('fast_compiles')

QUESTIONS = ['what number is written?', 'what number is spoken?',
             'what is the written number plus the spoken number?']
LABELS = ['zero', 'one', 'two', 'three', 'four']


@pytest.fixture(scope='module')
def records(tiny_exports):
  config = multimodal.load_pretrained(tiny_exports['vqa']).config
  source = pipeline.open_source(config.dataset, 'test')
  return [source[i] for i in range(3)]


def _brute_force(v, num):
  """Shapley values from the permutation definition (every order)."""
  phi = np.zeros(num)
  orders = list(itertools.permutations(range(num)))
  for order in orders:
    mask = 0
    for m in order:
      phi[m] += v(mask | (1 << m)) - v(mask)
      mask |= 1 << m
  return phi / len(orders)


def test_shapley_values_of_known_games():
  rng = np.random.default_rng(0)
  for num in (1, 2, 3):
    masks = explain.coalitions(num)
    assert masks.shape == (2 ** num, num)
    assert not masks[0].any() and masks[-1].all()
    values = rng.normal(size=(4, 2 ** num))
    phi = explain.shapley_values(values)
    for row, p in zip(values, phi):
      np.testing.assert_allclose(p, _brute_force(lambda b: row[b], num),
                                 atol=1e-12)
    # Efficiency: the values share out v(all) - v(none).
    np.testing.assert_allclose(phi.sum(-1), values[:, -1] - values[:, 0],
                               atol=1e-12)
  # Majority of three: symmetric players, 1/3 each.
  size = explain.coalitions(3).sum(1)
  np.testing.assert_allclose(explain.shapley_values((size >= 2) * 1.0),
                             [1 / 3] * 3)
  # v depends on players 0 and 1 only (player 2 a dummy), symmetrically:
  # they split v(all) = 4.
  m = explain.coalitions(3)
  values = 3.0 * (m[:, 0] & m[:, 1]) + 1.0 * (m[:, 0] | m[:, 1])
  np.testing.assert_allclose(explain.shapley_values(values), [2, 2, 0],
                             atol=1e-12)
  # Additive game: phi are its terms.
  np.testing.assert_allclose(explain.shapley_values(m @ [1.0, -2.0, 0.5]),
                             [1.0, -2.0, 0.5], atol=1e-12)
  np.testing.assert_allclose(explain.shares_of([[1.0, -3.0], [0, 0]]),
                             [[0.25, 0.75], [0, 0]])
  with pytest.raises(ValueError, match=r'2\^M'):
    explain.shapley_values(np.zeros(3))


def _teacher_forced(predictor, media, present, prompt, target):
  """log p(target | prompt, media, present) from the model's __call__."""
  ids = predictor.inputs.tokenizer.ids
  inputs, labels, weights, _ = text_generation.teacher_forcing(
      prompt, target, predictor.model.decoder.max_len, ids=ids)
  logits = predictor.model(media, inputs, present)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  token = jnp.take_along_axis(logp, labels[..., None], -1)[..., 0]
  return np.asarray(jnp.sum(token * weights, 1))


def _no_pad_predictions(export):
  """A predictor whose decoder's pad row of the (tied) token table is 0:
  the pad logit is then 0, below the largest of 319 random-signed others,
  so the untrained model never predicts the pad id (which a target cannot
  hold: it marks padding) and its greedy answers are teacher-forceable."""
  model = export.build_model()
  table = model.decoder.embed.embedding
  table[...] = table[...].at[0].set(0.0)
  return Predictor(export, model=model)


@pytest.fixture(scope='module')
def vqa(tiny_exports):
  """One VQA predictor for the module (its jitted functions compile once)."""
  return _no_pad_predictions(multimodal.load_pretrained(tiny_exports['vqa']))


def test_vqa_explain_scores_efficiency_and_saliency(vqa, records):
  v = vqa
  images = [r['image'] for r in records]
  audio = [r['qa_speech'] for r in records]
  e = v.explain(images, audio, questions=QUESTIONS)
  n = len(records)
  assert e.modalities == ('image', 'audio') and e.kind == 'generative'
  assert e.coalition_scores.shape == (n, 4) and e.shapley.shape == (n, 2)
  # Efficiency: Shapley values sum to the full-input minus no-input score.
  np.testing.assert_allclose(e.shapley.sum(1), e.score - e.baseline,
                             atol=1e-4)
  assert np.all(e.shapley != 0)
  np.testing.assert_allclose(e.shares.sum(1), 1, atol=1e-6)

  # The full-input score is the greedy answer's log-probability.
  media, present = v.media_arrays(images, audio)
  prompt = v.question_prompts(QUESTIONS)
  gen = v.generate_arrays(media, present, prompt, v.decoding(method='greedy'))
  ids = v.inputs.tokenizer.ids
  for row, start in zip(gen.tokens.tolist(), np.sum(prompt != 0, 1)):
    new = row[start:start + 4]  # generation continues each row's prompt
    assert ids.pad not in new[:new.index(ids.eos) if ids.eos in new else 4]
  np.testing.assert_allclose(e.score, gen.scores, atol=1e-4)
  assert e.targets == [t for t in v.answer(QUESTIONS, images, audio,
                                           method='greedy')]

  # Each coalition is the model's own masking: {image} = audio absent.
  # (Given target ids: an untrained model's answer text need not
  # re-tokenize to the ids it generated.)
  target = v.inputs.batch('text', ['7', 'yes', '12'])[0]
  e2 = explain.generative_arrays(v, media, None, prompt, target)
  only_image = _teacher_forced(v, media, {'audio': np.zeros(n, bool)},
                               prompt, target)
  np.testing.assert_allclose(e2.coalition_scores[:, 1], only_image,
                             atol=1e-4)

  # Saliency: per pixel and per frame; its total is the derivative of the
  # score along the input's own direction (finite differences).
  s = v.inputs.example_shape('image')[0][0]
  frames = v.inputs.example_shape('audio')[0][0]
  assert e.saliency['image'].shape == (n, s, s)
  assert e.saliency['audio'].shape == (n, frames)
  eps = 1e-2
  for m in ('image', 'audio'):
    scaled = [explain.generative_arrays(
        v, {**media, m: media[m] * (1 + d)}, None, prompt, target).score
              for d in (eps, -eps)]
    np.testing.assert_allclose((scaled[0] - scaled[1]) / (2 * eps),
                               e2.saliency[m].reshape(n, -1).sum(1),
                               rtol=0.05, atol=2e-3)


def test_a_missing_modality_is_a_dummy(tiny_exports, vqa, records):
  v = vqa
  images = [r['image'] for r in records]
  audio = [records[0]['qa_speech'], None, None]
  e = v.explain(images, audio, questions=QUESTIONS,
                targets=['1', '2', 'yes'])
  assert e.targets == ['1', '2', 'yes']
  np.testing.assert_array_equal(e.present[:, 1], [True, False, False])
  assert np.all(e.shapley[1:, 1] == 0)  # exactly: never in a coalition
  np.testing.assert_allclose(e.shapley[1:, 0], e.score[1:] - e.baseline[1:],
                             atol=1e-5)
  # Captioning (image tower only): one player, phi = v(all) - v(none).
  c = multimodal.load_pretrained(tiny_exports['captioning']).predictor()
  ec = c.explain(images=images)
  assert ec.modalities == ('image',) and ec.shapley.shape == (3, 1)
  np.testing.assert_allclose(ec.shapley[:, 0], ec.score - ec.baseline,
                             atol=1e-5)


def test_contrastive_explain_and_an_ignored_modality(tiny_exports, records):
  export = multimodal.load_pretrained(tiny_exports['contrastive'])
  m = export.predictor()
  images = [r['image'] for r in records]
  audio = [r['qa_speech'] for r in records]
  prompts = {'image': ['a handwritten {}'], 'audio': ['the word {}']}
  # One modality: the score is the log of zero_shot's probability.
  zs = m.zero_shot(LABELS, prompts['image'], images=images)
  e1 = m.explain(images, labels=LABELS, prompts=prompts['image'])
  assert e1.targets == zs.labels and e1.kind == 'contrastive'
  np.testing.assert_allclose(e1.score, np.log(zs.probs[np.arange(3),
                                                       zs.index]), atol=1e-5)
  np.testing.assert_allclose(e1.baseline, -math.log(len(LABELS)), atol=1e-6)
  e = m.explain(images, audio, labels=LABELS, prompts=prompts,
                targets=['two'] * 3)
  assert e.targets == ['two'] * 3
  np.testing.assert_allclose(e.shapley.sum(1), e.score - e.baseline,
                             atol=1e-5)
  assert e.saliency['audio'].shape[0] == 3 and np.any(e.saliency['audio'])

  # A model whose audio head is zero provably ignores the audio (its
  # embedding and logits are 0): a dummy player, zero saliency.
  model = export.build_model()
  kernel = model.heads['audio'].kernel
  kernel[...] = jnp.zeros_like(kernel[...])
  deaf = Predictor(export, model=model)
  d = deaf.explain(images, audio, labels=LABELS, prompts=prompts)
  assert np.all(d.shapley[:, 1] == 0)
  assert np.all(d.saliency['audio'] == 0)
  np.testing.assert_allclose(d.shapley[:, 0], d.score - d.baseline,
                             atol=1e-5)
  assert d.targets == m.zero_shot(LABELS, prompts['image'],
                                  images=images).labels

  with pytest.raises(InputError, match='not among the labels'):
    m.explain(images, labels=LABELS, targets=['ten'] * 3)
  with pytest.raises(InputError, match='give labels'):
    m.explain(images, questions=QUESTIONS)
  with pytest.raises(InputError, match='no templates'):
    m.explain(images, audio, labels=LABELS, prompts={'image': ['{}']})


def test_explain_errors_on_generative_exports(tiny_exports, vqa, records):
  v = vqa
  images = [r['image'] for r in records]
  with pytest.raises(InputError, match='give questions'):
    v.explain(images)
  with pytest.raises(InputError, match='one entry per example'):
    v.explain(images, questions=QUESTIONS[:2])
  with pytest.raises(InputError, match='labels= are for contrastive'):
    v.explain(images, questions=QUESTIONS, labels=LABELS)
  c = multimodal.load_pretrained(tiny_exports['captioning']).predictor()
  with pytest.raises(InputError, match='takes no questions'):
    c.explain(images, questions=QUESTIONS)


def test_plot_is_written(vqa, records, tmp_path, monkeypatch):
  e = vqa.explain([r['image'] for r in records],
                  [r['qa_speech'] for r in records], questions=QUESTIONS)
  path = explain_plot.plot(e, 0, str(tmp_path / 'why.png'))
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000
  with pytest.raises(IndexError, match='outside'):
    explain_plot.plot(e, 3, str(tmp_path / 'no.png'))
  monkeypatch.setitem(sys.modules, 'matplotlib', None)
  with pytest.raises(ImportError, match=r'pip install -e "\.\[explain\]"'):
    explain_plot.plot(e, 0, str(tmp_path / 'no.png'))


def test_table_over_a_split(vqa):
  v = vqa
  parts = list(explain.explain_split(v, v.config, 'test', limit=3,
                                     records_per_call=2))
  groups = sum((p[0] for p in parts), [])
  assert sorted(set(groups)) == ['larger', 'match', 'spoken', 'sum',
                                 'written']
  assert len(groups) == 15
  for _, correct, e in parts:
    assert correct.dtype == bool and len(correct) == len(e.targets)
    assert e.prompts[0] == 'what number is written?'
  table = explain.shares_table(parts).splitlines()
  assert table[0].startswith('| group | n | correct % | image share %')
  rows = {line.split(' | ')[0][2:]: line.split(' | ') for line in table[2:]}
  assert sorted(rows) == ['all', 'larger', 'match', 'spoken', 'sum',
                          'written']
  assert rows['written'][1] == '3' and rows['all'][1] == '15'


def test_cli_prints_the_table_and_plots(tiny_exports, digits_data_dir,
                                        tmp_path):
  """python -m multimodal.explain on a contrastive export: the fused
  zero-shot labels of its zero-shot evaluators' classes and prompts."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (root, os.environ.get('PYTHONPATH', '')) if p))
  png = tmp_path / 'why.png'
  run = subprocess.run(
      [sys.executable, '-m', 'multimodal.explain', '--pretrained',
       tiny_exports['contrastive'], '--data_dir', digits_data_dir,
       '--limit', '3', '--plot', str(png), '--plot_record', '2'],
      capture_output=True, text=True, env=env, cwd=root, timeout=600,
      check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  lines = [l for l in run.stdout.splitlines() if l.startswith('|')]
  assert lines[0].startswith('| group | n | correct % | image share % | '
                             'audio share %')
  assert lines[2].startswith('| all | 3 | - |')
  assert png.read_bytes()[:4] == b'\x89PNG'
