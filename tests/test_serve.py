"""The model server (python -m multimodal.serve) as a subprocess on
127.0.0.1: concurrent mixed-modality requests answered as the predictor
answers them, in batches; bad requests answered 4xx while good ones keep
being served; SIGTERM finishes what is in flight and exits 0."""
import asyncio
import base64
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

import multimodal
from multimodal.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120  # seconds, for every wait below


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def _server(export, tmp_path, *flags):
  """A running server (its base URL, Popen); stopped (SIGKILL if it must)
  on exit."""
  port = _free_port()
  log = open(tmp_path / f'server_{port}.log', 'w')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'multimodal.serve', '--pretrained', export,
       '--port', str(port), *flags], cwd=ROOT, stdout=log,
      stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT))
  url = f'http://127.0.0.1:{port}'
  try:
    deadline = time.time() + TIMEOUT
    while True:
      if proc.poll() is not None:
        raise AssertionError('The server exited: ' + (
            tmp_path / f'server_{port}.log').read_text()[-3000:])
      try:
        if httpx.get(url + '/healthz', timeout=5).status_code == 200:
          break
      except httpx.TransportError:
        pass
      assert time.time() < deadline, 'The server did not start in time.'
      time.sleep(0.5)
    yield url, proc
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait(TIMEOUT)
    log.close()


def _b64(data: bytes) -> str:
  return base64.b64encode(data).decode()


async def _send_all(url, requests):
  """[(path, json body or raw bytes)] all at once -> responses (status,
  JSON)."""
  async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
    async def one(path, body):
      if isinstance(body, bytes):
        r = await client.post(path, content=body,
                              headers={'content-type': 'application/json'})
      else:
        r = await client.post(path, json=body)
      return r.status_code, r.json()
    return await asyncio.gather(*(one(p, b) for p, b in requests))


def _records(export, data_dir, n):
  config = multimodal.load_pretrained(export).config
  config.dataset.data_dir = data_dir
  source = pipeline.open_source(config.dataset, 'test')
  return [source[i] for i in range(n)]


def test_concurrent_mixed_requests_batched_bad_ones_rejected(
    tiny_exports, digits_data_dir, tmp_path):
  export = tiny_exports['contrastive']
  records = _records(export, digits_data_dir, 8)
  images = [r['image'] for r in records]
  speech = [r['speech'] for r in records]
  texts = [r['image_captions'][0].decode() for r in records]
  labels = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven',
            'eight', 'nine']
  good = []
  for i in range(8):
    good += [('/embed', {'images': [_b64(images[i])]}),
             ('/embed', {'audio': [_b64(speech[i])]}),
             ('/embed', {'texts': [texts[i]]}),
             ('/embed', {'images': [_b64(images[i])], 'texts': [texts[i]]})]
  good += [('/zero_shot', {'labels': labels, 'prompts': ['a handwritten {}'],
                           'images': [_b64(x) for x in images[:3]]}),
           ('/zero_shot', {'labels': labels, 'audio': [_b64(speech[4])]})]
  bad = [('/embed', {'images': ['not base64!']}, 400, 'bad_value'),
         ('/embed', {'images': [_b64(b'GIF89a broken')]}, 400, 'bad_image'),
         ('/embed', {'texts': ['six ' * 40]}, 400, 'text_too_long'),
         ('/embed', {'image': [_b64(images[0])]}, 422, 'bad_request'),
         ('/embed', b'{"texts": [', 422, 'bad_request'),
         ('/embed', {'texts': ['a'] * 65}, 413, 'too_many_items'),
         ('/embed', {'texts': ['x' * (600 << 10)]}, 413, 'too_large'),
         ('/caption', {'images': [_b64(images[0])]}, 400, 'unsupported'),
         ('/zero_shot', {'labels': ['a'], 'prompts': ['{0} {1}'],
                         'images': [_b64(images[0])]}, 400, 'bad_value')]
  # Bad requests interleaved with good ones, all in flight together.
  order = good[:10] + bad + good[10:]
  with _server(export, tmp_path, '--max_batch', '16', '--max_wait_ms',
               '200', '--max_items', '64', '--max_body_mb', '0.5') as (url,
                                                                       _):
    answers = asyncio.run(_send_all(url, [r[:2] for r in order]))
    # A chunked body (no Content-Length) is cut off once past the limit.
    chunked = httpx.post(url + '/embed', content=iter(
        [b'{"texts": ["'] + [b'x' * (100 << 10)] * 6 + [b'"]}']),
                         headers={'content-type': 'application/json'},
                         timeout=TIMEOUT)
    after = httpx.post(url + '/embed', json={'texts': [texts[0]]},
                       timeout=TIMEOUT)
    health = httpx.get(url + '/healthz', timeout=TIMEOUT).json()

  m = multimodal.load_pretrained(export).predictor()
  for request, (status, got) in zip(order, answers):
    path, body = request[:2]
    if len(request) == 4:  # a bad one
      assert (status, got['reason']) == request[2:], got
      assert got['error']
      continue
    assert status == 200, got
    raw = {k: [base64.b64decode(v) for v in body[k]] if k != 'texts'
           else body[k] for k in ('images', 'audio', 'texts') if k in body}
    if path == '/embed':
      want = m.embed(**raw)
      assert set(got['embeddings']) == set(want)
      for k, v in want.items():
        np.testing.assert_allclose(got['embeddings'][k], v, atol=1e-5)
    else:
      want = m.zero_shot(body['labels'], prompts=body.get('prompts', ['{}']),
                         **raw)
      assert got['labels'] == want.labels
      np.testing.assert_allclose(got['probs'], want.probs, atol=1e-5)
  assert chunked.status_code == 413, chunked.text
  assert after.status_code == 200  # still serving

  batches = health['batcher']
  assert max(int(k) for k in batches['batch_requests']) > 1, batches
  assert batches['requests'] == len(good) + 1 and batches['failed'] == 0
  want_errors = collections.Counter(str(r[2]) for r in bad)
  want_errors['413'] += 1  # the chunked one
  assert health['errors'] == dict(want_errors), health
  assert health['requests']['/embed'] == 32 + 7 + 2
  assert health['model']['endpoints'] == ['embed', 'zero_shot']
  assert health['compilations']['embed/image'] <= 3  # buckets 1, 4, 16


def test_answers_with_missing_modalities_match_the_predictor(
    tiny_exports, digits_data_dir, tmp_path):
  export = tiny_exports['vqa']
  records = _records(export, digits_data_dir, 6)
  requests = []
  for i, r in enumerate(records):
    audio = None if i % 3 == 0 else _b64(r['qa_speech'])
    requests.append(('/answer', {
        'questions': [r['questions'][i % 5].decode()],
        'images': [_b64(r['image'])], 'audio': [audio],
        'decoding': {'max_new_tokens': 3}}))
  requests.append(('/answer', {'questions': ['what number is spoken?'],
                               'audio': [_b64(records[0]['qa_speech'])],
                               'decoding': {'method': 'beam',
                                            'beam_size': 2,
                                            'max_new_tokens': 3}}))
  with _server(export, tmp_path, '--max_wait_ms', '200') as (url, _):
    answers = asyncio.run(_send_all(url, requests + [
        ('/embed', {'texts': ['a']}),
        ('/answer', {'questions': ['a?'], 'images': [_b64(b'x')]})]))
  m = multimodal.load_pretrained(export).predictor()
  for (_, body), (status, got) in zip(requests, answers):
    assert status == 200, got
    media = {k: [None if v is None else base64.b64decode(v)
                 for v in body[k]] for k in ('images', 'audio') if k in body}
    want = m.answer(body['questions'], **media, **body['decoding'])
    assert got['texts'] == want
  assert [a[0] for a in answers[-2:]] == [400, 400]
  assert answers[-2][1]['reason'] == 'unsupported'
  assert answers[-1][1]['reason'] == 'bad_image'


def test_sigterm_finishes_requests_in_flight_and_exits_0(tiny_exports,
                                                         tmp_path):
  # A long max_wait keeps the one request queued while SIGTERM arrives.
  with _server(tiny_exports['contrastive'], tmp_path, '--max_wait_ms',
               '3000') as (url, proc):

    async def scenario():
      async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        pending = asyncio.create_task(client.post('/embed', json={
            'texts': ['a handwritten seven']}))
        deadline = time.time() + TIMEOUT
        while True:
          health = (await client.get('/healthz')).json()
          if health['batcher']['queued'] == 1:
            break
          assert time.time() < deadline
          await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        return await pending

    response = asyncio.run(scenario())
    assert response.status_code == 200
    assert len(response.json()['embeddings']['text'][0]) == 32
    assert proc.wait(TIMEOUT) == 0
  with pytest.raises(httpx.TransportError):
    httpx.get(url + '/healthz', timeout=5)
