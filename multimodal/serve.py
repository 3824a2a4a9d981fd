r"""Serve a trained model over HTTP, with dynamic batching.

  python -m multimodal.serve --pretrained exports/contrastive_digits \
      --port 8000 [--host 127.0.0.1] [--max_batch 32] [--max_wait_ms 5] \
      [--no_batching] [--buckets 1,4,16,32] [--warmup]

--pretrained is an export, a training workdir or a checkpoint step (what
multimodal.load_pretrained reads). A contrastive export serves /embed and
/zero_shot, a captioning export /caption, a VQA export /answer, a tts
export /speak; every
server has /healthz. Endpoints, bodies and errors: multimodal/serving/app.py.

Concurrent requests are grouped by (endpoint, modalities, decoding options)
into batches of up to --max_batch inputs, or what arrived within
--max_wait_ms of the oldest, and each batch is one call of the model on a
single worker thread (multimodal/serving/batcher.py); --no_batching runs
every request alone. Jitted functions are padded to --buckets batch sizes
(default: 1, 4, 16, ... up to --max_batch), so they compile once per bucket;
--warmup compiles the default-option functions for every bucket before the
port opens.

SIGTERM or Ctrl-C: the server stops accepting connections, finishes the
requests in flight (and the batches they wait on), and exits with status 0.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

# Before NumPy loads OpenBLAS: request threads preprocess in parallel (e.g.
# the log-mel's small matmul), and OpenBLAS's own thread pool on top of them
# only contends for the cores; measured on the VQA endpoint (2 busy cores):
# 32.5 -> 9.6 ms of server CPU per request. Set the variable to override.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def default_buckets(max_batch: int) -> tuple[int, ...]:
  """1, 4, 16, ... below max_batch, then max_batch itself."""
  out, b = [], 1
  while b < max_batch:
    out.append(b)
    b *= 4
  return tuple(out) + (max_batch,)


def warmup(predictor, max_batch: int) -> None:
  """Compiles the default-option functions of each endpoint at every bucket
  up to max_batch, so no request waits for a compilation: embeddings of
  every modality; captions of each medium alone (as captioning models are
  trained); answers with all media together. Other combinations and
  decoding options compile on first use."""
  sizes = [b for b in predictor.buckets if b <= max_batch]
  shapes = {m: predictor.inputs.example_shape(m) for m in predictor.fields}
  for n in sizes:
    arrays = {m: np.zeros((n,) + tuple(s), d) for m, (s, d) in shapes.items()}
    if 'embed' in predictor.endpoints():
      predictor.embed_arrays(arrays)
      continue
    if 'speak' in predictor.endpoints():
      predictor.synthesize_arrays(predictor.inputs.batch(
          'text', ['warm up'] * n)[0])
      continue
    decoding = predictor.decoding()
    media = {m: x for m, x in arrays.items() if m != 'text'}
    if 'caption' in predictor.endpoints():
      for m, x in media.items():
        predictor.generate_arrays({m: x}, None, predictor.caption_prompts(n),
                                  decoding)
    if 'answer' in predictor.endpoints():
      predictor.generate_arrays(
          media, None, predictor.question_prompts(['warm up'] * n), decoding)


def parse_args(argv):
  p = argparse.ArgumentParser(
      prog='python -m multimodal.serve',
      description='Serve a trained model over HTTP (see the module doc).')
  p.add_argument('--pretrained', required=True,
                 help='Export directory, training workdir or checkpoint step.')
  p.add_argument('--host', default='127.0.0.1')
  p.add_argument('--port', type=int, default=8000)
  p.add_argument('--max_batch', type=int, default=32,
                 help='Most inputs run as one batch.')
  p.add_argument('--max_wait_ms', type=float, default=5.0,
                 help='Longest wait of the oldest request for a fuller batch.')
  p.add_argument('--no_batching', action='store_true',
                 help='Run every request alone.')
  p.add_argument('--buckets', default=None,
                 help='Comma-separated padded batch sizes (default: 1, 4, '
                 '16, ... up to --max_batch).')
  p.add_argument('--warmup', action='store_true',
                 help='Compile for every bucket before opening the port.')
  p.add_argument('--max_body_mb', type=float, default=16.0,
                 help='Larger request bodies are answered 413.')
  p.add_argument('--max_items', type=int, default=256,
                 help='More inputs in one request are answered 413.')
  p.add_argument('--log_level', default='warning')
  args = p.parse_args(argv)
  if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_items < 1:
    p.error('--max_batch and --max_items must be >= 1, --max_wait_ms >= 0.')
  try:
    args.buckets = (tuple(int(b) for b in args.buckets.split(','))
                    if args.buckets else default_buckets(args.max_batch))
  except ValueError:
    p.error(f'--buckets must be comma-separated ints, got {args.buckets!r}.')
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  # Imported after parsing: --help stays fast.
  import uvicorn  # pylint: disable=g-import-not-at-top
  import multimodal  # pylint: disable=g-import-not-at-top
  from multimodal.serving import app as app_lib  # pylint: disable=g-import-not-at-top

  logging.basicConfig(level=args.log_level.upper(),
                      format='%(asctime)s %(levelname)s %(message)s')
  try:
    predictor = multimodal.load_pretrained(args.pretrained).predictor(
        buckets=args.buckets)
  except (FileNotFoundError, ValueError) as e:  # no export there, bad buckets
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.warmup:
    warmup(predictor, args.max_batch)
  app = app_lib.create_app(
      predictor, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
      batching=not args.no_batching,
      max_body_bytes=int(args.max_body_mb * (1 << 20)),
      max_items=args.max_items)
  server = uvicorn.Server(uvicorn.Config(
      app, host=args.host, port=args.port, log_level=args.log_level,
      timeout_graceful_shutdown=60))
  # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal
  # again under the handler it found; with these no-op handlers that ends
  # in a normal return (exit 0) instead of a kill by the signal.
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: None)
  print(f'Serving {args.pretrained} ({", ".join(predictor.endpoints())}) on '
        f'http://{args.host}:{args.port}', flush=True)
  server.run()
  print('Server stopped.', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
