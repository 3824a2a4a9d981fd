"""Settings every digits_trimodal experiment shares (not an experiment).

contrastive_digits.py and digits_seq2seq.py (captioning, VQA) start from
`base_config()` and add their task, fields, model and schedule.
"""
import ml_collections as mlc

from multimodal import distributed


def base_config() -> mlc.ConfigDict:
  """Runtime, mesh, data source, input pipeline and optimizer defaults."""
  c = mlc.ConfigDict()
  c.seed = 0
  c.log_every = 25
  c.checkpoint_keep = 2
  c.train_split = 'train'
  c.eval_split = 'test'
  # Mesh axis sizes (one may be -1); dcn_* split an axis across TPU slices
  # or hosts (see multimodal/mesh.py).
  c.mesh = dict(data=-1, fsdp=1, tensor=1, dcn_data=1, dcn_fsdp=1,
                dcn_tensor=1)
  # Which mesh axes each logical parameter/activation axis is split over: a
  # preset of multimodal/sharding.py (data_parallel, fsdp, fsdp_tensor) plus
  # (name, mesh_axes) overrides. E.g. FSDP over 8 devices:
  #   --config.mesh.data=1 --config.mesh.fsdp=-1 --config.sharding.rules=fsdp
  c.sharding = dict(rules='data_parallel', overrides=())
  # Multi-process start-up; all defaults detect the cluster (see
  # multimodal/distributed.py and launch/README.md).
  c.distributed = distributed.default_config()
  c.dataset = dict(name='digits_trimodal', data_dir=mlc.FieldReference(
      None, field_type=str))

  c.input = mlc.ConfigDict()
  c.input.image_size = 16
  c.input.image_channels = 1
  c.input.augment = dict(max_shift=0.1, max_scale=0.1, max_rotate=10.0)
  c.input.num_frames = 96
  c.input.num_mels = 64
  # Voice perturbations for generalising to unheard speakers (training only).
  c.input.audio_augment = dict(max_stretch=0.15, max_freq_shift=3,
                               max_time_mask=8, max_freq_mask=8, max_tilt=0.0)
  c.input.audio_cache_size = 20000  # clips whose features stay in memory
  c.input.tokenizer = mlc.FieldReference(None, field_type=str)
  c.input.skip_corrupt = False
  c.input.num_threads = 2
  c.input.prefetch = 64
  c.input.num_workers = 0

  # frozen: regexes of parameters that never change (e.g. '^towers/image/'
  # for a LiT-style locked tower); lr_mults: ((regex, multiplier), ...).
  c.optimizer = dict(name='adamw', lr=1e-3, b1=0.9, b2=0.95,
                     weight_decay=1e-4, warmup_steps=50, clip_norm=1.0,
                     final_fraction=0.01, frozen=(), lr_mults=())
  # Start from pretrained parameters (an export, workdir or checkpoint);
  # see multimodal/pretrained.py. Empty path: train from scratch.
  c.init_from = dict(path='', include=('.*',), exclude=(), rename=(),
                     resample_posemb=True)
  return c


def towers(pool: str, width: int = 128, depth: int = 2, heads: int = 4
           ) -> dict:
  """The image (ViT) and audio (AST-style) tower configs for the digits."""
  tower = dict(width=width, depth=depth, num_heads=heads, mlp_ratio=4)
  return dict(
      image=dict(name='vit', image_size=16, patch_size=4, channels=1,
                 pool=pool, posemb='learned', **tower),
      audio=dict(name='audio_transformer', num_frames=96, num_mels=64,
                 patch_size=(16, 16), pool=pool, posemb='sincos2d', **tower),
  )
