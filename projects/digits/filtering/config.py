r"""The contrastive digits experiment on the manifests of make_noisy.py.

  python -m multimodal.train \
      --config projects/digits/filtering/config.py:noisy,DATA \
      --workdir workdirs/filtering/noisy

Variants (`VARIANT[,DATA]`, DATA the make_noisy.py output folder, default
workdirs/filtering/data):
  noisy     trains on DATA/train_noisy.jsonl (40% of the captions swapped)
  filtered  trains on DATA/train_filtered.jsonl (what multimodal.filter
            kept of the noisy split)
  clean     trains on DATA/train_clean.jsonl (the tfds training split)
  random    trains on DATA/train_random.jsonl (a random 60% of the noisy
            split: as small as the filtered one, as noisy as the noisy one)
Every variant evaluates on DATA/test.jsonl, the clean test split, and is
otherwise projects/digits/configs/contrastive.py's default (SigLIP, 900
steps of batch 128; about 10 minutes on a quiet 2-core CPU).
"""
import os

import ml_collections as mlc

from projects.digits.configs import contrastive

TRAIN = {'noisy': 'train_noisy.jsonl', 'filtered': 'train_filtered.jsonl',
         'clean': 'train_clean.jsonl', 'random': 'train_random.jsonl'}
DEFAULT_DATA = 'workdirs/filtering/data'


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  variant, _, data = (arg or 'noisy').partition(',')
  if variant not in TRAIN:
    raise ValueError(f'Unknown variant {variant!r}: use one of '
                     f'{sorted(TRAIN)}, optionally followed by ,DATA_DIR.')
  data = data or DEFAULT_DATA
  c = contrastive.get_config()
  c.dataset = dict(source='jsonl', path_keys=('image', 'speech'),
                   splits=dict(train=os.path.join(data, TRAIN[variant]),
                               test=os.path.join(data, 'test.jsonl')))
  return c
