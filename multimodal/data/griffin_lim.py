"""Waveforms from the log-mel front end's features: its inverse, then
Griffin-Lim phase reconstruction (NumPy; no extra dependency).

The front end (multimodal/data/audio.py) maps a window of samples to
features f = (log10(mel power) + 4) / 4, with mel power = |STFT|^2 @ M
(M: the triangular filterbank [fft_size // 2 + 1, num_mels]; STFT: periodic
Hann window of `window` samples, `hop` samples apart, zero-padded to
`fft_size`, frames not centred). Inverting it:

  1. mel power = 10 ** (4 f - 4): exact (the front end keeps the absolute
     level; only its 80 dB floor is lost, and that floor is near silence);
  2. linear power = mel power @ pinv(M), clipped at 0: the least-squares
     inverse of the filterbank (64 mel bands cannot hold 257 bins, so
     detail within a band is lost);
  3. magnitude = sqrt(power), and a phase by Griffin-Lim (Griffin & Lim,
     1984) with the momentum of Perraudin et al. (2013, "fast Griffin-Lim"):
     alternate between the magnitude constraint and the set of consistent
     STFTs (STFT of the weighted overlap-add inverse).
"""
from __future__ import annotations

import functools

import numpy as np

from multimodal.data import audio as audio_lib


def _window(cfg: audio_lib.LogMelConfig) -> np.ndarray:
  # The front end's periodic Hann window.
  return np.hanning(cfg.window + 1)[:-1]


def stft(wave: np.ndarray, cfg: audio_lib.LogMelConfig) -> np.ndarray:
  """Complex STFT [T, fft_size // 2 + 1] of float [N] with the front end's
  framing: T = 1 + (N - window) // hop frames starting at t * hop."""
  frames = 1 + (len(wave) - cfg.window) // cfg.hop
  idx = np.arange(frames)[:, None] * cfg.hop + np.arange(cfg.window)[None]
  return np.fft.rfft(wave[idx] * _window(cfg), n=cfg.fft_size, axis=-1)


def istft(spec: np.ndarray, cfg: audio_lib.LogMelConfig) -> np.ndarray:
  """float64 [(T - 1) * hop + window]: the least-squares inverse of `stft`
  (weighted overlap-add divided by the summed squared window, floored)."""
  frames = np.fft.irfft(spec, n=cfg.fft_size, axis=-1)[:, :cfg.window]
  w = _window(cfg)
  n = (len(spec) - 1) * cfg.hop + cfg.window
  out, norm = np.zeros(n), np.zeros(n)
  for t, frame in enumerate(frames):
    out[t * cfg.hop:t * cfg.hop + cfg.window] += frame * w
    norm[t * cfg.hop:t * cfg.hop + cfg.window] += w * w
  # The window's ends are ~0, so the first and last samples are barely
  # seen by any frame: a floor keeps them from blowing up.
  return out / np.maximum(norm, 1e-2 * norm.max())


@functools.lru_cache(maxsize=8)
def _mel_inverse(cfg: audio_lib.LogMelConfig) -> np.ndarray:
  return np.linalg.pinv(audio_lib.mel_filterbank(cfg).astype(np.float64))


def features_to_magnitude(features: np.ndarray,
                          cfg: audio_lib.LogMelConfig) -> np.ndarray:
  """Log-mel features float [T, num_mels] (the front end's scaling) ->
  linear magnitude float64 [T, fft_size // 2 + 1] (steps 1-2 above)."""
  if features.ndim != 2 or features.shape[1] != cfg.num_mels:
    raise ValueError(f'Expected log-mel features [T, {cfg.num_mels}], got '
                     f'shape {features.shape}.')
  mel_power = 10.0 ** (4.0 * features.astype(np.float64) - 4.0)
  power = np.maximum(mel_power @ _mel_inverse(cfg), 0.0)
  return np.sqrt(power)


def griffin_lim(magnitude: np.ndarray, cfg: audio_lib.LogMelConfig, *,
                iterations: int = 64, momentum: float = 0.99,
                seed: int = 0) -> np.ndarray:
  """A waveform float64 [(T - 1) * hop + window] whose STFT magnitude
  approximates `magnitude` [T, fft_size // 2 + 1].

  Starts from random phases (seeded, so the output is reproducible) and
  runs `iterations` fast Griffin-Lim steps (momentum 0: the original
  algorithm)."""
  rng = np.random.default_rng(seed)
  spec = magnitude * np.exp(2j * np.pi * rng.random(magnitude.shape))
  previous = np.zeros_like(spec)
  for _ in range(iterations):
    consistent = stft(istft(spec, cfg), cfg)
    # Momentum: extrapolate along the last step before projecting.
    accelerated = consistent + momentum * (consistent - previous)
    previous = consistent
    spec = magnitude * np.exp(1j * np.angle(accelerated))
  return istft(spec, cfg)


def spectral_convergence(wave: np.ndarray, magnitude: np.ndarray,
                         cfg: audio_lib.LogMelConfig) -> float:
  """|| |STFT(wave)| - magnitude ||_F / ||magnitude||_F (0: exact)."""
  got = np.abs(stft(wave, cfg))
  return float(np.linalg.norm(got - magnitude) /
               max(np.linalg.norm(magnitude), 1e-12))


def features_to_wave(features: np.ndarray, cfg: audio_lib.LogMelConfig, *,
                     iterations: int = 64, seed: int = 0) -> np.ndarray:
  """Log-mel features float [T, num_mels] -> float32 [(T - 1) * hop +
  window] samples at cfg.sample_rate, peak-limited to [-1, 1]."""
  wave = griffin_lim(features_to_magnitude(features, cfg), cfg,
                     iterations=iterations, seed=seed)
  peak = np.abs(wave).max()
  if peak > 1.0:  # the inverse can overshoot a little; never clip
    wave = wave / peak
  return wave.astype(np.float32)
