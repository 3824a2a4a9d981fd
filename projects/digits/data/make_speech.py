"""Generates the committed spoken-digit clips (run once; output is in git).

    python -m projects.digits.data.make_speech

Needs the system tools espeak-ng and sox (`apt-get install espeak-ng sox`)
and the python package soundfile (libsndfile >= 1.0.29 for Opus).

For every voice of voices.py (accents x variants x speeds x pitches, split by
voice; see voices.py for the assignment) it speaks "zero".."nine":
  espeak-ng -v <accent>+<variant> -s <speed> -p <pitch>  (22.05 kHz wav)
  sox: resample to 16 kHz mono float, trim leading/trailing silence, peak
       normalise to -1 dBFS, no dither (so the output is repeatable)
  check: at most 0.96 s (15360 samples), otherwise fail
  encode: OGG/Opus via soundfile, ~2 KB per clip.

Output:
  speech/<split>/<accent>__<variant>__s<speed>__p<pitch>__<word>.ogg
  speech/manifest.csv  columns: file (relative to speech/), split, word, digit,
                       accent, variant, speed, pitch, num_samples
The script is deterministic: libsndfile picks a random Ogg stream serial
number, so it is replaced by a fixed one (page CRCs recomputed).
"""
import concurrent.futures
import csv
import io
import os
import shutil
import subprocess
import tempfile
import zlib

import numpy as np
import soundfile as sf

from projects.digits.data import sources
from projects.digits.data import voices

SPEECH_DIR = sources.SPEECH_DIR
MANIFEST_COLUMNS = ('file', 'split', 'word', 'digit', 'accent', 'variant',
                    'speed', 'pitch', 'num_samples')

# Opus bitrate knob of libsndfile (1.0 = lowest bitrate); 0.97 is ~24 kbit/s,
# clear speech at ~2 KB per clip.
_OPUS_COMPRESSION_LEVEL = 0.97
# Silence trimming threshold (fraction of full scale); low enough to keep the
# soft fricative onsets of "six", "seven", "five", "four".
_TRIM_THRESHOLD = '0.3%'
_FIXED_OGG_SERIAL = 0x64696769  # b'digi'


def _ogg_crc(data: bytes) -> int:
  """Ogg page CRC32 (polynomial 0x04C11DB7, MSB first, init 0, no xor)."""
  crc = 0
  for byte in data:
    crc ^= byte << 24
    for _ in range(8):
      crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
      crc &= 0xFFFFFFFF
  return crc


def _set_ogg_serial(data: bytes, serial: int) -> bytes:
  """Rewrites the stream serial number of every Ogg page (single stream)."""
  out = bytearray(data)
  pos = 0
  while pos < len(out):
    if out[pos:pos + 4] != b'OggS':
      raise ValueError(f'bad Ogg page at byte {pos}')
    num_segments = out[pos + 26]
    body = sum(out[pos + 27:pos + 27 + num_segments])
    end = pos + 27 + num_segments + body
    out[pos + 14:pos + 18] = serial.to_bytes(4, 'little')
    out[pos + 22:pos + 26] = b'\0\0\0\0'
    out[pos + 22:pos + 26] = _ogg_crc(bytes(out[pos:end])).to_bytes(4, 'little')
    pos = end
  return bytes(out)


def encode_opus(x: np.ndarray) -> bytes:
  """Encodes float32 [num_samples] 16 kHz mono audio as OGG/Opus bytes."""
  buf = io.BytesIO()
  sf.write(buf, x, voices.SAMPLE_RATE, format='OGG', subtype='OPUS',
           compression_level=_OPUS_COMPRESSION_LEVEL)
  return _set_ogg_serial(buf.getvalue(), _FIXED_OGG_SERIAL)


def synthesize(accent: str, variant: str, speed: int, pitch: int,
               word: str) -> np.ndarray:
  """Speaks `word`; returns float32 [num_samples] at 16 kHz, silence trimmed."""
  with tempfile.TemporaryDirectory() as tmp:
    raw, out = os.path.join(tmp, 'raw.wav'), os.path.join(tmp, 'out.wav')
    subprocess.run(['espeak-ng', '-v', f'{accent}+{variant}', '-s', str(speed),
                    '-p', str(pitch), '-w', raw, word], check=True)
    # silence/reverse/silence/reverse trims both ends; -R and -D keep it
    # repeatable (fixed seeds, no dither).
    subprocess.run(['sox', '-R', '-D', raw, '-r', str(voices.SAMPLE_RATE),
                    '-c', '1', '-e', 'floating-point', '-b', '32', out,
                    'silence', '1', '0.01', _TRIM_THRESHOLD, 'reverse',
                    'silence', '1', '0.01', _TRIM_THRESHOLD, 'reverse',
                    'norm', '-1'], check=True)
    x, sr = sf.read(out, dtype='float32')
  assert sr == voices.SAMPLE_RATE and x.ndim == 1, (sr, x.shape)
  return x


def _make_clip(job):
  split, (accent, variant, speed, pitch), digit = job
  word = voices.WORDS[digit]
  x = synthesize(accent, variant, speed, pitch, word)
  name = voices.clip_name(accent, variant, speed, pitch, word)
  if len(x) > voices.MAX_SAMPLES:
    raise ValueError(f'{name}: {len(x)} samples > {voices.MAX_SAMPLES} '
                     f'({voices.MAX_SECONDS} s); use a faster speed')
  if len(x) < voices.SAMPLE_RATE // 10:
    raise ValueError(f'{name}: only {len(x)} samples, synthesis failed?')
  data = encode_opus(x)
  path = SPEECH_DIR / split / name
  path.write_bytes(data)
  return {'file': f'{split}/{name}', 'split': split, 'word': word,
          'digit': digit, 'accent': accent, 'variant': variant,
          'speed': speed, 'pitch': pitch, 'num_samples': len(x)}


def main():
  for tool in ('espeak-ng', 'sox'):
    if shutil.which(tool) is None:
      raise RuntimeError(f'{tool} not found: apt-get install espeak-ng sox')
  if SPEECH_DIR.exists():
    shutil.rmtree(SPEECH_DIR)
  jobs = []
  for split in voices.SPLITS:
    (SPEECH_DIR / split).mkdir(parents=True)
    jobs += [(split, voice, digit) for voice in voices.voices_of_split(split)
             for digit in range(10)]
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    rows = list(pool.map(_make_clip, jobs))  # keeps the job order
  with open(SPEECH_DIR / 'manifest.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS,
                            lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
  lengths = np.array([r['num_samples'] for r in rows])
  total = sum(p.stat().st_size for p in SPEECH_DIR.rglob('*') if p.is_file())
  print(f'{len(rows)} clips, {total / 1e6:.2f} MB, duration '
        f'min/mean/max {lengths.min() / voices.SAMPLE_RATE:.2f}/'
        f'{lengths.mean() / voices.SAMPLE_RATE:.2f}/'
        f'{lengths.max() / voices.SAMPLE_RATE:.2f} s')


if __name__ == '__main__':
  main()
