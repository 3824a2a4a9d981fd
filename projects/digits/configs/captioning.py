r"""Captioning on digits_trimodal: handwritten digit -> caption, speech -> text.

One encoder-decoder (ViT on the scans, AST-style transformer on log-mel
speech, concatenated tokens as the memory of a 2-layer text decoder) learns
both: the decoder sees one modality at a time, trained on a random one of
the record's 5 phrasings each step; evaluation decodes greedily and scores
against all 5 (CIDEr-D, BLEU-4, exact match; WER of speech against the
canonical 'the word six').

  python -m multimodal.train --config projects/digits/configs/captioning.py \
      --workdir workdirs/captioning_digits --config.dataset.data_dir=DIR

Variants (``--config projects/digits/configs/captioning.py:VARIANT``; flags
combine with commas, e.g. ``:tiny,bottleneck``):
  (none)      the default below.
  tiny        a few steps of a tiny model, for tests and smoke runs.
  perceiver   perceiver-resampler fusion.
  bottleneck  MBT bottleneck fusion.

Measured once (default variant, 2 CPU cores shared with other jobs): 7.8
minutes of wall time in all (1,500 steps of batch 64 at 120-270
examples/s, then greedy decoding of the test split). Test split (360 scans;
360 clips by voices never heard in training):

            CIDEr-D  BLEU-4  exact match  WER (vs 'the word six')
  image      2.395   0.834     81.4%          -
  speech     1.348   0.717     60.6%        36.2%

(CIDEr-D and BLEU-4 on the built-in tokenizer. A rerun with
--config.evals.caption.ptb=True reproduced these exactly and scored the
same predictions with coco-caption's PTB tokenizer, the official numbers:
image 2.423 / 0.836, speech 1.348 / 0.704; PTB keeps hyphenated words
such as 'left-slanted' as one token.)

With `:finetune` (image and audio towers from the contrastive export;
8.1 minutes on an idle machine):

  image      2.433   0.850     82.2%          -
  speech     1.892   0.741     87.8%        18.9%

Greedy decoding mostly picks the short canonical phrasings ('a handwritten
six': 200 of 360 scans, the rest add stroke/slant attributes; 'the word
six': 334 of 360 clips). The speech figures are bounded by recognising
unheard voices: 65% of the speech captions name the right digit.
"""
import ml_collections as mlc

from projects.digits.configs import seq2seq


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  flags = seq2seq.parse_variant(arg)
  c = seq2seq.base_config(flags)
  c.task = 'captioning'
  c.total_steps = 1500
  c.batch_size = 64
  c.eval_batch_size = 120
  c.log_every = 50
  c.eval_every = 0
  c.checkpoint_every = 500

  c.input.fields = dict(image='image', audio='speech',
                        image_text='image_captions',
                        audio_text='speech_captions',
                        image_text_refs='image_captions',
                        audio_text_refs='speech_captions', label='label')
  c.input.max_text_len = 20  # the longest caption is 16 pieces + eos
  c.input.max_references = 5

  c.captioning = dict(targets=(('image', 'image_text'),
                               ('audio', 'audio_text')))
  c.decoding.max_new_tokens = 20
  # Tuples, not lists: ml_collections can override tuples from the command
  # line.
  # ptb=True (--config.evals.caption.ptb=True) also reports coco-caption's
  # PTB-tokenised bleu4_ptb / cider_ptb (needs java).
  c.evals = dict(caption=dict(type='caption', wer_media=('audio',),
                              ptb=False))

  if 'tiny' in flags:
    seq2seq.make_tiny(c)
    c.decoding.max_new_tokens = 8
  return c
