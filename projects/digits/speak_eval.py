r"""Intelligibility of a digits tts export, measured by recognition.

  python -m projects.digits.speak_eval --tts exports/tts_digits \
      --recognizer exports/contrastive_digits --out benchmarks/tts

The recogniser is a contrastive digits export (projects/digits/configs/
contrastive.py): its audio zero-shot over the ten digit words, with the
prompts its training evaluation uses ('the word {}', 'someone saying {}').
Word accuracy is reported on

  real           the 160 test-split clips (voices never heard in training);
  real_gl        the same clips through log-mel -> Griffin-Lim -> waveform:
                 what the vocoder alone costs;
  canonical      speak('the word <w>') for the ten words;
  test_captions  every distinct caption of the test clips (they describe
                 the unheard test voices: Scottish and New York accents,
                 the speakers klatt2 and andrea);
  train_voices   '<w>, spoken <slowly|quickly> in a <low|high> voice by
                 <name>' for every training speaker (18) and word, each
                 speaker at one of the 4 speed/pitch pairs in turn (the
                 training voices, by their caption).

Generated clips are recognised the honest way, as waveforms (speak():
Griffin-Lim, then the recogniser's own front end); `*_mel` rows feed the
generated log-mel to the recogniser directly (centred in the window as the
front end centres clips), which skips the vocoder. Writes OUT/results.json,
OUT/*.wav (the canonical words) and OUT/spectrograms_*.png (real vs
generated log-mel; matplotlib, in the test and filter extras).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import soundfile

import multimodal
from multimodal.data import audio as audio_lib
from multimodal.data import griffin_lim
from projects.digits.data import captions
from projects.digits.data import sources
from projects.digits.data import voices

WORDS = voices.WORDS
PROMPTS = ('the word {}', 'someone saying {}')


def test_clips() -> list[dict]:
  """The test split's clips: manifest rows plus 'wave' float32 [N]."""
  rows = [r for r in sources.load_clips() if r['split'] == 'test']
  for r in rows:
    r['wave'] = audio_lib.decode_audio(
        (sources.SPEECH_DIR / r['file']).read_bytes())
  return rows


def prompt_sets(clips: list[dict]) -> dict[str, list[tuple[str, int]]]:
  """{set name: [(text, digit)]} (module docstring)."""
  test = sorted({(c, r['digit']) for r in clips for c in captions.speech_captions(
      r['digit'], r['accent'], r['variant'], r['speed'], r['pitch'])})
  train = []
  combos = [(s, p) for s in voices.SPEEDS for p in voices.PITCHES]
  speakers = [v for v, (split, _, _) in voices.VARIANTS.items()
              if split == 'train']
  for i, variant in enumerate(speakers):
    speed, pitch = combos[i % len(combos)]  # each speaker at one of them
    for digit in range(10):
      # The third phrasing names speaker, speed and pitch, not accent.
      train.append((captions.speech_captions(
          digit, 'en-gb', variant, speed, pitch)[2], digit))
  return {'canonical': [(f'the word {w}', d) for d, w in enumerate(WORDS)],
          'test_captions': test, 'train_voices': train}


def centred(mel: np.ndarray, length: int) -> np.ndarray:
  """An onset-placed log-mel [T, F] moved to the window's centre, where the
  front end puts clips in evaluation."""
  return audio_lib.shift_frames(mel, max(0, mel.shape[0] - int(length)) // 2)


def accuracy(recognizer, digits, *, audio=None, mels=None) -> dict:
  if audio is not None:
    z = recognizer.zero_shot(list(WORDS), PROMPTS, audio=audio)
  else:
    emb = recognizer.embed_arrays({'audio': np.stack(mels)})['audio']
    z = recognizer.classify(emb, 'audio', list(WORDS), PROMPTS)
  right = z.index == np.asarray(digits)
  per_word = {w: float(right[np.asarray(digits) == d].mean())
              for d, w in enumerate(WORDS) if np.any(np.asarray(digits) == d)}
  return {'accuracy': float(right.mean()), 'n': int(len(right)),
          'per_word': per_word}


def plot(path, real, generated, lengths, titles):
  """A grid: real test clips' log-mel (top) over generated (bottom)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(real)
  fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.2), sharey=True)
  for i in range(n):
    for row, (mel, label) in enumerate(((real[i], 'real'),
                                        (generated[i], 'generated'))):
      ax = axes[row, i]
      ax.imshow(mel.T, origin='lower', aspect='auto', cmap='magma',
                vmin=mel.min(), vmax=mel.max())
      ax.set_title(f'{label}: {titles[i]}', fontsize=8)
      ax.set_xticks([0, 48, 95])
      ax.tick_params(labelsize=6)
      if row == 1:
        ax.axvline(lengths[i] - 0.5, color='cyan', lw=0.8)
        ax.set_xlabel('frame (10 ms)', fontsize=7)
    axes[0, 0].set_ylabel('mel bin', fontsize=7)
    axes[1, 0].set_ylabel('mel bin', fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--tts', required=True, help='tts export or workdir')
  p.add_argument('--recognizer', required=True,
                 help='contrastive digits export or workdir')
  p.add_argument('--out', required=True)
  p.add_argument('--iterations', type=int, default=64,
                 help='Griffin-Lim steps')
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  start = time.time()
  tts = multimodal.load_pretrained(args.tts).predictor()
  rec = multimodal.load_pretrained(args.recognizer).predictor()
  cfg = tts.log_mel
  clips = test_clips()
  digits = [r['digit'] for r in clips]
  results = {'tts': args.tts,
             'recognizer': args.recognizer,
             'prompts': list(PROMPTS), 'iterations': args.iterations}
  results['real'] = accuracy(rec, digits, audio=[
      (r['wave'], cfg.sample_rate) for r in clips])
  real_feats = [audio_lib.clip_features(r['wave'], cfg)[0] for r in clips]
  results['real_gl'] = accuracy(rec, digits, audio=[
      (griffin_lim.features_to_wave(f, cfg, iterations=args.iterations),
       cfg.sample_rate) for f in real_feats])
  print(f'real {results["real"]["accuracy"]:.4f}, through Griffin-Lim '
        f'{results["real_gl"]["accuracy"]:.4f} ({len(clips)} clips)')

  generated = {}
  for name, prompts in prompt_sets(clips).items():
    texts, want = zip(*prompts)
    ids, _ = tts.inputs.batch('text', list(texts))
    mel, lengths = tts.synthesize_arrays(ids)
    waves = tts.waveforms(mel, lengths, iterations=args.iterations)
    results[name] = accuracy(rec, want, audio=[(w, cfg.sample_rate)
                                               for w in waves])
    results[name + '_mel'] = accuracy(rec, want, mels=[
        centred(m, n) for m, n in zip(mel, lengths)])
    results[name]['seconds'] = float(np.mean([len(w) for w in waves]) /
                                     cfg.sample_rate)
    generated[name] = (texts, mel, lengths, waves)
    print(f'{name}: {len(texts)} prompts, word accuracy '
          f'{results[name]["accuracy"]:.4f} (waveform), '
          f'{results[name + "_mel"]["accuracy"]:.4f} (log-mel)')

  texts, mel, lengths, waves = generated['canonical']
  for d, wave in enumerate(waves):
    soundfile.write(os.path.join(args.out, f'{WORDS[d]}.wav'), wave,
                    cfg.sample_rate, subtype='PCM_16')
  # One real test clip per word (the first by manifest order) beside the
  # generated canonical word.
  first = {}
  for r, f in zip(clips, real_feats):
    first.setdefault(r['digit'], (f, r))
  for part, ds in (('0-4', range(5)), ('5-9', range(5, 10))):
    plot(os.path.join(args.out, f'spectrograms_{part}.png'),
         [first[d][0] for d in ds], [mel[d] for d in ds],
         [int(lengths[d]) for d in ds], [WORDS[d] for d in ds])
  results['wall_s'] = round(time.time() - start, 1)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2, sort_keys=True)
  print(f'Wrote {args.out}/results.json in {results["wall_s"]} s')


if __name__ == '__main__':
  main()
