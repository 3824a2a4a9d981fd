r"""Text to speech on digits_trimodal: say "zero" ... "nine" in its voices.

A 'tts' model (multimodal/models/tts.py: a text transformer, then a
non-autoregressive decoder of the 96 log-mel frames with cross-attention to
the text and a stop target) learns each training clip's log-mel from one of
its 5 captions, drawn at random per step. The captions name the voice's
accent, speed, pitch and speaker ('seven, spoken slowly in a low voice by
female1'), so the text conditions the voice; the canonical 'the word seven'
gets the average training voice. Waveforms come from Griffin-Lim
(multimodal/data/griffin_lim.py), e.g. `Predictor.speak` on the export.

  python -m multimodal.train --config projects/digits/configs/tts.py \
      --workdir workdirs/tts_digits --config.dataset.data_dir=DIR

Variants (``--config projects/digits/configs/tts.py:VARIANT``):
  (none)  the default below.
  tiny    a few steps of a tiny model, for tests and smoke runs.

Measured once (2 CPU cores shared with 6 other jobs): 1,000 steps took 64
minutes (13-31 examples/s); the run was stopped there for time, so the
export is `--step 1000` of this 1,500-step schedule (learning rate not yet
decayed). Test split (360 records; voices never heard in training), model
of 1.30M parameters: log-mel L1 0.259 (0.237 at step 500), length error
9.3 frames. Intelligibility by recognition (projects/digits/speak_eval.py;
README "Speaking: text to speech"): see the README for the figures and
commands.
"""
import ml_collections as mlc

from multimodal import base_config as library_base
from projects.digits.configs import defaults


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  variant = arg or 'default'
  if variant not in ('default', 'tiny'):
    raise ValueError(f'Unknown variant {variant!r}: use tiny or none.')
  c = defaults.base_config()
  c.task = 'tts'
  c.total_steps = 1500
  c.batch_size = 64
  c.eval_batch_size = 120
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  # The test split's voices are never heard in training: its loss measures
  # how well the model predicts an unheard voice from the caption's words.
  c.input.fields = dict(text='speech_captions', speech='speech')
  c.input.kinds = dict(speech='audio_target')
  c.input.max_text_len = 24
  c.input.audio_augment = None  # targets are never perturbed
  c.tts = dict(text='text', audio='speech', stop_weight=1.0)
  c.model = dict(
      name='tts',
      text=dict(name='text_transformer', vocab_size=320, max_len=24,
                causal=False, pool='mean', width=128, depth=2, num_heads=4,
                mlp_ratio=4, **library_base.layer_options()),
      num_frames=96, num_mels=64, depth=3, num_heads=4, mlp_ratio=4,
      postnet_width=64, dropout=0.0, dtype='float32', param_dtype='float32')
  c.evals = dict(tts=dict(type='spectrogram'))

  if variant == 'tiny':
    c.total_steps = 4
    c.batch_size = 8
    c.eval_batch_size = 32
    c.log_every = 2
    c.eval_every = 0
    c.checkpoint_every = 2
    c.optimizer.warmup_steps = 1
    c.model.text.update(width=32, depth=1, num_heads=2)
    c.model.update(depth=1, num_heads=2, postnet_width=8)
  return c
