"""Shared config of the encoder-decoder experiments on digits_trimodal.

Not an experiment itself: captioning_digits.py and vqa_digits.py start
from `base_config` and set their task, fields and schedule. Variant flags
(comma-separated after the config path's ':') handled here:
  tiny        a few steps of a tiny model, for tests and smoke runs.
  perceiver   perceiver-resampler fusion instead of concatenated tokens.
  bottleneck  MBT bottleneck fusion instead of concatenated tokens.
"""
import ml_collections as mlc

from multimodal import distributed

FLAGS = ('tiny', 'perceiver', 'bottleneck')


def parse_variant(arg: str | None, extra: tuple[str, ...] = ()) -> set[str]:
  """'tiny,bottleneck' -> {'tiny', 'bottleneck'}, with a clear error."""
  flags = {f for f in (arg or '').split(',') if f}
  unknown = sorted(flags - set(FLAGS) - set(extra))
  if unknown:
    raise ValueError(f'Unknown variant(s) {unknown}: use a comma-separated '
                     f'subset of {FLAGS + extra}.')
  if {'perceiver', 'bottleneck'} <= flags:
    raise ValueError('Pick one fusion: perceiver or bottleneck.')
  return flags


def base_config(flags: set[str]) -> mlc.ConfigDict:
  """Trainer, data, model and optimizer settings common to both tasks."""
  c = mlc.ConfigDict()
  c.seed = 0
  c.log_every = 25
  c.checkpoint_keep = 2
  c.train_split = 'train'
  c.eval_split = 'test'
  c.mesh = dict(data=-1, fsdp=1, tensor=1, dcn_data=1, dcn_fsdp=1,
                dcn_tensor=1)
  c.sharding = dict(rules='data_parallel', overrides=())
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
  c.input.audio_cache_size = 20000
  c.input.tokenizer = mlc.FieldReference(None, field_type=str)
  c.input.skip_corrupt = False
  c.input.num_threads = 2
  c.input.prefetch = 64
  c.input.num_workers = 0

  width, depth, heads = 128, 2, 4
  tower = dict(width=width, depth=depth, num_heads=heads, mlp_ratio=4)
  # Pooled outputs are unused here, so 'mean' pooling (no parameters).
  c.model = dict(
      name='encoder_decoder',
      width=width,
      towers=dict(
          image=dict(name='vit', image_size=16, patch_size=4, channels=1,
                     pool='mean', posemb='learned', **tower),
          audio=dict(name='audio_transformer', num_frames=96, num_mels=64,
                     patch_size=(16, 16), pool='mean', posemb='sincos2d',
                     **tower),
      ),
      fusion=dict(name='concat'),
      modality_dropout=0.0,
      # A narrower decoder: it runs over every prompt and target token, so
      # it costs more than the towers (measured: 128 wide is ~2x slower).
      decoder=dict(name='text_decoder', vocab_size=320, max_len=24,
                   width=64, depth=2, num_heads=4, mlp_ratio=4),
  )
  if 'perceiver' in flags:
    c.model.fusion = dict(name='perceiver_resampler', depth=1,
                          num_heads=heads, num_latents=16)
  if 'bottleneck' in flags:
    c.model.fusion = dict(name='bottleneck', depth=1, num_heads=heads,
                          num_latents=4)

  c.optimizer = dict(name='adamw', lr=1e-3, b1=0.9, b2=0.95,
                     weight_decay=1e-4, warmup_steps=50, clip_norm=1.0,
                     final_fraction=0.01)
  c.evals = dict(max_new_tokens=6, beam_size=1, alpha=0.6)
  return c


def make_tiny(c: mlc.ConfigDict) -> None:
  """Shrinks a config in place to a few steps of a tiny model."""
  c.total_steps = 6
  c.batch_size = 16
  c.eval_batch_size = 64
  c.log_every = 2
  c.eval_every = 0
  c.checkpoint_every = 3
  c.optimizer.warmup_steps = 2
  c.model.width = 32
  for part in (*c.model.towers.values(), c.model.decoder):
    part.width, part.depth, part.num_heads = 32, 1, 2
  if c.model.fusion.name != 'concat':
    c.model.fusion.num_heads = 2
