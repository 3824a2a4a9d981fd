r"""Captioning on the built-in digits_video data: clip -> caption.

An encoder-decoder (factorised ViViT over 8 frames of 16x16, its 4
temporal tokens as the memory of a 2-layer text decoder) learns a random
one of each clip's 4 phrasings per step ('a three moving to the left',
'the digit 3 sliding left', ...); evaluation decodes greedily and scores
against all 4 (CIDEr-D, BLEU-4, exact match) and by the parts the caption
names: the digit and the kind of motion (content) and the direction
(order; projects/digits/video_evals.py).

  python -m multimodal.train --config projects/digits/configs/video_captioning.py \
      --workdir workdirs/video_captioning --config.dataset.data_dir=DIR
  # the same model with each clip's frames shuffled in time:
  python -m multimodal.evaluate --pretrained workdirs/video_captioning \
      --config.input.frame_order=shuffled

Variants (``--config projects/digits/configs/video_captioning.py:tiny``):
  tiny      a few steps of a tiny model, for tests and smoke runs.

Measured once (2 CPU cores shared with other jobs, load average 18-27):
22 minutes of wall time in all (300 steps at 8-53 examples/s, then greedy
decoding of the test split). Test split, the frames in order / shuffled /
reversed (each evaluation about 2 minutes), % of the captions naming:

  direction  94.7 / 37.0 /  3.6   (of those naming the right kind)
  motion     63.9 / 19.4 /  2.5   (all 8)
  kind       67.5 / 52.5 / 68.9
  digit      11.1 /  8.9 / 11.7   (chance 10)
  CIDEr-D 0.937 / 0.382 / 0.181, BLEU-4 0.212 / 0.147 / 0.132, exact match
  7.5% / 3.1% / 0.0%.

The direction comes from the order of the frames; the digit is not learned
in 300 steps.
"""
import ml_collections as mlc

from multimodal import base_config as library_base
from projects.digits.configs import seq2seq
from projects.digits.configs import video_defaults


def encoder_decoder(towers: dict) -> dict:
  """The digits_video encoder-decoder over `towers` (shared with VQA)."""
  width = 128
  return dict(
      name='encoder_decoder',
      width=width,
      towers=towers,
      fusion=dict(name='concat'),
      modality_dropout=0.0,
      decoder=dict(name='text_decoder', vocab_size=256, max_len=24,
                   width=64, depth=2, num_heads=4, mlp_ratio=4,
                   **library_base.layer_options()),
      dtype='float32', param_dtype='float32',
  )


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  flags = seq2seq.parse_variant(arg)
  if flags - {'tiny'}:
    raise ValueError(f'Unknown variant(s) {sorted(flags - {"tiny"})}: use '
                     'tiny or nothing.')
  c = video_defaults.base_config()
  c.task = 'captioning'
  c.total_steps = 300
  c.batch_size = 32
  c.eval_batch_size = 120
  c.log_every = 50
  c.eval_every = 0
  c.checkpoint_every = 300
  c.input.fields = dict(video='video', video_text='video_captions',
                        video_text_refs='video_captions', label='label')
  c.input.max_references = 4
  # Pooled outputs are unused: the temporal tokens feed the decoder.
  # Joint space-time attention on the 32x32 frames as built: the decoder
  # attends to all 64 tubelet tokens. (Factorised attention on 16x16 frames,
  # whose 4 pooled step tokens were the memory, learned the motions but
  # only 21% of the digits in 600 steps of video_vqa.py.)
  c.input.video_size = video_defaults.FULL_SIZE
  c.model = encoder_decoder(dict(video=video_defaults.video_tower(
      'joint', frame_size=video_defaults.FULL_SIZE)))
  c.model.decoder.max_len = 16  # BOS + caption (<= 9 pieces) + eos
  c.captioning = dict(targets=(('video', 'video_text'),))
  c.decoding = dict(max_new_tokens=12, beam_size=1, alpha=0.6)
  c.evals = dict(
      caption=dict(type='caption', ptb=False),
      # caption_parts/video/{digit,kind,motion,direction}
      caption_parts=dict(type='digits_video_caption_parts', media='video'),
  )

  if 'tiny' in flags:
    seq2seq.make_tiny(c)
    c.eval_batch_size = 60
    c.decoding.max_new_tokens = 8
  return c
