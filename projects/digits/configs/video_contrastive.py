r"""Contrastive video~text and video~audio on the built-in digits_video data.

A video tower (factorised ViViT over 8 frames of 16x16), the AST-style
speech tower and a text transformer, trained with SigLIP's sigmoid loss on
two pairs: clip~caption ('a three moving to the left') and clip~spoken
digit. Evaluation: zero-shot over the captions of all 80 (digit, motion)
classes, split into digit, kind of motion and direction
(projects/digits/video_evals.py), the clips against the spoken digits
(zeroshot_by_example) and retrieval recall@K.

  python -m multimodal.train --config projects/digits/configs/video_contrastive.py \
      --workdir workdirs/video_contrastive --config.dataset.data_dir=DIR
  # the same model with each clip's frames shuffled in time:
  python -m multimodal.evaluate --pretrained workdirs/video_contrastive \
      --config.input.frame_order=shuffled

Variants (``--config projects/digits/configs/video_contrastive.py:tiny``):
  tiny      a few steps of a tiny model, for tests and smoke runs.

Measured once (2 CPU cores shared with other jobs, load average 12-27):
44 minutes of wall time in all (600 steps at 7-60 examples/s, then the
evaluation). Test split, zero-shot accuracy %, the frames in order /
shuffled / reversed (each evaluation about 5 minutes):

  direction  99.7 / 48.1 /   1.1   (order; chance 50)
  motion     98.3 / 28.6 /   1.1   (all 8; chance 12.5)
  kind      100.0 / 71.1 / 100.0   (chance 33)
  digit      35.0 / 19.2 /  32.5   (chance 10)
  video~audio 13.9 / 12.5 / 11.7   (the spoken digits as prototypes)

Retrieval recall@1 / @5 in order: clip->caption 8.9% / 33.6%,
caption->clip 9.2% / 37.5% (captions name only digit and motion: about
4.5 test clips share each of the 80 classes). The motion is learned, and
its direction is read from the order of the frames; the digit is barely
learned in 600 steps.
"""
import ml_collections as mlc

from multimodal import base_config as library_base
from projects.digits.configs import video_defaults


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  if arg not in (None, '', 'tiny'):
    raise ValueError(f'Unknown variant {arg!r}: use tiny or nothing.')
  c = video_defaults.base_config()
  c.task = 'contrastive'
  c.total_steps = 600
  c.batch_size = 64
  c.eval_batch_size = 120
  c.log_every = 50
  c.eval_every = 0
  c.checkpoint_every = 300
  c.input.fields = dict(video='video', audio='speech',
                        video_text='video_captions', label='label',
                        motion='motion')
  c.input.kinds = dict(motion='label')  # an int class index, not text

  c.model = dict(
      name='contrastive',
      embed_dim=128,
      towers=dict(
          video=video_defaults.video_tower(temporal_pool='map'),
          audio=video_defaults.audio_tower(pool='map'),
          text=dict(name='text_transformer', vocab_size=256,
                    max_len=c.input.max_text_len, causal=False, pool='eos',
                    width=128, depth=2, num_heads=4, mlp_ratio=4,
                    **library_base.layer_options()),
      ),
      inputs=dict(video='video', audio='audio', video_text='text'),
      pairs=(('video', 'video_text'), ('video', 'audio')),
      loss='sigmoid',
      temperature_init=10.0,
      bias_init=-10.0,
      dtype='float32', param_dtype='float32',
  )
  c.evals = dict(
      # zeroshot/video/{digit,kind,motion,direction}
      video_zeroshot=dict(type='digits_video_zeroshot', media='video',
                          text='video_text'),
      # The clips against prototypes of the spoken digits: digit only.
      zeroshot_video_audio=dict(type='zeroshot_by_example', media='video',
                                prototypes='audio'),
      retrieval=dict(type='retrieval', ks=(1, 5)),
  )

  if arg == 'tiny':
    c.total_steps = 6
    c.batch_size = 16
    c.eval_batch_size = 60
    c.log_every = 2
    c.checkpoint_every = 3
    c.optimizer.warmup_steps = 2
    for t in c.model.towers.values():
      t.width, t.depth, t.num_heads = 32, 1, 2
    c.model.embed_dim = 32
  return c
