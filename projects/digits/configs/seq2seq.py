"""Shared config of the encoder-decoder experiments on digits_trimodal.

Not an experiment itself: captioning.py and vqa.py start
from `base_config` and set their task, fields and schedule. Variant flags
(comma-separated after the config path's ':') handled here:
  tiny        a few steps of a tiny model, for tests and smoke runs.
  perceiver   perceiver-resampler fusion instead of concatenated tokens.
  bottleneck  MBT bottleneck fusion instead of concatenated tokens.
  finetune    start the image and audio towers from a contrastive export
              (config.init_from.path, default exports/contrastive_digits:
              `make demo` then `python -m multimodal.export --workdir
              workdirs/demo --out exports/contrastive_digits`).
"""
import ml_collections as mlc

from multimodal import base_config as library_base
from projects.digits.configs import defaults

FLAGS = ('tiny', 'perceiver', 'bottleneck', 'finetune')


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
  c = defaults.base_config()
  width = 128
  # Pooled outputs are unused here, so 'mean' pooling (no parameters).
  c.model = dict(
      name='encoder_decoder',
      width=width,
      towers=defaults.towers(pool='mean', width=width),
      fusion=dict(name='concat'),
      modality_dropout=0.0,
      # A narrower decoder: it runs over every prompt and target token, so
      # it costs more than the towers (measured: 128 wide is ~2x slower).
      decoder=dict(name='text_decoder', vocab_size=320, max_len=24,
                   width=64, depth=2, num_heads=4, mlp_ratio=4,
                   **library_base.layer_options()),
      # Mixed precision: --config.model.dtype=bfloat16 computes every part
      # that does not set its own dtype in bfloat16; parameters (and the
      # optimizer state) stay param_dtype, losses float32.
      dtype='float32', param_dtype='float32',
  )
  if 'perceiver' in flags:
    c.model.fusion = dict(name='perceiver_resampler', depth=1,
                          num_heads=4, num_latents=16)
  if 'bottleneck' in flags:
    c.model.fusion = dict(name='bottleneck', depth=1, num_heads=4,
                          num_latents=4)

  if 'finetune' in flags:
    # The towers' encoders from the contrastive model; its attention-pooling
    # heads are not used here (tokens, not pooled vectors, feed the fusion).
    c.init_from.path = 'exports/contrastive_digits'
    c.init_from.include = ('^towers/(image|audio)/',)
    c.init_from.exclude = ('map_head',)

  c.decoding = dict(max_new_tokens=6, beam_size=1, alpha=0.6)
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
