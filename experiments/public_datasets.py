r"""Captioning and VQA on public tfds datasets, by field mapping alone.

  python -m multimodal.train --config experiments/public_datasets.py:NAME \
      --workdir DIR --config.dataset.data_dir=TFDS_DIR \
      --config.input.tokenizer=SPM_MODEL

NAME:
  clevr          VQA (tfds 'clevr' >= 3.1: question_answer/question,
                 question_answer/answer; one question per image drawn per
                 example, as images hold different numbers of questions),
                 scored by exact match ('exact_match/full/all').
  coco_captions  captioning (tfds 'coco_captions', Karpathy splits:
                 captions/text, 5-7 references per image).
  librispeech    speech to text (tfds 'librispeech': decoded 16 kHz int16
                 `speech`, transcript `text`; train_clean100 -> dev_clean;
                 the first 16 s of each utterance, so longer transcripts
                 are cut short of their audio's end), scored by WER.

All start from the library's base config (multimodal/base_config.py) and
one small encoder-decoder (a 128-wide, 2-layer ViT or AST-style audio
tower, concatenated tokens, a 64-wide 2-layer text decoder) with the towers
the data needs; nothing here was trained or timed. Prepare the data with
tfds first, and pass a sentencepiece model trained on the dataset's text
(pad id 0, eos id 3; `python -m multimodal.tokenizer train` makes one) as
--config.input.tokenizer: there is no default. The decoder's vocab_size
(320) must be at least the tokenizer's (checked at start):
--config.model.decoder.vocab_size=N. Reading coco_captions and librispeech needs
TensorFlow (their tfds builders call tf while they are constructed), which
is not a dependency of this project; clevr does not. Their field maps are
tested on records laid out as those builders' features are.
"""
import ml_collections as mlc

from multimodal import base_config as library_base

NAMES = ('clevr', 'coco_captions', 'librispeech')


_TOWER = dict(width=128, depth=2, num_heads=4, mlp_ratio=4)


def _base_config() -> mlc.ConfigDict:
  """The library's base config with the encoder-decoder every dataset here
  uses; get_config adds the one tower its data needs."""
  c = library_base.base()  # dataset: tfds, data_dir from the command line
  # Pooled outputs are unused here, so 'mean' pooling (no parameters).
  c.model = dict(
      name='encoder_decoder',
      width=128,
      towers={},
      fusion=dict(name='concat'),
      modality_dropout=0.0,
      # A narrower decoder: it runs over every prompt and target token.
      decoder=dict(name='text_decoder', vocab_size=320, max_len=24,
                   width=64, depth=2, num_heads=4, mlp_ratio=4,
                   **library_base.layer_options()),
      # Mixed precision: --config.model.dtype=bfloat16 computes every part
      # that does not set its own dtype in bfloat16; parameters (and the
      # optimizer state) stay param_dtype, losses float32.
      dtype='float32', param_dtype='float32',
  )
  c.decoding = dict(max_new_tokens=6, beam_size=1, alpha=0.6)
  return c


def _rgb_image_model(c: mlc.ConfigDict, image_size: int) -> None:
  c.input.image_size = image_size
  c.input.image_channels = 3
  c.input.augment = None  # spatial questions: no geometric jitter
  c.model.towers = dict(image=dict(
      name='vit', image_size=image_size, patch_size=8, channels=3,
      pool='mean', posemb='learned', **_TOWER,
      **library_base.layer_options()))


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  if arg not in NAMES:
    raise ValueError(f'Unknown dataset {arg!r}: use one of {NAMES}.')
  c = _base_config()
  c.dataset.name = arg
  c.total_steps = 20000
  c.batch_size = 64
  c.eval_batch_size = 64
  c.eval_every = 2000
  c.checkpoint_every = 2000
  c.eval_split = 'validation'
  if arg == 'librispeech':
    c.task = 'captioning'
    c.train_split, c.eval_split = 'train_clean100', 'dev_clean'
    c.input.fields = dict(audio='speech', audio_text='text',
                          audio_text_refs='text', label='speaker_id')
    c.input.num_frames = 1600  # 16 s at a 10 ms hop
    c.input.audio_augment = None
    c.input.audio_cache_size = 0  # utterances are rarely seen twice
    c.input.max_references = 1
    c.input.max_text_len = 96
    c.model.towers = dict(audio=dict(
        name='audio_transformer', num_frames=1600, num_mels=64,
        patch_size=(16, 16),  # 100 x 4 patches
        pool='mean', posemb='sincos2d', **_TOWER,
        **library_base.layer_options()))
    c.model.decoder.max_len = 97
    c.captioning = dict(targets=(('audio', 'audio_text'),))
    c.decoding.max_new_tokens = 96
    c.evals = dict(caption=dict(type='caption', wer_media=('audio',)))
    return c

  _rgb_image_model(c, image_size=64)

  if arg == 'clevr':
    c.task = 'vqa'
    qa = 'question_answer/'
    c.input.fields = dict(image='image', question=qa + 'question',
                          answer=qa + 'answer', answer_refs=qa + 'answer')
    c.input.aligned_fields = ('question', 'answer', 'answer_refs')
    c.input.aligned_items = 0
    c.input.max_references = 1
    c.input.max_text_len = 48
    c.model.decoder.max_len = 1 + 48 + 8
    c.vqa = dict(media=('image',), ablate_modalities=False)
    c.decoding.max_new_tokens = 8
    # CLEVR has one answer per question: the official VQA accuracy would
    # score 0 throughout (multimodal/evaluators/vqa.py), exact match is its
    # metric.
    c.evals = dict(vqa=dict(type='vqa', metric='exact_match'))
  else:
    c.task = 'captioning'
    c.input.fields = dict(image='image', image_text='captions/text',
                          image_text_refs='captions/text', label='image/id')
    c.input.max_references = 7
    c.input.max_text_len = 32
    c.model.decoder.max_len = 32
    c.captioning = dict(targets=(('image', 'image_text'),))
    c.decoding.max_new_tokens = 30
    # ptb=True (--config.evals.caption.ptb=True) adds coco-caption's
    # PTB-tokenised bleu4_ptb / cider_ptb, the numbers papers report (needs
    # java; multimodal/evaluators/captioning.py).
    c.evals = dict(caption=dict(type='caption', ptb=False))
  return c
