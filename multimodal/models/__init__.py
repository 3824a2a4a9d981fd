"""Model zoo: importing this package registers every model, encoder,
decoder and fusion (registry kinds: see builder.py).

  from multimodal.models import build_model, rng
  model = build_model({'name': 'vit', 'width': 64}, rngs=rng.Rngs(0))

(`rng.Rngs` is nnx.Rngs, quicker to trace: see rng.py.)
"""
from multimodal.models import audio_encoder  # noqa: F401 (registers)
from multimodal.models import contrastive  # noqa: F401 (registers)
from multimodal.models import decoder  # noqa: F401 (registers)
from multimodal.models import encoder_decoder  # noqa: F401 (registers)
from multimodal.models import fusion  # noqa: F401 (registers)
from multimodal.models import text_encoder  # noqa: F401 (registers)
from multimodal.models import tts  # noqa: F401 (registers)
from multimodal.models import video  # noqa: F401 (registers)
from multimodal.models import vit  # noqa: F401 (registers)
from multimodal.models.builder import build_model
from multimodal.models.partitioning import LOGICAL_AXES

__all__ = ['build_model', 'LOGICAL_AXES']
