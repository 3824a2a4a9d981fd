"""Text to speech: the model's shapes and masking, target lengths, the
Griffin-Lim inverse of the front end, a training run through the trainer,
speak() on an export and the /speak endpoint."""
import base64
import glob
import io
import os

from flax import nnx
import httpx
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

import conftest
import test_serve

import multimodal
from multimodal import metrics_writer
from multimodal import registry
from multimodal import train
from multimodal.data import audio as audio_lib
from multimodal.data import griffin_lim
from multimodal.inputs import InputError
from multimodal.models import build_model
from multimodal.models.tts import predicted_lengths
from multimodal.tasks import tts as tts_task
from multimodal.testing import exports

pytestmark = pytest.mark.usefixtures('fast_compiles')

CFG = audio_lib.LogMelConfig()
CLIPS = sorted(glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'projects/digits/data/speech/test/*.ogg')))[:8]


def _features(path):
  with open(path, 'rb') as f:
    return audio_lib.clip_features(audio_lib.decode_audio(f.read()), CFG)


@pytest.fixture(scope='module')
def tts_export(digits_data_dir, tmp_path_factory):
  config = conftest._tiny('tts', digits_data_dir)  # pylint: disable=protected-access
  return exports.untrained_export(
      config, str(tmp_path_factory.mktemp('tts') / 'export'))


def test_model_shapes_padding_and_synthesis():
  config = conftest._tiny('tts', '')  # pylint: disable=protected-access
  model = build_model(config.model, rngs=nnx.Rngs(0))
  forward = nnx.jit(lambda m, t: m(t))
  tokens = jnp.array([[5, 9, 2, 0, 0], [7, 2, 0, 0, 0]], jnp.int32)
  out = forward(model, tokens)
  assert out['mel'].shape == out['mel_before'].shape == (2, 96, 64)
  assert out['stop_logits'].shape == (2, 96)
  assert out['mel'].dtype == jnp.float32
  # Pads are masked out of the cross-attention: more of them change nothing.
  longer = forward(model, jnp.pad(tokens, ((0, 0), (0, 4))))
  np.testing.assert_allclose(longer['mel'], out['mel'], atol=1e-5)
  # Different texts, different frames.
  assert float(jnp.abs(out['mel'][0] - out['mel'][1]).max()) > 1e-4
  mel, lengths = nnx.jit(lambda m, t: m.synthesize(t))(model, tokens)
  assert lengths.shape == (2,) and lengths.dtype == jnp.int32
  for i, n in enumerate(np.asarray(lengths)):
    floor = float(out['mel'][i].max()) - 2.0
    np.testing.assert_allclose(mel[i, n:], floor, atol=1e-5)
    np.testing.assert_allclose(  # speech frames as predicted, floored
        mel[i, :n], np.maximum(out['mel'][i, :n], floor), atol=1e-5)
  logits = jnp.array([[-1.0, -1.0, 2.0, -3.0], [-1.0, -1.0, -1.0, -1.0]])
  np.testing.assert_array_equal(predicted_lengths(logits), [2, 4])


def test_target_lengths_end_where_the_clip_ends():
  feats, free = zip(*(_features(p) for p in CLIPS))
  lengths = np.asarray(tts_task.target_lengths(jnp.asarray(np.stack(feats))))
  ends = CFG.num_frames - np.array(free)  # frames reaching into the clip
  # Equal, or one short where the clip's last samples are below the floor.
  assert np.all(lengths <= ends) and np.all(ends - lengths <= 1)
  assert np.mean(lengths == ends) >= 0.5
  # An all-zero window (log-mel -1.5 everywhere) has no sound at all.
  silent = audio_lib.log_mel(np.zeros(CFG.num_samples, np.float32), CFG)
  assert int(tts_task.target_lengths(jnp.asarray(silent[None]))[0]) == 0


def test_griffin_lim_recovers_a_known_magnitude():
  t = np.arange(CFG.num_samples) / CFG.sample_rate
  chirp = 0.5 * np.sin(2 * np.pi * (300 * t + 2000 * t**2)) + 0.2 * np.sin(
      2 * np.pi * 1234 * t)
  # The inverse STFT inverts the STFT (away from the window's zero ends).
  back = griffin_lim.istft(griffin_lim.stft(chirp, CFG), CFG)
  np.testing.assert_allclose(back[50:-50], chirp[50:-50], atol=1e-6)
  magnitude = np.abs(griffin_lim.stft(chirp, CFG))
  fast = griffin_lim.spectral_convergence(
      griffin_lim.griffin_lim(magnitude, CFG, iterations=64), magnitude, CFG)
  plain = griffin_lim.spectral_convergence(
      griffin_lim.griffin_lim(magnitude, CFG, iterations=64, momentum=0.0),
      magnitude, CFG)
  random_phase = griffin_lim.spectral_convergence(
      griffin_lim.griffin_lim(magnitude, CFG, iterations=1), magnitude, CFG)
  # Measured: 0.041 (fast), 0.100 (plain), about 0.3 after one step.
  assert fast < 0.06 < plain < random_phase
  # Real speech through the whole inverse: log-mel -> wave -> log-mel.
  feats, free = _features(CLIPS[0])
  again = audio_lib.log_mel(griffin_lim.features_to_wave(feats, CFG), CFG)
  sounding = slice(0, CFG.num_frames - free)
  assert np.abs(again - feats)[sounding].mean() < 0.1


def test_one_training_run_through_the_trainer(digits_data_dir, tmp_path):
  config = conftest._tiny('tts', digits_data_dir)  # pylint: disable=protected-access
  config.total_steps = 3
  config.log_every = 1
  config.input.validate_records = 0
  config.eval_split = 'validation'
  final = train.train_and_evaluate(config, str(tmp_path))
  rows = [m for m in metrics_writer.read_metrics(str(tmp_path))
          if 'train/loss' in m]
  assert len(rows) == 3 and all(np.isfinite(r['train/loss']) for r in rows)
  assert {'train/loss/mel', 'train/loss/stop'} <= set(rows[0])
  assert final['validation/num_examples'] == 179
  assert 0 < final['validation/tts/mel_l1'] < 5
  assert final['validation/tts/length_mae'] >= 0
  # A target that is not of kind audio_target is refused by name.
  config.input.kinds = {}
  with pytest.raises(ValueError, match='audio_target'):
    registry.get('task', 'tts')(config)


def test_speak_on_an_export(tts_export):
  p = multimodal.load_pretrained(tts_export).predictor()
  assert p.endpoints() == ['speak'] and p.info()['sample_rate'] == 16000
  wave = p.speak('the word seven', iterations=8)
  assert wave.dtype == np.float32 and wave.ndim == 1
  assert np.abs(wave).max() <= 1.0
  ids, _ = p.inputs.batch('text', ['the word seven', 'nine'])
  mel, lengths = p.synthesize_arrays(ids)
  assert mel.shape == (2, 96, 64)
  assert len(wave) == (max(lengths[0], 1) - 1) * 160 + 400
  # Batches of 1 and 2 run different bucket shapes: equal up to float
  # rounding.
  np.testing.assert_allclose(
      wave, p.waveforms(mel[:1], lengths[:1], iterations=8)[0], atol=1e-5)
  both = p.speak(['the word seven', 'nine'], iterations=8)
  np.testing.assert_allclose(both[0], wave, atol=1e-5)
  with pytest.raises(InputError, match='empty'):
    p.speak('  ')
  with pytest.raises(InputError, match='at most'):
    p.speak('seven ' * 40)
  with pytest.raises(InputError, match='iterations'):
    p.speak('one', iterations=0)


def test_speak_endpoint(tts_export, tmp_path):
  p = multimodal.load_pretrained(tts_export).predictor()
  want = p.speak(['the word two', 'the word three'], iterations=8)
  with test_serve._server(tts_export, tmp_path) as (url, _):  # pylint: disable=protected-access
    r = httpx.post(url + '/speak', json={
        'texts': ['the word two', 'the word three'], 'iterations': 8},
                   timeout=test_serve.TIMEOUT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body['sample_rate'] == 16000 and len(body['audio']) == 2
    for b64, w, seconds in zip(body['audio'], want, body['seconds']):
      got, rate = soundfile.read(io.BytesIO(base64.b64decode(b64)),
                                 dtype='float32')
      assert rate == 16000 and got.shape == w.shape
      assert seconds == round(len(w) / 16000, 4)
      np.testing.assert_allclose(got, w, atol=1 / 16000 + 1e-6 + 2**-15)
    for body, status, reason in (
        ({'texts': []}, 422, 'bad_request'),
        ({'texts': ['six ' * 40]}, 400, 'text_too_long'),
        ({'texts': ['one'], 'iterations': 0}, 422, 'bad_request')):
      r = httpx.post(url + '/speak', json=body, timeout=test_serve.TIMEOUT)
      assert (r.status_code, r.json()['reason']) == (status, reason), r.text
    r = httpx.post(url + '/caption', json={'audio': []},
                   timeout=test_serve.TIMEOUT)
    assert r.status_code == 400
    assert 'speak' in httpx.get(url + '/healthz').json()['model'][
        'endpoints']
