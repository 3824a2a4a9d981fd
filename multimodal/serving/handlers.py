"""What each endpoint does around the predictor, in two halves.

`prepare_*` (request threads, in parallel): decode base64 media, check and
preprocess every input with the predictor's own preprocessing, and return
(batch key, payload, rows). Bad input fails here, with an InputError, before
anything is queued, so it never reaches a batch.

`run_batch(predictor, key, payloads)` (the batcher's one worker thread):
concatenates the payloads of one key, makes one predictor call and splits
its result back into one JSON-able response per payload.

Keys: ('embed', modalities), ('zero_shot', modality), ('generate',
modalities, Decoding, prompt width), ('speak', iterations).

/speak answers WAV files (16-bit PCM, mono, the model's sample rate) as
base64 strings.
"""
from __future__ import annotations

import base64
import binascii
import io
from typing import Any, Sequence

import numpy as np
import soundfile

from multimodal.inputs import InputError
from multimodal.serving import schemas


def _b64(value: str, what: str) -> bytes:
  try:
    return base64.b64decode(value, validate=True)
  except (binascii.Error, ValueError) as e:
    raise InputError('bad_value', f'{what} is not valid base64 ({e}).') from e


def _media(values, argument: str):
  """JSON media values -> raw values the predictor reads (None kept)."""
  if values is None:
    return None
  out = []
  for i, v in enumerate(values):
    what = f'{argument}[{i}]'
    if v is None:
      out.append(None)
    elif isinstance(v, schemas.Samples):
      out.append((np.asarray(v.samples, np.float32), v.sample_rate))
    else:
      out.append(_b64(v, what))
  return out


def _count(*lists) -> int:
  return sum(len(x) for x in lists if x is not None)


def check_items(req, max_items: int) -> None:
  """InputError 'too_many_items' past the per-request limit."""
  n = _count(*(getattr(req, k, None) for k in
               ('images', 'audio', 'texts', 'questions')))
  if n > max_items:
    raise InputError('too_many_items', f'The request holds {n} inputs; the '
                     f'server takes at most {max_items} per request (split '
                     'it, or start it with a larger --max_items).')


def prepare_embed(predictor, req: schemas.EmbedRequest):
  arrays = predictor.preprocess(
      images=_media(req.images, 'images'),
      audio=_media(req.audio, 'audio'), texts=req.texts)
  if not arrays:
    raise InputError('bad_value', 'Give images, audio and/or texts.')
  predictor.check_arrays(arrays)
  rows = sum(len(x) for x in arrays.values())
  return ('embed', tuple(sorted(arrays))), arrays, rows


def prepare_zero_shot(predictor, req: schemas.ZeroShotRequest):
  given = {m: v for m, v in (('image', req.images), ('audio', req.audio))
           if v is not None}
  if len(given) != 1:
    raise InputError('bad_value', 'zero_shot classifies one modality per '
                     f'request: give images or audio, got {sorted(given)}.')
  (modality, values), = given.items()
  argument = 'images' if modality == 'image' else 'audio'
  arrays = predictor.preprocess(**{argument: _media(values, argument)})
  # Bad templates or labels fail here, not in the batch.
  predictor.check_prompts(modality, req.labels, req.prompts)
  payload = (arrays[modality], tuple(req.labels), tuple(req.prompts))
  return ('zero_shot', modality), payload, len(values)


def _prepare_generation(predictor, req, questions):
  options = (req.decoding.model_dump(exclude_none=True) if req.decoding
             else {})
  decoding = predictor.decoding(**options)
  media, present = predictor.media_arrays(
      _media(req.images, 'images'),
      _media(req.audio, 'audio'))
  n = len(next(iter(media.values())))
  if questions is None:
    prompt = predictor.caption_prompts(n)
  else:
    prompt = predictor.question_prompts(questions)
    if len(prompt) != n:
      raise InputError('bad_value', f'{len(prompt)} questions for {n} '
                       'examples of media: give one question per example.')
  predictor.check_generation(prompt, decoding)
  key = ('generate', tuple(sorted(media)), decoding, prompt.shape[1])
  return key, (media, present, prompt), n


def prepare_caption(predictor, req: schemas.CaptionRequest):
  predictor.require('caption')
  return _prepare_generation(predictor, req, None)


def prepare_answer(predictor, req: schemas.AnswerRequest):
  predictor.require('answer')
  return _prepare_generation(predictor, req, req.questions)


def prepare_speak(predictor, req: schemas.SpeakRequest):
  predictor.require('speak')
  ids, _ = predictor.inputs.batch('text', req.texts)
  return ('speak', req.iterations), ids, len(ids)


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
  """A WAV file (16-bit PCM, mono) of float samples [N] in [-1, 1]."""
  buf = io.BytesIO()
  soundfile.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, format='WAV',
                  subtype='PCM_16')
  return buf.getvalue()


def _concat(parts: Sequence[dict]) -> dict:
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _split(x, sizes: Sequence[int]) -> list:
  return np.split(x, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [x]


def run_batch(predictor, key, payloads: Sequence[Any]) -> list[dict]:
  """One predictor call for the payloads of one key (module docstring)."""
  kind = key[0]
  if kind == 'embed':
    out = predictor.embed_arrays(_concat(payloads))
    sizes = {m: [len(p[m]) for p in payloads] for m in out}
    parts = {m: _split(out[m], sizes[m]) for m in out}
    return [{'embeddings': {m: parts[m][i].tolist() for m in out}}
            for i in range(len(payloads))]
  if kind == 'zero_shot':
    modality = key[1]
    emb = predictor.embed_arrays(
        {modality: np.concatenate([p[0] for p in payloads])})[modality]
    results = []
    for part, (_, labels, prompts) in zip(
        _split(emb, [len(p[0]) for p in payloads]), payloads):
      z = predictor.classify(part, modality, labels, prompts)
      results.append({'labels': z.labels, 'index': z.index.tolist(),
                      'scores': z.scores.tolist(),
                      'probs': z.probs.tolist()})
    return results
  if kind == 'generate':
    decoding = key[2]
    media = _concat([p[0] for p in payloads])
    present = _concat([p[1] for p in payloads])
    prompt = np.concatenate([p[2] for p in payloads])
    gen = predictor.generate_arrays(media, present, prompt, decoding)
    sizes = [len(p[2]) for p in payloads]
    starts = np.cumsum([0] + sizes)
    return [{'texts': gen.texts[a:b], 'scores': gen.scores[a:b].tolist()}
            for a, b in zip(starts[:-1], starts[1:])]
  if kind == 'speak':
    mel, lengths = predictor.synthesize_arrays(np.concatenate(payloads))
    waves = predictor.waveforms(mel, lengths, iterations=key[1])
    rate = predictor.sample_rate
    wavs = [base64.b64encode(wav_bytes(w, rate)).decode('ascii')
            for w in waves]
    starts = np.cumsum([0] + [len(p) for p in payloads])
    return [{'audio': wavs[a:b], 'sample_rate': rate,
             'seconds': [round(len(w) / rate, 4) for w in waves[a:b]]}
            for a, b in zip(starts[:-1], starts[1:])]
  raise ValueError(f'Unknown batch key {key!r}.')
