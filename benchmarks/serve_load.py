r"""Load test of the model server: throughput and latency against offered
load, with dynamic batching on and off.

  python benchmarks/serve_load.py --pretrained exports/contrastive_digits \
      [--pretrained exports/captioning_digits ...] [--data_dir data] \
      [--rates 10,40,160] [--duration 8] [--json out.json]
  python benchmarks/serve_load.py --smoke --pretrained EXPORT   # CI

For each export and each mode (batching on: --max_batch / --max_wait_ms;
off: --no_batching) the script starts `python -m multimodal.serve` on
127.0.0.1 (a free port, --warmup, so no request waits for a compilation),
warms every endpoint up, then for each endpoint the export serves and each
offered rate runs an open-loop client (asyncio + httpx): requests leave at
Poisson arrival times whatever the server's pace, each holding --items
inputs (1 by default), cycling through real test records (--data_dir,
digits_trimodal) or synthetic ones.
Latency runs from each request's scheduled departure to its answer (so a
late client loop counts against the server, not in its favour); achieved
throughput is answered requests over the time from the first departure to
the last answer; the mean batch comes from the server's /healthz counters
(requests per model call) before and after the level. Then SIGTERM stops
the server (its exit status is checked).

Bounded: --duration seconds per level, at most --max_requests per level,
--max_inflight outstanding (more are counted as dropped, not sent), a
--timeout per request and --max_seconds for the whole run (levels left
are reported as skipped). Endpoints per export: embed_image, embed_audio,
embed_text, zero_shot (contrastive); caption (captioning); answer (VQA).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven',
          'eight', 'nine')
QUESTIONS = ('what number is written?', 'what number is spoken?',
             'do the written and the spoken number match?',
             'which is larger, the written or the spoken number?',
             'what is the written number plus the spoken number?')


def _b64(data: bytes) -> str:
  return base64.b64encode(data).decode()


def _export_kind(path: str) -> str:
  with open(os.path.join(path, 'config.json')) as f:
    return json.load(f).get('task', '?')


ENDPOINTS = {'contrastive': ('embed_image', 'embed_audio', 'embed_text',
                             'zero_shot'),
             'captioning': ('caption',), 'vqa': ('answer',)}


def _synthetic_inputs(n: int, seed: int = 0) -> list[dict]:
  """PNG scans (8x8 grey, as digits_trimodal's) and 0.5 s WAV clips."""
  import soundfile  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
        png, format='PNG')
    t = np.arange(8000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t) * np.hanning(8000)
    wav = io.BytesIO()
    soundfile.write(wav, wave.astype(np.float32), 16000, format='WAV')
    out.append({'image': png.getvalue(), 'audio': wav.getvalue(),
                'text': f'a handwritten {DIGITS[i % 10]}',
                'question': QUESTIONS[i % 5]})
  return out


def _record_inputs(export: str, data_dir: str, n: int) -> list[dict]:
  """The first n test records of the export's dataset (digits_trimodal)."""
  sys.path.insert(0, ROOT)
  # pylint: disable=g-import-not-at-top
  import ml_collections as mlc
  from multimodal import registry
  from multimodal.data import pipeline
  with open(os.path.join(export, 'config.json')) as f:
    config = mlc.ConfigDict(json.load(f))
  config.dataset.data_dir = data_dir
  registry.import_modules(config.get('imports', ()))
  source = pipeline.open_source(config.dataset, 'test')
  out = []
  for i in range(min(n, len(source))):
    r = source[i]
    out.append({'image': r['image'], 'audio': r.get('qa_speech',
                                                    r['speech']),
                'text': r['image_captions'][0].decode(),
                'question': r['questions'][i % 5].decode()})
  return out


def request_body(endpoint: str, items: list[dict]) -> tuple[str, dict]:
  """(path, JSON body) of one request holding `items` (one input each)."""
  images = [_b64(it['image']) for it in items]
  audio = [_b64(it['audio']) for it in items]
  if endpoint == 'embed_image':
    return '/embed', {'images': images}
  if endpoint == 'embed_audio':
    return '/embed', {'audio': audio}
  if endpoint == 'embed_text':
    return '/embed', {'texts': [it['text'] for it in items]}
  if endpoint == 'zero_shot':
    return '/zero_shot', {'labels': list(DIGITS),
                          'prompts': ['a handwritten {}'], 'images': images}
  if endpoint == 'caption':
    return '/caption', {'images': images}
  if endpoint == 'answer':
    return '/answer', {'questions': [it['question'] for it in items],
                       'images': images, 'audio': audio}
  raise ValueError(f'Unknown endpoint {endpoint!r}.')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Server:
  """`python -m multimodal.serve` as a child process on 127.0.0.1."""

  def __init__(self, export: str, flags: list[str], log_path: str,
               start_timeout: float, warmup: bool = True):
    self.port = _free_port()
    self.url = f'http://127.0.0.1:{self.port}'
    self.log = open(log_path, 'w')
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'multimodal.serve', '--pretrained', export,
         '--port', str(self.port), *(['--warmup'] if warmup else []),
         *flags], cwd=ROOT,
        stdout=self.log, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.time() + start_timeout
    while True:
      if self.proc.poll() is not None:
        raise RuntimeError(f'The server exited ({self.proc.returncode}); '
                           f'see {log_path}.')
      try:
        if httpx.get(self.url + '/healthz', timeout=5).status_code == 200:
          return
      except httpx.TransportError:
        pass
      if time.time() > deadline:
        self.proc.kill()
        raise RuntimeError(f'The server did not start in {start_timeout} '
                           f's; see {log_path}.')
      time.sleep(0.5)

  def health(self) -> dict:
    return httpx.get(self.url + '/healthz', timeout=30).json()

  def stop(self, timeout: float = 60) -> int:
    """SIGTERM, then the exit status (SIGKILL after `timeout`)."""
    self.proc.send_signal(signal.SIGTERM)
    try:
      return self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      return self.proc.wait()
    finally:
      self.log.close()


async def open_loop(url: str, bodies: list[tuple[str, dict]], rate: float,
                    duration: float, *, max_requests: int, max_inflight: int,
                    timeout: float, seed: int = 0) -> dict:
  """Sends requests at Poisson arrival times for `duration` seconds."""
  rng = np.random.default_rng(seed)
  n = min(max_requests, max(1, int(round(rate * duration))))
  departures = np.cumsum(rng.exponential(1.0 / rate, n))
  latencies, errors, dropped, finished = [], {}, 0, []
  limits = httpx.Limits(max_connections=max_inflight,
                        max_keepalive_connections=max_inflight)
  async with httpx.AsyncClient(base_url=url, timeout=timeout,
                               limits=limits) as client:
    inflight = 0

    async def one(i: int, scheduled: float):
      nonlocal inflight
      path, body = bodies[i % len(bodies)]
      try:
        r = await client.post(path, json=body)
        key = 'ok' if r.status_code == 200 else str(r.status_code)
      except httpx.HTTPError as e:
        key = type(e).__name__
      done = time.perf_counter()
      inflight -= 1
      if key == 'ok':
        latencies.append(done - scheduled)
        finished.append(done)
      else:
        errors[key] = errors.get(key, 0) + 1

    start = time.perf_counter()
    tasks = []
    for i, offset in enumerate(departures):
      scheduled = start + offset
      wait = scheduled - time.perf_counter()
      if wait > 0:
        await asyncio.sleep(wait)
      if inflight >= max_inflight:
        dropped += 1
        continue
      inflight += 1
      tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
  lat = np.array(latencies) * 1e3
  # Over the sending window at least: a short level whose Poisson
  # departures bunch early must not read as more than was offered.
  span = max(duration, max(finished) - start) if finished else float('nan')
  return {'offered_rps': rate, 'sent': len(tasks), 'ok': len(latencies),
          'errors': errors, 'dropped': dropped,
          'achieved_rps': len(latencies) / span if finished else 0.0,
          'p50_ms': float(np.percentile(lat, 50)) if len(lat) else None,
          'p95_ms': float(np.percentile(lat, 95)) if len(lat) else None,
          'p99_ms': float(np.percentile(lat, 99)) if len(lat) else None}


def _batch_counters(health: dict) -> tuple[int, int, int]:
  b = health['batcher']
  return b['batches'], b['requests'], b['rows']


def run(args) -> dict:
  rows, skipped, stops = [], [], []
  t0 = time.time()
  modes = [m for m in args.modes.split(',') if m]
  os.makedirs(args.logdir, exist_ok=True)
  for export in args.pretrained:
    kind = _export_kind(export)
    endpoints = [e for e in ENDPOINTS.get(kind, ())
                 if not args.endpoints or e in args.endpoints]
    if args.data_dir:
      items = _record_inputs(export, args.data_dir, args.pool)
    else:
      items = _synthetic_inputs(args.pool)
    for mode in modes:
      left = args.max_seconds - (time.time() - t0)
      if left < 30:
        skipped.append(f'{export} batching {mode}: no time left')
        continue
      flags = (['--no_batching'] if mode == 'off' else
               ['--max_batch', str(args.max_batch),
                '--max_wait_ms', str(args.max_wait_ms)])
      log = os.path.join(args.logdir,
                         f'server_{os.path.basename(export)}_{mode}.log')
      print(f'# starting the server: {export}, batching {mode}', flush=True)
      server = Server(export, flags, log, start_timeout=min(left, 600),
                      warmup=not args.no_warmup)
      try:
        for endpoint in endpoints:
          bodies = [request_body(endpoint, [
              items[(i + j) % len(items)] for j in range(args.items)])
                    for i in range(len(items))]
          # Warm-up: first requests build caches (e.g. zero-shot prompts).
          asyncio.run(open_loop(server.url, bodies, rate=20, duration=0.2,
                                max_requests=4, max_inflight=4,
                                timeout=args.timeout))
          for rate in args.rates:
            if time.time() - t0 + args.duration + args.timeout > \
                args.max_seconds:
              skipped.append(f'{export} {endpoint} batching {mode} {rate} '
                             'rps: over --max_seconds')
              continue
            before = _batch_counters(server.health())
            result = asyncio.run(open_loop(
                server.url, bodies, rate, args.duration,
                max_requests=args.max_requests,
                max_inflight=args.max_inflight, timeout=args.timeout))
            after = _batch_counters(server.health())
            batches = max(1, after[0] - before[0])
            result.update(
                items=args.items,
                export=os.path.basename(os.path.normpath(export)),
                endpoint=endpoint, batching=mode,
                mean_batch_requests=(after[1] - before[1]) / batches,
                mean_batch_rows=(after[2] - before[2]) / batches)
            rows.append(result)
            print(format_row(result), flush=True)
      finally:
        stops.append({'export': export, 'batching': mode,
                      'exit_status': server.stop()})
  return {'rows': rows, 'skipped': skipped, 'server_exits': stops,
          'settings': {k: v for k, v in vars(args).items()
                       if k not in ('json',)},
          'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                      'load_average_at_end': os.getloadavg()},
          'seconds': time.time() - t0}


HEADER = ('| export | endpoint | batching | offered req/s | achieved req/s | '
          'p50 ms | p95 ms | p99 ms | mean batch | errors |\n'
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')


def _ms(x) -> str:
  return '-' if x is None else f'{x:.1f}'


def format_row(r: dict) -> str:
  errors = sum(r['errors'].values()) + r['dropped']
  return (f'| {r["export"]} | {r["endpoint"]} | {r["batching"]} | '
          f'{r["offered_rps"]:g} | {r["achieved_rps"]:.1f} | '
          f'{_ms(r["p50_ms"])} | {_ms(r["p95_ms"])} | {_ms(r["p99_ms"])} | '
          f'{r["mean_batch_requests"]:.2f} | {errors} |')


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--pretrained', action='append', required=True,
                 help='An export to serve (repeat for several).')
  p.add_argument('--data_dir', default=None,
                 help='digits_trimodal tfds dir: real test records as inputs '
                 '(default: synthetic scans and tones).')
  p.add_argument('--rates', default='10,40,160',
                 help='Offered loads, requests/s (comma-separated).')
  p.add_argument('--duration', type=float, default=8.0,
                 help='Seconds of sending per level.')
  p.add_argument('--modes', default='on,off', help='Batching modes.')
  p.add_argument('--endpoints', default='',
                 help='Only these endpoints (comma-separated).')
  p.add_argument('--items', type=int, default=1,
                 help='Inputs per request (the server batches inputs).')
  p.add_argument('--max_batch', type=int, default=32)
  p.add_argument('--max_wait_ms', type=float, default=5.0)
  p.add_argument('--max_requests', type=int, default=2000)
  p.add_argument('--max_inflight', type=int, default=256)
  p.add_argument('--timeout', type=float, default=30.0,
                 help='Seconds per request.')
  p.add_argument('--max_seconds', type=float, default=1800.0)
  p.add_argument('--pool', type=int, default=64, help='Distinct inputs.')
  p.add_argument('--logdir', default='/tmp/serve_load')
  p.add_argument('--json', default=None, help='Write the results here.')
  p.add_argument('--no_warmup', action='store_true',
                 help='Start the servers without --warmup (the first '
                 'requests then include compilations).')
  p.add_argument('--smoke', action='store_true',
                 help='CI: 2 levels of 1 s, one endpoint per export, '
                 '--max_batch 4, no warm-up compilation.')
  args = p.parse_args(argv)
  args.rates = [float(r) for r in args.rates.split(',') if r]
  args.endpoints = [e for e in args.endpoints.split(',') if e]
  if args.smoke:
    args.rates, args.duration, args.pool = [4.0, 16.0], 1.0, 8
    args.max_batch, args.no_warmup = 4, True
    args.max_seconds = min(args.max_seconds, 400.0)
    args.endpoints = args.endpoints or ['embed_image', 'caption', 'answer']
  result = run(args)
  print(HEADER)
  for r in result['rows']:
    print(format_row(r))
  for s in result['skipped']:
    print(f'skipped: {s}')
  for s in result['server_exits']:
    print(f'server {s["export"]} (batching {s["batching"]}) exited with '
          f'status {s["exit_status"]}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == '__main__':
  main()
