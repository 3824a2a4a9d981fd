"""Settings every digits_trimodal experiment shares (not an experiment).

contrastive.py and seq2seq.py (captioning, VQA) start from
`base_config()` and add their task, fields, model and schedule.
"""
import ml_collections as mlc

from projects.digits import data as digits_data
from multimodal import base_config as library_base


def base_config() -> mlc.ConfigDict:
  """The library's base config with the digits data source and input."""
  c = library_base.base()
  c.imports = ('projects.digits.data',)  # registers its source
  c.dataset = dict(source='digits_trimodal', name='digits_trimodal',
                   data_dir=mlc.FieldReference(None, field_type=str))
  c.input.tokenizer = digits_data.TOKENIZER_PATH
  c.input.image_size = 16
  c.input.image_channels = 1
  c.input.augment = dict(max_shift=0.1, max_scale=0.1, max_rotate=10.0)
  c.input.num_frames = 96
  c.input.num_mels = 64
  # Voice perturbations for generalising to unheard speakers (training only).
  c.input.audio_augment = dict(max_stretch=0.15, max_freq_shift=3,
                               max_time_mask=8, max_freq_mask=8, max_tilt=0.0)
  c.input.audio_cache_size = 20000  # clips whose features stay in memory
  # The whole set fits in memory: records and decoded scans are read once
  # (benchmarks/input_pipeline.py measures what it saves).
  c.input.image_cache_size = 20000
  c.input.cache_raw = True
  return c


def towers(pool: str, width: int = 128, depth: int = 2, heads: int = 4
           ) -> dict:
  """The image (ViT) and audio (AST-style) tower configs for the digits."""
  tower = dict(width=width, depth=depth, num_heads=heads, mlp_ratio=4)
  return dict(
      image=dict(name='vit', image_size=16, patch_size=4, channels=1,
                 pool=pool, posemb='learned', **tower,
                 **library_base.layer_options()),
      audio=dict(name='audio_transformer', num_frames=96, num_mels=64,
                 patch_size=(16, 16), pool=pool, posemb='sincos2d', **tower,
                 **library_base.layer_options()),
  )
