"""Settings every digits_video experiment shares (not an experiment).

video_contrastive.py, video_captioning.py and video_vqa.py start from
`base_config()` and add their task, fields, model and schedule. Every one
of them takes

  --config.input.frame_order=shuffled   (or reversed; default original)

which reorders each clip's frames in evaluation (and in training, if set
for it): the same model then keeps its content answers (the digit, the kind
of motion) and falls to chance on the direction, which only the order of
the frames holds (projects/digits/video_evals.py).
"""
import ml_collections as mlc

from multimodal import base_config as library_base
from projects.digits import data as digits_data
from projects.digits.configs import defaults
from projects.digits.data import motions

FRAMES = motions.NUM_FRAMES  # 8
FRAME_SIZE = 16  # the 32x32 frames resized: a digit of 8 px, as scanned
FULL_SIZE = motions.FRAME_SIZE  # 32: the frames as built, a digit of 16 px


def base_config() -> mlc.ConfigDict:
  """digits_trimodal's base config on the digits_video source, with its
  tokenizer and the 'video' kind's input keys."""
  c = defaults.base_config()
  c.imports = ('projects.digits.data', 'projects.digits.video_evals')
  c.dataset = dict(source='digits_video', name='digits_video',
                   data_dir=mlc.FieldReference(None, field_type=str))
  c.input.tokenizer = digits_data.VIDEO_TOKENIZER_PATH
  c.input.video_frames = FRAMES
  c.input.video_size = FRAME_SIZE
  c.input.video_channels = 1
  # Drawn once per clip and applied to every frame (the 'video' kind), so
  # the motion is the clip's own. No flips: they would swap left and right.
  c.input.augment = dict(max_shift=0.05, max_scale=0.1, max_rotate=10.0)
  c.input.frame_order = 'original'
  c.input.max_text_len = 12  # the longest text is 9 pieces + eos
  return c


def video_tower(attention: str = 'factorised', temporal_pool: str = 'mean',
                frame_size: int = FRAME_SIZE, width: int = 128,
                depth: int = 2, heads: int = 4) -> dict:
  """The ViViT of the clips: tubelets of 2 frames x (frame_size / 4)^2
  pixels, 16 per tubelet step, 4 steps.

  attention='factorised': a ViT per step (mean-pooled), then one temporal
  block over the 4 steps, pooled by `temporal_pool` ('mean' or 'map'); 4
  output tokens. 'joint': one encoder over all 64 tokens (mean-pooled); 64
  output tokens, which an encoder-decoder's text decoder attends to
  directly. frame_size must equal config.input.video_size.
  """
  return dict(name='vivit', num_frames=FRAMES, image_size=frame_size,
              channels=1, patch_size=frame_size // 4, tubelet_time=2,
              attention=attention, temporal_depth=1, pool='mean',
              temporal_pool=temporal_pool, posemb='learned', width=width,
              depth=depth, num_heads=heads, mlp_ratio=4,
              **library_base.layer_options())


def audio_tower(pool: str, width: int = 128, depth: int = 2,
                heads: int = 4) -> dict:
  """digits_trimodal's AST-style speech tower."""
  return defaults.towers(pool, width, depth, heads)['audio']
