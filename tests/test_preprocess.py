"""Decoding and feature ops: images, log-mel audio, tokenisation."""
import io

import numpy as np
from PIL import Image
import pytest
import soundfile

from multimodal.data import audio
from multimodal.data import image
from multimodal.data import text


def _png(arr):
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format='PNG')
  return buf.getvalue()


def test_image_decode_resize_normalise():
  arr = np.zeros((8, 8), np.uint8)
  arr[:, 4:] = 255
  img = image.decode_image(_png(arr), channels=1)
  x = image.to_array(img, 16)
  assert x.shape == (16, 16, 1) and x.dtype == np.float32
  assert x.min() == -1.0 and x.max() == 1.0
  assert image.to_array(image.decode_image(_png(arr), 3), 16).shape == (16, 16, 3)


def test_image_augmentation_is_seeded_and_changes_pixels():
  arr = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
  img = image.decode_image(_png(arr), 1)
  kw = dict(max_shift=0.2, max_scale=0.1, max_rotate=15)
  a = image.to_array(img, 16, rng=np.random.default_rng(3), **kw)
  b = image.to_array(img, 16, rng=np.random.default_rng(3), **kw)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, image.to_array(img, 16))


def test_corrupt_image_is_a_clear_error():
  with pytest.raises(image.ImageDecodeError, match='corrupt'):
    image.decode_image(b'\x89PNG not really', 1)


def test_log_mel_of_a_tone_peaks_at_its_mel_bin():
  cfg = audio.LogMelConfig()
  t = np.arange(8000) / cfg.sample_rate
  wave = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
  feats = audio.log_mel(audio.fit_to_window(wave, cfg, None), cfg)
  assert feats.shape == (96, 64) and feats.dtype == np.float32
  fb = audio.mel_filterbank(cfg)
  expected_bin = np.argmax(fb[round(1000 / (cfg.sample_rate / cfg.fft_size))])
  middle = feats[48]
  assert abs(int(np.argmax(middle)) - int(expected_bin)) <= 1
  # Silence outside the clip sits at the floor (max - 8 -> (x + 4) / 4).
  assert feats[0].max() < feats[48].max() - 1.0


def test_fit_to_window_places_and_rejects():
  cfg = audio.LogMelConfig(num_frames=10)
  out = audio.fit_to_window(np.ones(100, np.float32), cfg, offset=5)
  assert out.shape == (cfg.num_samples,) and out[:5].sum() == 0
  assert out[5:105].sum() == 100
  with pytest.raises(audio.AudioDecodeError, match='num_frames'):
    audio.fit_to_window(np.ones(cfg.num_samples + 1, np.float32), cfg, 0)


def test_whisper_front_end_places_pads_and_crops_at_the_start():
  cfg = audio.LogMelConfig.whisper(num_frames=50)  # 0.5 s
  assert cfg.num_samples == 50 * 160 and cfg.fft_size == cfg.window == 400
  rng = np.random.default_rng(0)
  wave = (0.3 * rng.standard_normal(5000)).astype(np.float32)
  feats, free = audio.clip_features(wave, cfg)
  assert feats.shape == (50, 80) and feats.dtype == np.float32 and free == 0
  padded = np.zeros(cfg.num_samples, np.float32)
  padded[:5000] = wave
  np.testing.assert_array_equal(feats, audio.log_mel(padded, cfg))
  # The zero padding sits at the floor: max - 8 -> feats.max() - 2.
  assert feats[-1].max() == pytest.approx(feats.max() - 2.0)
  longer = (0.3 * rng.standard_normal(12000)).astype(np.float32)
  np.testing.assert_array_equal(
      audio.clip_features(longer, cfg)[0],
      audio.log_mel(longer[:cfg.num_samples], cfg))
  # The default front end is a different computation.
  default = audio.LogMelConfig(num_frames=50, num_mels=80)
  assert not np.allclose(audio.clip_features(wave, default)[0], feats)
  with pytest.raises(ValueError, match="front_end 'htk'"):
    audio.LogMelConfig(front_end='htk')


def test_audio_field_settings_record_the_whisper_front_end():
  from multimodal import base_config  # pylint: disable=g-import-not-at-top
  from multimodal.data.kinds.audio import AudioField  # pylint: disable=g-import-not-at-top
  input_cfg = base_config.base().input
  # The default is not recorded: older exports' preprocess.json still match.
  assert 'front_end' not in AudioField(input_cfg, train=False).settings()[
      'log_mel']
  input_cfg.audio_front_end = 'whisper'
  input_cfg.num_frames, input_cfg.num_mels = 3000, 128
  field = AudioField(input_cfg, train=True)
  assert field.mel == audio.LogMelConfig.whisper(num_mels=128)
  assert field.settings()['log_mel']['front_end'] == 'whisper'
  assert field.example_shape() == ((3000, 128), np.float32)
  # Training never moves the clip: Whisper's features exactly.
  wave = np.ones(16000, np.float32) * 0.1
  np.testing.assert_array_equal(
      field(wave, np.random.default_rng(1)),
      audio.clip_features(wave, field.mel)[0])
  input_cfg.audio_front_end = 'htk'
  with pytest.raises(ValueError, match="audio_front_end='htk'"):
    AudioField(input_cfg, train=False)


def test_decode_audio_roundtrip_and_errors():
  wave = np.sin(np.linspace(0, 100, 4000)).astype(np.float32) * 0.3
  buf = io.BytesIO()
  soundfile.write(buf, wave, 16000, format='FLAC', subtype='PCM_16')
  out = audio.decode_audio(buf.getvalue())
  assert out.dtype == np.float32 and np.abs(out - wave).max() < 1e-3
  with pytest.raises(audio.AudioDecodeError, match='8000 Hz'):
    buf = io.BytesIO()
    soundfile.write(buf, wave, 8000, format='WAV')
    audio.decode_audio(buf.getvalue())
  with pytest.raises(audio.AudioDecodeError, match='Could not decode'):
    audio.decode_audio(b'garbage')


def test_tokenizer_pads_truncates_and_counts():
  from projects.digits import data as digits_data  # pylint: disable=g-import-not-at-top
  tok = text.Tokenizer(digits_data.TOKENIZER_PATH, max_len=8)
  ids = tok('a handwritten seven')
  assert ids.dtype == np.int32 and ids.shape == (8,)
  n = int((ids != 0).sum())
  assert ids[n - 1] == tok.eos_id and (ids[n:] == 0).all()
  assert tok.decode(ids) == 'a handwritten seven'
  assert tok.truncated == 0
  long = tok(' '.join(['seven'] * 20))
  assert long[-1] == tok.eos_id and tok.truncated == 1


def test_missing_tokenizer_names_the_fix():
  with pytest.raises(FileNotFoundError, match='config.input.tokenizer'):
    text.Tokenizer('/nonexistent.model', 8)


def _clip_feats(t=40, f=16, active=25):
  rng = np.random.default_rng(0)
  feats = np.full((t, f), -5.0, np.float32)
  feats[:active] = rng.uniform(-1, 0, size=(active, f)).astype(np.float32)
  feats[0, 0] = 3.0  # max: the silence floor is max - 2 = 1.0
  return feats, t - active


def test_audio_augment_off_is_identity():
  feats, free = _clip_feats()
  out, out_free = audio.augment_features(feats, free,
                                         np.random.default_rng(1))
  np.testing.assert_array_equal(out, feats)
  assert out_free == free


def test_audio_stretch_changes_length_and_keeps_endpoints():
  feats, free = _clip_feats()
  lengths = set()
  for seed in range(20):
    out, out_free = audio.augment_features(
        feats, free, np.random.default_rng(seed), max_stretch=0.2)
    n = 40 - out_free
    lengths.add(n)
    assert 20 <= n <= 30  # 25 frames +-20%
    # Linear warp: the first and last active frames land unchanged.
    np.testing.assert_allclose(out[0], feats[0])
    np.testing.assert_allclose(out[n - 1], feats[24], rtol=1e-6)
    assert np.all(out[n:] == 1.0)
  assert len(lengths) > 3


def test_audio_freq_shift_and_masks():
  feats, free = _clip_feats()
  for seed in range(10):
    out, out_free = audio.augment_features(
        feats, free, np.random.default_rng(seed), max_freq_shift=2)
    assert out_free == free
    shifted = [k for k in range(-2, 3)
               if np.array_equal(out[:, 2:-2], feats[:, 2 - k:16 - 2 - k])]
    assert len(shifted) == 1
  for seed in range(10):
    out, _ = audio.augment_features(feats, free, np.random.default_rng(seed),
                                    max_time_mask=6, max_freq_mask=4)
    changed = out != feats
    assert np.all(out[changed] == 1.0)  # masks fill with the silence floor
    # Changed cells are whole rows (a time mask, <= 6 contiguous) plus, in
    # the other rows, at most 4 contiguous columns (a frequency mask).
    full = np.where(changed.all(axis=1))[0]
    assert len(full) <= 6 and np.all(np.diff(full) == 1)
    cols = np.where(changed[~changed.all(axis=1)].any(axis=0))[0]
    assert len(cols) <= 4 and np.all(np.diff(cols) == 1)
  assert feats[0, 0] == 3.0  # the input is not modified in place
