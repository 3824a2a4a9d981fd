r"""Image-text pretraining on your own data: SigLIP or CLIP, or captioning.

Data: a JSONL or CSV manifest (one record per line: an image path relative
to the manifest and a caption), webdataset tar shards in img2dataset's
layout (KEY.jpg + KEY.txt [+ KEY.json]), or COCO captions unpacked as
published (annotations/captions_*.json + image folders).

  # 1. A tokenizer for your captions (pad 0, unk 1, bos 2, eos 3):
  python -m multimodal.tokenizer train --data data/train.jsonl \
      --field caption --vocab_size 8000 --out data/spm.model

  # 2a. Train SigLIP on a JSONL manifest ({"image": "img/1.jpg",
  #     "caption": "a red bus"} per line; CSV: :siglip,csv with columns
  #     filepath, title):
  python -m multimodal.train --config experiments/image_text.py:siglip \
      --workdir workdirs/my_siglip \
      --config.dataset.splits.train=data/train.jsonl \
      --config.dataset.splits.val=data/val.jsonl \
      --config.input.tokenizer=data/spm.model

  # 2b. The same on webdataset shards (brace pattern or glob; an index of
  #     member offsets is built once and cached beside the shards):
  python -m multimodal.train \
      --config experiments/image_text.py:siglip,webdataset \
      --workdir workdirs/my_siglip \
      --config.dataset.splits.train='shards/{00000..00099}.tar' \
      --config.dataset.splits.val='shards/{00100..00101}.tar' \
      --config.input.tokenizer=data/spm.model

  # 2c. Captioning on COCO (tokenizer from annotations/captions_train2017.json):
  python -m multimodal.train --config experiments/image_text.py:caption,coco \
      --workdir workdirs/coco_caption --config.dataset.root=/data/coco \
      --config.input.tokenizer=data/coco_spm.model

Other keys: the record keys (--config.input.fields.image=jpg
--config.input.fields.image_text=txt), the model size
(--config.model.towers.image.variant=S/16, text .variant=S), the image size
(--config.input.image_size, and the tower's image_size), a held-out slice
of one split (--config.eval_split='train[-1000:]' with
--config.train_split='train[:-1000]'), on_error ('skip' by default:
corrupt records are counted per reason; the run fails past
input.max_skip_fraction).

Variants: siglip (default) | clip | caption, then a format jsonl (default) |
csv | webdataset | coco, and tiny for a smoke run (see own_data.py).
Evaluation: retrieval recall@1/5/10 image<->text on the eval split
(contrastive), CIDEr-D / BLEU-4 / exact match (caption).

Measured: the tiny variants train on the generated sets of
multimodal/testing/datasets.py in tests/test_own_data.py (loss falls);
nothing public was trained here (no network on the development machine).
"""
import ml_collections as mlc

from experiments import own_data
from multimodal import base_config as library_base

TASKS = ('siglip', 'clip', 'caption')


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  task, fmt, flags = own_data.parse_variant(arg, TASKS)
  c = own_data.base_config('image', fmt)
  tiny = 'tiny' in flags
  size = 32 if tiny else 224
  c.input.image_size = size
  c.input.augment = None
  c.total_steps = 10000
  c.batch_size = 256
  c.eval_batch_size = 256
  c.eval_every = 1000
  c.checkpoint_every = 1000
  vocab = 128 if tiny else 8000  # >= the tokenizer's (checked at start)
  image = own_data.image_tower(size, 'mu/8' if tiny else 'B/16')
  if task in ('siglip', 'clip'):
    c.task = 'contrastive'
    c.model = dict(
        name='contrastive',
        embed_dim=32 if tiny else 512,
        towers=dict(image=image,
                    text=dict(name='text_transformer',
                              variant='mu' if tiny else 'B',
                              vocab_size=vocab, max_len=c.input.max_text_len,
                              pool='eos', **library_base.layer_options())),
        inputs=dict(image='image', image_text='text'),
        pairs=(('image', 'image_text'),),
        loss='sigmoid' if task == 'siglip' else 'softmax',
        temperature_init=10.0,
        bias_init=-10.0 if task == 'siglip' else 0.0,
        # Mixed precision: --config.model.dtype=bfloat16 computes every part
        # that does not set its own dtype in bfloat16; parameters (and the
        # optimizer state) stay param_dtype, losses float32.
        dtype='float32', param_dtype='float32',
    )
    c.evals = dict(retrieval=dict(type='retrieval', ks=(1, 5, 10)))
  else:
    c.task = 'captioning'
    c.input.fields.image_text_refs = c.input.fields.image_text
    c.input.max_references = 7  # COCO has 5-7 captions per image
    image['pool'] = 'mean'  # tokens, not the pooled vector, feed the decoder
    c.model = dict(
        name='encoder_decoder',
        width=32 if tiny else 512,
        towers=dict(image=image),
        fusion=dict(name='concat'),
        decoder=dict(name='text_decoder', variant='mu' if tiny else 'S',
                     vocab_size=vocab, max_len=c.input.max_text_len,
                     **library_base.layer_options()),
        dtype='float32', param_dtype='float32',  # as for siglip above
    )
    c.captioning = dict(targets=(('image', 'image_text'),))
    c.decoding = dict(max_new_tokens=c.input.max_text_len - 1, beam_size=1,
                      alpha=0.6)
    c.evals = dict(caption=dict(type='caption'))
  if tiny:
    own_data.make_tiny(c)
  return c
