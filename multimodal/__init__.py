"""multimodal: a JAX framework for models that see, hear, read and write."""


def load_pretrained(path: str, shardings=None):
  """Loads an export, workdir or checkpoint step
  (multimodal.pretrained.load_pretrained); `.predictor()` on the result is
  the inference API (multimodal/predictor.py)."""
  # Imported on use: `import multimodal` stays cheap (no jax/flax import).
  from multimodal import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained.load_pretrained(path, shardings)
