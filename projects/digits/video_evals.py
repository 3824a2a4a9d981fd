"""Evaluators of digits_video that split content from frame order.

Each reports, per clip, whether the model got the digit and the kind of
motion right (content: visible in the frames in any order) and whether it
got the direction right (order: a clip and its reverse have the same frames;
projects/digits/data/motions.py). Under shuffled frames
(--config.input.frame_order=shuffled) a model that reads the frames as a
set would keep the first and fall to 50% on the second (README.md,
"The built-in video dataset", has what trained models do).

Configs list 'projects.digits.video_evals' in config.imports and name them
in config.evals:

  digits_video_zeroshot  (contrastive) each clip against the captions of
                   all 80 (digit, motion) classes:
                     zeroshot/<media>/digit, /kind, /motion  top-1 over the 80
                       classes, then read off that part (chance 10%, 33%,
                       12.5%)
                     zeroshot/<media>/direction  whether the clip is closer
                       to its true caption than to the same caption with the
                       opposite direction (chance 50%)
  digits_video_caption_parts  (captioning) the parts the generated caption
                   names (video_captions.parse_caption) against its
                   canonical reference:
                     caption_parts/<media>/digit, /kind, /motion  fraction
                       of clips whose caption names that part right
                     caption_parts/<media>/direction  of the clips whose
                       caption names the right kind, the fraction with the
                       right direction (chance 50%)
"""
from __future__ import annotations

import numpy as np

from multimodal import evaluators
from multimodal import registry
from multimodal.evaluators import zeroshot
from projects.digits.data import motions
from projects.digits.data import video_captions

_NUM_DIGITS = 10
_OPPOSITE_INDEX = np.array([motions.MOTIONS.index(motions.OPPOSITE[m])
                            for m in motions.MOTIONS])
_KIND_INDEX = np.array([motions.KINDS.index(motions.KIND_OF[m])
                        for m in motions.MOTIONS])


@registry.register('evaluator', 'digits_video_zeroshot')
class VideoZeroShot(evaluators.Evaluator):
  """Zero-shot over the (digit, motion) captions (module docstring).

  Args (config.evals entry): media (the embedded video field), text (the
  text field whose tower embeds captions), labels (int digit field),
  motions (int field, index into motions.MOTIONS), name (metric prefix,
  default 'zeroshot/<media>').
  """

  # pylint: disable-next=redefined-outer-name
  def __init__(self, task, media='video', text='video_text', labels='label',
               motions='motion', name=None):
    missing = [f for f in (media, text) if f not in task.fields]
    if missing:
      raise ValueError(f'digits_video_zeroshot names {missing}, which the '
                       f'model does not embed (it embeds {task.fields}).')
    self.media, self.text = media, text
    self.labels, self.motions = labels, motions
    self.fields = (labels, motions)
    self.name = name or f'zeroshot/{media}'

  def __call__(self, outputs, ctx):
    num_motions = len(motions.MOTIONS)
    # Every phrasing of every class, ensembled per class as CLIP does.
    prompts = [video_captions.video_captions(d, m)
               for d in range(_NUM_DIGITS) for m in motions.MOTIONS]
    text = np.asarray(ctx.embed_texts(
        self.text, [p for group in prompts for p in group]))
    protos = zeroshot.prototypes_from_prompts(
        text.reshape(len(prompts), len(prompts[0]), -1))
    video = zeroshot.normalize(np.asarray(outputs[f'embedding/{self.media}']))
    scores = (video @ protos.T).reshape(-1, _NUM_DIGITS, num_motions)
    digit = np.asarray(outputs[self.labels])
    motion = np.asarray(outputs[self.motions])
    best = scores.reshape(len(scores), -1).argmax(axis=1)
    best_digit, best_motion = best // num_motions, best % num_motions
    rows = np.arange(len(scores))
    true = scores[rows, digit, motion]
    reverse = scores[rows, digit, _OPPOSITE_INDEX[motion]]
    return {
        f'{self.name}/digit': float((best_digit == digit).mean()),
        f'{self.name}/kind': float(
            (_KIND_INDEX[best_motion] == _KIND_INDEX[motion]).mean()),
        f'{self.name}/motion': float((best_motion == motion).mean()),
        f'{self.name}/direction': float((true > reverse).mean()),
    }


@registry.register('evaluator', 'digits_video_caption_parts')
class VideoCaptionParts(evaluators.Evaluator):
  """Digit, kind and direction named by generated captions (module
  docstring).

  Args (config.evals entry): media (the captioned field, default 'video'),
  name (metric prefix, default 'caption_parts/<media>').
  """

  def __init__(self, task, media='video', name=None):
    if media not in getattr(task, 'media', ()):
      raise ValueError(f'digits_video_caption_parts: {media!r} is not a '
                       'captioned media of the task '
                       '(config.captioning.targets).')
    self.media = media
    self.name = name or f'caption_parts/{media}'

  def __call__(self, outputs, ctx):
    del ctx
    got, want = [], []
    for prediction, refs in zip(outputs[f'prediction/{self.media}'],
                                outputs[f'references/{self.media}']):
      digit, motion = video_captions.parse_caption(refs[0])
      if motion is None:
        raise ValueError(f'digits_video_caption_parts: the reference '
                         f'{refs[0]!r} names no motion; it needs digits_video '
                         'captions (video_captions.video_captions).')
      got.append(video_captions.parse_caption(prediction))
      want.append((digit, motion))
    digit_ok = np.array([g[0] == w[0] for g, w in zip(got, want)])
    motion_ok = np.array([g[1] == w[1] for g, w in zip(got, want)])
    kind_ok = np.array([g[1] is not None and
                        motions.KIND_OF[g[1]] == motions.KIND_OF[w[1]]
                        for g, w in zip(got, want)])
    return {
        f'{self.name}/digit': float(digit_ok.mean()),
        f'{self.name}/kind': float(kind_ok.mean()),
        f'{self.name}/motion': float(motion_ok.mean()),
        f'{self.name}/direction': (float(motion_ok[kind_ok].mean())
                                   if kind_ok.any() else 0.0),
    }
