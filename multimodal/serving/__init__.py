"""The model server: `python -m multimodal.serve` (the CLI, multimodal/serve.py).

  app.py       the FastAPI app: endpoints, limits, error answers, /healthz
  schemas.py   request bodies
  handlers.py  per endpoint: preprocessing in request threads, one batched
               predictor call on the worker thread
  batcher.py   dynamic batching on one worker thread
"""
