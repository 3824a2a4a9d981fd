"""Import public HuggingFace PyTorch checkpoints into our models.

  from multimodal import hf_import
  model_config, params = hf_import.convert('clip', '/path/to/clip-dir')
  model = hf_import.load_model(model_config, params)

`convert(family, source, hf_config=None)` returns our model config (a dict
for `multimodal.models.build_model`) and the model's parameters as a nested
dict of float32 numpy arrays, exactly `nnx.to_pure_dict(nnx.state(model,
nnx.Param))` of the model that config builds. Families (FAMILIES):

  clip     CLIPModel          -> contrastive (towers 'image', 'text')
  siglip   SiglipModel        -> contrastive (towers 'image', 'text')
  vit      ViTModel           -> vit
  whisper  Whisper encoder    -> audio_transformer (conv1d stem)

Reading a checkpoint needs only numpy and `safetensors`; torch and
transformers are not imported.
"""
from __future__ import annotations

from typing import Any, Callable

from multimodal.hf_import import clip
from multimodal.hf_import import common
from multimodal.hf_import import siglip
from multimodal.hf_import import vit
from multimodal.hf_import import whisper
from multimodal.hf_import.common import ConversionError

Converter = Callable[[Any, dict], tuple[dict, dict]]

FAMILIES: dict[str, Converter] = {
    'clip': clip.convert,
    'siglip': siglip.convert,
    'vit': vit.convert,
    'whisper': whisper.convert,
}


def convert(family: str, source: Any, hf_config: Any = None
            ) -> tuple[dict, dict]:
  """Converts a HF checkpoint of `family` into (model_config, params).

  Args:
    family: one of FAMILIES.
    source: a state dict (name -> numpy array or torch tensor), a torch
      module (its state_dict() and, unless hf_config is given, its .config),
      a .safetensors file, or a HF save_pretrained directory (single or
      sharded model.safetensors).
    hf_config: the HF config: a transformers config object, its dict, or a
      config.json path. Optional when `source` is a module or a directory
      (or a .safetensors file next to a config.json).

  Returns:
    (model_config, params): `build_model(model_config, rngs=...)` builds the
    model, and `params` (nested dict of float32 numpy arrays) is its pure
    parameter dict, loadable with `nnx.replace_by_pure_dict` (see
    load_model).

  Raises:
    ConversionError (a ValueError) naming the unknown family, or listing the
    checkpoint's missing keys, unexpected keys and shape mismatches by name.
  """
  if family not in FAMILIES:
    raise ConversionError(f'Unknown checkpoint family {family!r}; known: '
                          f'{sorted(FAMILIES)}.')
  config = common.find_config(source, hf_config)
  state = common.load_state_dict(source)
  model_config, params = FAMILIES[family](config, state)
  common.check_against_model(model_config, params, family)
  return model_config, params


def load_model(model_config: dict, params: dict, *, rngs: Any = None):
  """Builds `model_config` and loads `params` (from `convert`) into it.

  See multimodal.pretrained.model_with_params (built abstractly unless the
  model holds non-parameter state or `rngs` is given).

  Returns:
    The nnx model, its parameters those of the checkpoint (float32 jax
    arrays).
  """
  from multimodal import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained.model_with_params(model_config, params,
                                      where='the converted checkpoint',
                                      rngs=rngs)


__all__ = ['ConversionError', 'FAMILIES', 'convert', 'load_model']
