"""Audio decoding and the log-mel front end.

Front-end parameters (all in `LogMelConfig`, defaults shown):
  sample_rate 16 kHz; window 25 ms (400 samples, Hann); hop 10 ms (160);
  FFT size 512; 64 mel bins spanning 0..8 kHz (HTK mel scale, triangular
  filters); features = log10(max(mel_power, 1e-10)), floored at the clip's
  maximum minus 8 (80 dB of dynamic range), then mapped with (x + 4) / 4 so
  values sit roughly in [-1, 1]. A clip is placed into a fixed window of
  `num_frames` frames, i.e. (num_frames - 1) * hop + window samples
  (96 frames = 0.975 s); shorter clips are zero padded, longer ones are an
  error unless `crop=True`.

The 'whisper' front end (`LogMelConfig.whisper()`, config.input.
audio_front_end='whisper') computes the features OpenAI's Whisper models
were trained on, as transformers' WhisperFeatureExtractor does: 400-point
FFT of a 400-sample periodic Hann window, hop 160; mel filters on the
Slaney mel scale (linear below 1 kHz, logarithmic above) with Slaney
normalisation (each triangle scaled by 2 / its width in Hz, so filters have
equal area); frames centred on multiples of the hop, the clip reflect-padded
by fft_size // 2 at both ends, and the one frame past the end dropped, so a
window of num_frames * hop samples gives num_frames frames; the clip starts
at sample 0 and is zero padded or cropped (its start kept) to that window
(3000 frames = 30 s, Whisper's input); the same log10, max - 8 floor (over
the whole window, padding included) and (x + 4) / 4.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import math

import numpy as np
import soundfile

# config.input.audio_front_end values: 'default' (HTK-scale triangles, frames
# inside the window) or 'whisper' (see the module docstring).
FRONT_ENDS = ('default', 'whisper')
# Whisper's input: 30 s of 10 ms frames (2 * max_source_positions).
WHISPER_FRAMES = 3000


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
  sample_rate: int = 16000
  window: int = 400
  hop: int = 160
  fft_size: int = 512
  num_mels: int = 64
  num_frames: int = 96
  fmin: float = 0.0
  fmax: float = 8000.0
  front_end: str = 'default'

  def __post_init__(self):
    if self.front_end not in FRONT_ENDS:
      raise ValueError(f'Unknown log-mel front_end {self.front_end!r}; use '
                       f'one of {FRONT_ENDS}.')

  @classmethod
  def whisper(cls, num_mels: int = 80, num_frames: int = WHISPER_FRAMES,
              sample_rate: int = 16000) -> 'LogMelConfig':
    """Whisper's front end: num_mels 80 (128 for large-v3 checkpoints, i.e.
    the checkpoint's num_mel_bins), num_frames 3000 (30 s)."""
    return cls(sample_rate=sample_rate, window=400, hop=160, fft_size=400,
               num_mels=num_mels, num_frames=num_frames, fmin=0.0,
               fmax=8000.0, front_end='whisper')

  @property
  def is_whisper(self) -> bool:
    return self.front_end == 'whisper'

  @property
  def num_samples(self) -> int:
    if self.is_whisper:  # centred frames: one per hop
      return self.num_frames * self.hop
    return (self.num_frames - 1) * self.hop + self.window


class AudioDecodeError(ValueError):
  pass


def read_audio(data: bytes) -> tuple[np.ndarray, int]:
  """Encoded audio bytes (OGG/Opus, FLAC, WAV...) -> (mono float32 [N] in
  [-1, 1], its sample rate in Hz). Raises AudioDecodeError when the bytes
  do not decode."""
  try:
    wave, sr = soundfile.read(io.BytesIO(data), dtype='float32',
                              always_2d=True)
  except Exception as e:  # soundfile raises several types
    raise AudioDecodeError(
        f'Could not decode {len(data)} bytes of audio ({e}). Store audio as '
        'OGG/Opus, FLAC or WAV bytes.') from e
  return wave.mean(axis=1), int(sr)


def decode_audio(data, sample_rate: int = 16000) -> np.ndarray:
  """Encoded audio bytes (OGG/Opus, FLAC, WAV...) or decoded samples (e.g.
  tfds Audio features: int16 [N]) -> mono float32 [N] in [-1, 1].

  Decoded samples must already be at `sample_rate` (tfds records carry no
  rate; LibriSpeech is 16 kHz). Raises AudioDecodeError naming the problem
  when bytes do not decode, the sample rate differs from `sample_rate`
  (resample offline first) or samples have an unusable dtype or shape.
  """
  if isinstance(data, np.ndarray) and data.dtype != np.object_:
    return _samples_to_float(data)
  wave, sr = read_audio(data)
  if sr != sample_rate:
    raise AudioDecodeError(
        f'Audio is {sr} Hz but the front end expects {sample_rate} Hz: '
        'resample the dataset or set the log-mel sample_rate.')
  return wave


def samples_to_float(samples: np.ndarray) -> np.ndarray:
  """Decoded samples, int PCM or float, [N] or [N, channels] -> mono
  float32 [N] (integers scaled to [-1, 1]); AudioDecodeError otherwise."""
  return _samples_to_float(np.asarray(samples))


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
  """Mono float32 [N] at `rate` Hz -> float32 [round(N * target / rate)] at
  `target` Hz: polyphase filtering (scipy.signal.resample_poly, a Kaiser
  windowed FIR) by target/rate in lowest terms. Unchanged when the rates
  are equal."""
  if rate <= 0 or target <= 0:
    raise AudioDecodeError(f'Sample rates must be positive, got {rate} -> '
                           f'{target} Hz.')
  if rate == target:
    return wave.astype(np.float32)
  from scipy import signal  # pylint: disable=g-import-not-at-top
  g = math.gcd(int(rate), int(target))
  return signal.resample_poly(wave.astype(np.float64), target // g,
                              rate // g).astype(np.float32)


def _samples_to_float(samples: np.ndarray) -> np.ndarray:
  if samples.ndim == 2:  # [N, channels]
    samples = samples.mean(axis=1)
  if samples.ndim != 1 or not samples.size:
    raise AudioDecodeError(f'Decoded audio must be [samples] or [samples, '
                           f'channels], got shape {samples.shape}.')
  if np.issubdtype(samples.dtype, np.integer):
    return (samples / float(np.iinfo(samples.dtype).max + 1)).astype(
        np.float32)
  if np.issubdtype(samples.dtype, np.floating):
    return samples.astype(np.float32)
  raise AudioDecodeError(f'Decoded audio of dtype {samples.dtype}: expected '
                         'integer PCM or float samples.')


def _hz_to_mel(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel):
  return 700.0 * (10.0**(np.asarray(mel) / 2595.0) - 1.0)


# Slaney's mel scale (Auditory Toolbox; librosa's htk=False): linear,
# 3 mels per 200 Hz, up to 1 kHz (15 mels), then logarithmic with 27 mels
# per factor 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel_slaney(hz):
  hz = np.asarray(hz, np.float64)
  log_part = _SLANEY_BREAK_MEL + np.log(
      np.maximum(hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
  return np.where(hz < _SLANEY_BREAK_HZ, hz / _SLANEY_HZ_PER_MEL, log_part)


def _mel_to_hz_slaney(mel):
  mel = np.asarray(mel, np.float64)
  log_part = _SLANEY_BREAK_HZ * np.exp(
      _SLANEY_LOG_STEP * (np.maximum(mel, _SLANEY_BREAK_MEL) -
                          _SLANEY_BREAK_MEL))
  return np.where(mel < _SLANEY_BREAK_MEL, mel * _SLANEY_HZ_PER_MEL, log_part)


_MEL_SCALES = {'htk': (_hz_to_mel, _mel_to_hz),
               'slaney': (_hz_to_mel_slaney, _mel_to_hz_slaney)}


def mel_filters(num_bins: int, num_mels: int, sample_rate: int, fmin: float,
                fmax: float, *, scale: str = 'htk', norm: str | None = None
                ) -> np.ndarray:
  """Triangular mel filters over an rfft's bins, float64 [num_bins, num_mels].

  Args:
    num_bins: rfft bins, fft_size // 2 + 1, spanning 0..sample_rate / 2.
    num_mels: filters; their num_mels + 2 edges are equally spaced in mels
      from fmin to fmax, each triangle rising from edge i to 1 at edge i + 1
      and falling to 0 at edge i + 2 (linear in Hz).
    sample_rate, fmin, fmax: in Hz.
    scale: 'htk' (2595 log10(1 + f / 700)) or 'slaney' (see _SLANEY_*).
    norm: None (peaks of 1) or 'slaney' (each filter times 2 / (its upper
      edge - its lower edge) in Hz: equal areas).
  """
  if scale not in _MEL_SCALES:
    raise ValueError(f'mel scale must be one of {sorted(_MEL_SCALES)}, got '
                     f'{scale!r}.')
  if norm not in (None, 'slaney'):
    raise ValueError(f'mel norm must be None or "slaney", got {norm!r}.')
  to_mel, to_hz = _MEL_SCALES[scale]
  freqs = np.linspace(0, sample_rate / 2, num_bins)
  edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), num_mels + 2))
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (freqs[:, None] - lower) / (center - lower)
  falling = (upper - freqs[:, None]) / (upper - center)
  filters = np.maximum(0.0, np.minimum(rising, falling))
  if norm == 'slaney':
    filters = filters * (2.0 / (upper - lower))
  return filters


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: LogMelConfig) -> np.ndarray:
  """cfg's mel filters, float32 [fft_size // 2 + 1, num_mels]: HTK scale
  without normalisation, or Slaney scale and norm for 'whisper'."""
  kind = 'slaney' if cfg.is_whisper else 'htk'
  return mel_filters(cfg.fft_size // 2 + 1, cfg.num_mels, cfg.sample_rate,
                     cfg.fmin, cfg.fmax, scale=kind,
                     norm='slaney' if cfg.is_whisper else None
                     ).astype(np.float32)


def fit_to_window(wave: np.ndarray, cfg: LogMelConfig, offset: int | None,
                  crop: bool = False) -> np.ndarray:
  """Places `wave` at `offset` in a zero window of cfg.num_samples samples.

  offset=None centres the clip (a longer clip: its centre is kept, offset
  0: its start). Returns float32 [cfg.num_samples].
  """
  n = cfg.num_samples
  if len(wave) > n:
    if not crop:
      raise AudioDecodeError(
          f'Clip has {len(wave)} samples but the window holds {n} '
          f'({cfg.num_frames} frames): raise num_frames or allow cropping.')
    start = (len(wave) - n) // 2 if offset is None else 0
    return wave[start:start + n].astype(np.float32)
  room = n - len(wave)
  offset = room // 2 if offset is None else int(np.clip(offset, 0, room))
  out = np.zeros(n, np.float32)
  out[offset:offset + len(wave)] = wave
  return out


def log_mel(wave: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
  """Log-mel features float32 [num_frames, num_mels] of a windowed clip.

  `wave` must have exactly cfg.num_samples samples (see `fit_to_window`).
  """
  if len(wave) != cfg.num_samples:
    raise ValueError(f'log_mel expects {cfg.num_samples} samples, got '
                     f'{len(wave)}; call fit_to_window first.')
  if cfg.is_whisper:
    return _whisper_log_mel(wave, cfg)
  idx = (np.arange(cfg.num_frames)[:, None] * cfg.hop +
         np.arange(cfg.window)[None, :])
  frames = wave[idx] * np.hanning(cfg.window + 1)[:-1].astype(np.float32)
  power = np.abs(np.fft.rfft(frames, n=cfg.fft_size, axis=-1))**2
  mel = np.log10(np.maximum(power @ mel_filterbank(cfg), 1e-10))
  mel = np.maximum(mel, mel.max() - 8.0)
  return ((mel + 4.0) / 4.0).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _slaney_filters(num_bins, num_mels, sample_rate, fmin, fmax):
  return mel_filters(num_bins, num_mels, sample_rate, fmin, fmax,
                     scale='slaney', norm='slaney')


def _whisper_log_mel(wave: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
  """Whisper's features of a window of num_frames * hop samples (float64
  throughout, as transformers' NumPy extractor, then float32)."""
  half = cfg.fft_size // 2
  # Frame t is centred on sample t * hop; the reflected ends stand in for
  # the samples before 0 and past the end. Frame num_frames, centred just
  # past the window, is the one Whisper drops: it is never computed here.
  padded = np.pad(wave.astype(np.float64), half, mode='reflect')
  idx = (np.arange(cfg.num_frames)[:, None] * cfg.hop +
         np.arange(cfg.window)[None, :])
  frames = padded[idx] * np.hanning(cfg.window + 1)[:-1]
  power = np.abs(np.fft.rfft(frames, n=cfg.fft_size, axis=-1))**2
  filters = _slaney_filters(cfg.fft_size // 2 + 1, cfg.num_mels,
                            cfg.sample_rate, cfg.fmin, cfg.fmax)
  mel = np.log10(np.maximum(power @ filters, 1e-10))
  mel = np.maximum(mel, mel.max() - 8.0)
  return ((mel + 4.0) / 4.0).astype(np.float32)


def lead_frames(cfg: LogMelConfig) -> int:
  """Frames before a clip's onset that still see it (window > hop)."""
  return -(-(cfg.window - cfg.hop) // cfg.hop)


def clip_features(wave: np.ndarray, cfg: LogMelConfig):
  """Log-mel of a clip placed as early as possible, and its room to move.

  The clip starts `lead_frames` hops into the window, so every frame that
  overlaps its onset exists. Returns (features float32 [num_frames, num_mels],
  free: trailing silent frames, i.e. how far `shift_frames` may move it).
  The 'whisper' front end places the clip at sample 0 as Whisper does, and
  returns free = 0: shifting its frames would not be exact (the reflect
  padding at the start sees the clip), so the clip never moves.
  """
  if cfg.is_whisper:
    return log_mel(fit_to_window(wave, cfg, 0, crop=True), cfg), 0
  offset = lead_frames(cfg) * cfg.hop
  free = max(0, cfg.num_frames - (-(-(offset + len(wave)) // cfg.hop)))
  feats = log_mel(fit_to_window(wave, cfg, offset, crop=True), cfg)
  return feats, free


def shift_frames(feats: np.ndarray, shift: int) -> np.ndarray:
  """`clip_features` output for the clip started `shift` hops later.

  Exact, not an approximation: moving the waveform by whole hops translates
  the frames, and the frames it uncovers hold silence, which log_mel floors
  at its maximum minus 8 (-2 after the (x + 4) / 4 scaling).
  """
  if not shift:
    return feats
  floor = np.full((shift, feats.shape[1]), feats.max() - 2.0, feats.dtype)
  return np.concatenate([floor, feats[:-shift]])


def augment_features(feats: np.ndarray, free: int, rng: np.random.Generator,
                     *, max_stretch: float = 0.0, max_freq_shift: int = 0,
                     max_time_mask: int = 0, max_freq_mask: int = 0,
                     max_tilt: float = 0.0):
  """Random speaker/tempo perturbations of `clip_features` output.

  Args:
    feats: float32 [T, F] log-mel of a clip placed by `clip_features`.
    free: its trailing silent frames.
    rng: the example's generator.
    max_stretch: tempo change up to +-this fraction (linear time warp of the
      clip's frames), standing in for unheard speaking rates.
    max_freq_shift: shift of up to this many mel bins, a cheap stand-in for
      vocal-tract-length differences between voices.
    max_time_mask, max_freq_mask: SpecAugment-style masks of up to this many
      frames / bins, filled with the silence floor.
    max_tilt: a spectral tilt of up to +-this many log10 units from the
      lowest to the highest mel bin (on the clip's frames, not its silence),
      standing in for voice-quality differences (breathy vs pressed voices).

  Returns:
    (features float32 [T, F], free frames after the stretch).
  """
  t, f = feats.shape
  floor = feats.max() - 2.0
  out = feats
  if max_stretch:
    active = t - free
    new_active = min(t, max(1, round(active * (1 + rng.uniform(
        -max_stretch, max_stretch)))))
    src = np.linspace(0, active - 1, new_active)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, active - 1)
    w = (src - lo)[:, None].astype(np.float32)
    out = np.full_like(feats, floor)
    out[:new_active] = (1 - w) * feats[lo] + w * feats[hi]
    free = t - new_active
  if max_freq_shift:
    k = int(rng.integers(-max_freq_shift, max_freq_shift + 1))
    if k:
      # Edge bins are repeated rather than wrapped around.
      idx = np.clip(np.arange(f) - k, 0, f - 1)
      out = out[:, idx]
  if max_tilt:
    tilt = rng.uniform(-max_tilt, max_tilt) * np.linspace(-0.5, 0.5, f)
    active = t - free
    out = out.copy() if out is feats else out
    out[:active] = np.clip(out[:active] + tilt.astype(np.float32), floor,
                           floor + 2.0)
  if max_time_mask or max_freq_mask:
    out = out.copy() if out is feats else out
    if max_time_mask:
      width = int(rng.integers(0, max_time_mask + 1))
      start = int(rng.integers(0, t - width + 1))
      out[start:start + width] = floor
    if max_freq_mask:
      width = int(rng.integers(0, max_freq_mask + 1))
      start = int(rng.integers(0, f - width + 1))
      out[:, start:start + width] = floor
  return out, free
