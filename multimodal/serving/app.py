"""The model server's HTTP app (FastAPI): endpoints, limits, error answers.

  POST /embed      {"images": [b64], "audio": [b64 | {"samples", "sample_rate"}],
                    "texts": [str]}  -> {"embeddings": {modality: [[float]]}}
  POST /zero_shot  {"labels": [...], "prompts": [...], "images" | "audio"}
                   -> {"labels", "index", "scores", "probs"}
  POST /caption    {"images" | "audio" (null entries: missing), "decoding"}
                   -> {"texts", "scores"}
  POST /answer     {"questions", "images", "audio", "decoding"} -> same
  POST /speak      {"texts": [str], "iterations": int (Griffin-Lim steps)}
                   -> {"audio": [base64 WAV], "sample_rate", "seconds"}
  GET  /healthz    model info, request / error / batch counters

Inputs are preprocessed in request threads (multimodal/serving/handlers.py)
and then queued to the Batcher, whose one worker thread runs the model.
Every problem is a JSON answer {"error": message, "reason": short name}:
400 for inputs the model cannot use (InputError: bad image bytes, unknown
modality, too-long text, an endpoint this export does not serve...), 413 for
a body over `max_body_bytes` or more than `max_items` inputs, 422 for a
body that is not JSON of the endpoint's shape, 503 while shutting down, 500
for a failure of the server itself; none of them stops the server.
"""
from __future__ import annotations

import asyncio
from collections import Counter
import contextlib
import threading
import time

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from multimodal.inputs import InputError
from multimodal.serving import handlers
from multimodal.serving import schemas
from multimodal.serving.batcher import Batcher
from multimodal.serving.batcher import Closed


class _TooLarge(HTTPException):
  """Raised while reading a body past the limit. An HTTPException, so that
  FastAPI's body parsing passes it on as the 413 it is."""


def _error(status: int, message: str, reason: str) -> JSONResponse:
  return JSONResponse({'error': message, 'reason': reason},
                      status_code=status)


class _Limits:
  """Pure ASGI middleware: a body over `max_bytes` is answered 413 (by its
  Content-Length before reading, or while reading a chunked one), and
  responses are counted per path and status."""

  def __init__(self, app, max_bytes: int, counters: 'Counters'):
    self.app, self.max_bytes, self.counters = app, max_bytes, counters

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    path = scope.get('path', '')
    headers = dict(scope.get('headers') or ())
    length = headers.get(b'content-length')
    if length is not None and length.isdigit() and int(
        length) > self.max_bytes:
      response = _error(413, f'The body is {int(length)} bytes; the server '
                        f'takes at most {self.max_bytes} (--max_body_mb).',
                        'too_large')
      self.counters.response(path, 413)
      return await response(scope, receive, send)
    received = 0

    async def limited():
      nonlocal received
      message = await receive()
      if message['type'] == 'http.request':
        received += len(message.get('body', b''))
        if received > self.max_bytes:
          raise _TooLarge(413, f'The body exceeds {self.max_bytes} bytes '
                          '(--max_body_mb).')
      return message

    async def counted(message):
      if message['type'] == 'http.response.start':
        self.counters.response(path, message['status'])
      await send(message)

    await self.app(scope, limited, counted)


class Counters:
  """Requests per endpoint and error answers per status (thread safe)."""

  def __init__(self):
    self.lock = threading.Lock()
    self.requests, self.errors = Counter(), Counter()

  def response(self, path: str, status: int):
    with self.lock:
      self.requests[path] += 1
      if status >= 400:
        self.errors[str(status)] += 1

  def as_dict(self) -> dict:
    with self.lock:
      return {'requests': dict(self.requests), 'errors': dict(self.errors)}


def _validation_message(exc: RequestValidationError) -> str:
  parts = []
  for err in exc.errors()[:5]:
    where = '.'.join(str(x) for x in err.get('loc', ()) if x != 'body')
    msg = err.get('msg', '')
    if err.get('type') == 'json_invalid':
      where, msg = 'body', ('not valid JSON ('
                            f'{(err.get("ctx") or {}).get("error", msg)})')
    elif err.get('type') == 'extra_forbidden':
      msg = ('unknown key (inputs are images, audio, texts; see the '
             'endpoint\'s schema)')
    parts.append(f'{where or "body"}: {msg}')
  return 'Bad request body: ' + '; '.join(parts)


def create_app(predictor, *, max_batch: int = 32, max_wait_ms: float = 5.0,
               batching: bool = True, max_body_bytes: int = 16 << 20,
               max_items: int = 256) -> FastAPI:
  """The FastAPI app serving `predictor` (see the module docstring)."""
  batcher = Batcher(lambda key, payloads: handlers.run_batch(
      predictor, key, payloads), max_batch=max_batch,
                    max_wait_s=max_wait_ms / 1e3, batching=batching)
  counters = Counters()
  started = time.time()
  state = {'stopping': False}

  @contextlib.asynccontextmanager
  async def lifespan(_):
    yield
    # uvicorn has stopped accepting and finished in-flight requests by now.
    state['stopping'] = True
    await run_in_threadpool(batcher.close)

  app = FastAPI(title='multimodal model server', lifespan=lifespan)
  app.add_middleware(_Limits, max_bytes=max_body_bytes, counters=counters)

  @app.exception_handler(InputError)
  async def _input_error(_, exc: InputError):
    status = 413 if exc.reason == 'too_many_items' else 400
    return _error(status, str(exc), exc.reason)

  @app.exception_handler(RequestValidationError)
  async def _bad_body(_, exc: RequestValidationError):
    return _error(422, _validation_message(exc), 'bad_request')

  @app.exception_handler(HTTPException)
  async def _http(_, exc: HTTPException):
    reason = 'too_large' if exc.status_code == 413 else 'http'
    return _error(exc.status_code, str(exc.detail), reason)

  @app.exception_handler(Closed)
  async def _closed(_, exc: Closed):
    return _error(503, str(exc), 'shutting_down')

  @app.exception_handler(Exception)
  async def _internal(_, exc: Exception):
    return _error(500, f'Internal error: {type(exc).__name__}: {exc}',
                  'internal')

  async def serve(prepare, req):
    handlers.check_items(req, max_items)
    key, payload, rows = await run_in_threadpool(prepare, predictor, req)
    result = await asyncio.wrap_future(batcher.submit(key, payload, rows))
    # Already plain JSON types: skip FastAPI's (slow) generic encoder.
    return JSONResponse(result)

  @app.post('/embed')
  async def embed(req: schemas.EmbedRequest):
    return await serve(handlers.prepare_embed, req)

  @app.post('/zero_shot')
  async def zero_shot(req: schemas.ZeroShotRequest):
    return await serve(handlers.prepare_zero_shot, req)

  @app.post('/caption')
  async def caption(req: schemas.CaptionRequest):
    return await serve(handlers.prepare_caption, req)

  @app.post('/answer')
  async def answer(req: schemas.AnswerRequest):
    return await serve(handlers.prepare_answer, req)

  @app.post('/speak')
  async def speak(req: schemas.SpeakRequest):
    return await serve(handlers.prepare_speak, req)

  @app.get('/healthz')
  async def healthz():
    return {'status': 'stopping' if state['stopping'] else 'ok',
            'uptime_s': round(time.time() - started, 3),
            'model': predictor.info(), **counters.as_dict(),
            'batcher': batcher.stats(),
            'compilations': predictor.compilations.as_dict()}

  app.state.batcher = batcher
  app.state.counters = counters
  return app
