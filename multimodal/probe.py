r"""Few-shot linear probes of a pretrained model's towers on frozen features.

  python -m multimodal.probe --pretrained exports/contrastive_digits \
      --data_dir data [--shots 1,5,10] [--random_init]

For each media tower (image, audio) of the export, pooled features of the
training split (the pool the shots come from, preprocessed without
augmentation) and of the test split are computed once; then
multimodal.evaluators.fewshot fits ridge probes for each k. --random_init
probes the same architecture at its random initialisation: the baseline
that shows what pretraining added.
"""
from __future__ import annotations

import json

from absl import app
from absl import flags
import jax
import numpy as np

from multimodal import pretrained
from multimodal.data import pipeline
from multimodal.evaluators import fewshot
from multimodal import registry
from multimodal.data import kinds
from multimodal.models import build_model
from multimodal.models import rng

def media_towers(model_config, input_cfg) -> dict[str, str]:
  """{input field: tower name} of the model's towers of non-text fields
  (texts have no class label to fit)."""
  towers = model_config.get('towers', {})
  inputs = model_config.get('inputs') or {t: t for t in towers}
  return {f: t for f, t in inputs.items() if t in towers and not
          registry.get('field', kinds.kind_of(f, input_cfg)).text}


def tower_features(model, config, split: str, media: str,
                   batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """(pooled features float32 [N, D], labels int32 [N]) of one split."""
  it, _, _ = pipeline.make_iterator(config, split, train=False,
                                    fields=[media, 'label'],
                                    batch_size=batch_size)
  tower = model.towers[media_towers(config.model, config.input)[media]]

  @jax.jit
  def pooled(x):
    return tower(x)[0].astype(np.float32)

  feats, labels = [], []
  for batch in it:
    feats.append(np.asarray(pooled(batch[media])))
    labels.append(batch['label'])
  return np.concatenate(feats), np.concatenate(labels)


def probe(path: str, data_dir: str | None, shots=(1, 5, 10), *,
          random_init: bool = False, repeats: int = 5,
          train_split: str = 'train', test_split: str = 'test') -> dict:
  """{'<media>/<k>shot': test accuracy} for each media tower of `path`."""
  export = pretrained.load_pretrained(path)
  config = export.config
  if config is None:
    raise ValueError(f'{path} has no config.json: probing needs its input '
                     'settings.')
  if data_dir:
    config.dataset.data_dir = data_dir
  if random_init:
    model = build_model(export.model_config, rngs=rng.Rngs(0))
  else:
    model = export.build_model()
  media = list(media_towers(config.model, config.input))
  if not media:
    raise ValueError(f'The model at {path} has no tower of a non-text field '
                     'to probe.')
  out = {}
  for m in media:
    train_x, train_y = tower_features(model, config, train_split, m)
    test_x, test_y = tower_features(model, config, test_split, m)
    for k, acc in fewshot.fewshot_accuracy(
        train_x, train_y, test_x, test_y, shots=shots,
        repeats=repeats).items():
      out[f'{m}/{k}shot'] = acc
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  if not args.pretrained:
    raise app.UsageError('--pretrained (an export directory) is required.')
  shots = tuple(int(s) for s in args.shots.split(','))
  result = probe(args.pretrained, args.data_dir, shots,
                 random_init=args.random_init, repeats=args.repeats)
  for k, v in result.items():
    print(f'{k}: {100 * v:.1f}%')
  print(json.dumps(result))


if __name__ == '__main__':
  flags.DEFINE_string('pretrained', None, 'Export (or workdir) to probe.')
  flags.DEFINE_string('data_dir', None, 'tfds data dir of the dataset.')
  flags.DEFINE_string('shots', '1,5,10', 'Comma-separated examples/class.')
  flags.DEFINE_integer('repeats', 5, 'Independent draws of the shots.')
  flags.DEFINE_bool('random_init', False,
                    'Probe the randomly initialised architecture instead.')
  app.run(main)
