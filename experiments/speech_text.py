r"""Speech-text training on your own data: SigLIP (audio~text) or speech
recognition (audio -> text, scored by WER).

Data: a JSONL or CSV manifest (an audio file path relative to the manifest
and its transcript per line), webdataset tar shards (KEY.flac|wav + KEY.txt),
or LibriSpeech unpacked as published (SPLIT/SPEAKER/CHAPTER/*.flac +
*.trans.txt). Audio is decoded with soundfile (FLAC, WAV, OGG) at 16 kHz:
resample other rates offline first.

  # 1. A tokenizer for the transcripts:
  python -m multimodal.tokenizer train --data data/train.jsonl \
      --field text --vocab_size 1000 --out data/spm.model

  # 2a. Speech recognition on a JSONL manifest ({"audio": "clips/1.flac",
  #     "text": "hello world"} per line):
  python -m multimodal.train --config experiments/speech_text.py:asr \
      --workdir workdirs/my_asr \
      --config.dataset.splits.train=data/train.jsonl \
      --config.dataset.splits.val=data/val.jsonl \
      --config.input.tokenizer=data/spm.model

  # 2b. On LibriSpeech (splits are its directory names):
  python -m multimodal.train --config experiments/speech_text.py:asr,librispeech \
      --workdir workdirs/librispeech_asr --config.dataset.root=/data/LibriSpeech \
      --config.input.tokenizer=data/librispeech_spm.model

  # 2c. Audio-text SigLIP on webdataset shards (KEY.flac + KEY.txt):
  python -m multimodal.train --config experiments/speech_text.py:siglip,webdataset \
      --workdir workdirs/audio_siglip \
      --config.dataset.splits.train='shards/{00000..00009}.tar' \
      --config.dataset.splits.val='shards/00010.tar' \
      --config.input.tokenizer=data/spm.model

Clips longer than input.num_frames x 10 ms are cut (16 s by default here),
so a transcript may run past the audio kept; raise num_frames (and the
tower's num_frames, a multiple of its patch height) for longer clips.

Variants: siglip (default) | asr, then a format jsonl (default) | csv |
webdataset | librispeech, and tiny for a smoke run (see own_data.py).
Measured: the tiny variants train on generated sets in
tests/test_own_data.py (loss falls); nothing public was trained here.
"""
import ml_collections as mlc

from experiments import own_data
from multimodal import base_config as library_base

TASKS = ('siglip', 'asr')


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  task, fmt, flags = own_data.parse_variant(arg, TASKS)
  c = own_data.base_config('audio', fmt)
  tiny = 'tiny' in flags
  frames = 64 if tiny else 1600  # 10 ms frames
  c.input.num_frames = frames
  c.input.num_mels = 64 if tiny else 80
  c.input.audio_cache_size = 0  # large sets: clips are rarely seen twice
  c.input.max_text_len = 32 if tiny else 96
  c.total_steps = 20000
  c.batch_size = 64
  c.eval_batch_size = 64
  c.eval_every = 2000
  c.checkpoint_every = 2000
  vocab = 128 if tiny else 1000  # >= the tokenizer's (checked at start)
  audio = dict(name='audio_transformer', variant='mu/16' if tiny else 'S/16',
               num_frames=frames, num_mels=c.input.num_mels,
               pool='map', posemb='sincos2d', **library_base.layer_options())
  if task == 'siglip':
    c.task = 'contrastive'
    c.model = dict(
        name='contrastive',
        embed_dim=32 if tiny else 256,
        towers=dict(audio=audio,
                    text=dict(name='text_transformer',
                              variant='mu' if tiny else 'S',
                              vocab_size=vocab, max_len=c.input.max_text_len,
                              pool='eos', **library_base.layer_options())),
        inputs=dict(audio='audio', audio_text='text'),
        pairs=(('audio', 'audio_text'),),
        loss='sigmoid', temperature_init=10.0, bias_init=-10.0,
        # Mixed precision: --config.model.dtype=bfloat16 computes every part
        # that does not set its own dtype in bfloat16; parameters (and the
        # optimizer state) stay param_dtype, losses float32.
        dtype='float32', param_dtype='float32',
    )
    c.evals = dict(retrieval=dict(type='retrieval', ks=(1, 5, 10)))
  else:
    c.task = 'captioning'
    c.input.fields.audio_text_refs = c.input.fields.audio_text
    c.input.max_references = 1
    audio['pool'] = 'mean'
    c.model = dict(
        name='encoder_decoder',
        width=32 if tiny else 384,
        towers=dict(audio=audio),
        fusion=dict(name='concat'),
        decoder=dict(name='text_decoder', variant='mu' if tiny else 'S',
                     vocab_size=vocab, max_len=c.input.max_text_len + 1,
                     **library_base.layer_options()),
        dtype='float32', param_dtype='float32',  # as for siglip above
    )
    c.captioning = dict(targets=(('audio', 'audio_text'),))
    c.decoding = dict(max_new_tokens=c.input.max_text_len, beam_size=1,
                      alpha=0.6)
    c.evals = dict(caption=dict(type='caption', wer_media=('audio',)))
  if tiny:
    own_data.make_tiny(c)
    # Measured: the audio tower needs ~40 steps before the loss moves.
    c.total_steps, c.log_every = 80, 10
  return c
