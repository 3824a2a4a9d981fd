"""Request bodies of the model server (JSON; pydantic checks their shape).

Media travel as base64 strings of the encoded file (PNG/JPEG images;
WAV/FLAC/OGG audio), or audio as {"samples": [...], "sample_rate": Hz}.
In caption and answer requests a null entry marks an example without that
modality (masked as the model's modality presence does). Unknown keys are
rejected (422), so a misspelt modality ("image" for "images") is an error,
not an ignored input.
"""
from __future__ import annotations

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field


class _Strict(BaseModel):
  model_config = ConfigDict(extra='forbid')


class Samples(_Strict):
  """A waveform: mono samples (floats in [-1, 1]) at `sample_rate` Hz."""
  samples: list[float] = Field(min_length=1)
  sample_rate: int = Field(gt=0)


Audio = str | Samples


class EmbedRequest(_Strict):
  images: list[str] | None = None
  audio: list[Audio] | None = None
  texts: list[str] | None = None


class ZeroShotRequest(_Strict):
  labels: list[str] = Field(min_length=1)
  prompts: list[str] = Field(default=['{}'], min_length=1)
  images: list[str] | None = None
  audio: list[Audio] | None = None


class DecodingOptions(_Strict):
  """multimodal.predictor.Decoding; unset fields take the export's
  defaults."""
  method: str | None = None
  max_new_tokens: int | None = None
  temperature: float | None = None
  top_k: int | None = None
  beam_size: int | None = None
  alpha: float | None = None
  seed: int | None = None


class CaptionRequest(_Strict):
  images: list[str | None] | None = None
  audio: list[Audio | None] | None = None
  decoding: DecodingOptions | None = None


class AnswerRequest(CaptionRequest):
  questions: list[str] = Field(min_length=1)


class SpeakRequest(_Strict):
  """Texts to say; `iterations`: Griffin-Lim steps (default 64)."""
  texts: list[str] = Field(min_length=1)
  iterations: int = Field(default=64, ge=1, le=1000)
