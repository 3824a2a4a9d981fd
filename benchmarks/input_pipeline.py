r"""Examples/s the grain input pipeline delivers, against what the training
step consumes at the same batch.

  python benchmarks/input_pipeline.py --data_dir data [--batches 40]
  python benchmarks/input_pipeline.py --smoke     # CI: a few tiny batches

Pipelines (training mode: shuffling, augmentation):
  digits       the demo's trimodal batch (projects/digits/configs/
               contrastive.py: 16 px scans with affine jitter, log-mel of
               the spoken word with speech augmentation, two captions) at
               batch 128 with grain's 2 reading threads; the first pass
               reads, decodes and computes everything (cold caches), later
               ones reuse the records (input.cache_raw), decoded scans
               (input.image_cache_size) and log-mel (input.audio_cache_size)
               kept in memory
  digits, no caches  the same without the record and image caches (the
               audio cache kept): the before of those two
  digits, no threads  the same read in the consuming thread
               (input.num_threads = 0)
  image_text   224 px images + captions from a JSONL manifest
               (experiments/image_text.py; records written by
               multimodal.testing.datasets) at batch 32, with the
               experiment's threads and with none
The step's consumption is the trainer's own step on synthetic batches of
the same model and batch (benchmarks/train_step.py): the demo's model for
digits, ViT-B/16 SigLIP for image_text (unless --skip_b16, which it is in
smoke mode).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from benchmarks import train_step
from experiments import image_text
from multimodal import registry
from multimodal import tokenizer as tokenizer_lib
from multimodal.data import pipeline
from multimodal.testing import datasets
from projects.digits.configs import contrastive as digits_contrastive


def pipeline_rate(config, batches: int) -> tuple[float, float]:
  """(examples/s of the first `batches` batches, of the next `batches`)."""
  registry.import_modules(config.get('imports', ()))
  task = registry.get('task', config.task)(config)
  it, _, _ = pipeline.make_iterator(config, config.train_split, train=True,
                                    fields=task.fields,
                                    batch_size=config.batch_size)
  rates = []
  for _ in range(2):
    t = time.perf_counter()
    for _ in range(batches):
      next(it)
    rates.append(batches * config.batch_size / (time.perf_counter() - t))
  return rates[0], rates[1]


def image_text_config(workdir: str, n: int, size: int, batch: int):
  records = datasets.make_records('image', n, seed=0)
  path = datasets.write_jsonl(workdir, records, split='train')
  c = image_text.get_config('siglip')
  c.dataset.splits.train = path
  c.input.image_size = size
  c.batch_size = batch
  c.input.tokenizer = tokenizer_lib.train_tokenizer(
      [r['caption'] for r in records] * 4, os.path.join(workdir, 'spm.model'),
      vocab_size=64)
  return c


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data_dir', default='data',
                      help='tfds data dir of digits_trimodal (built if absent)')
  parser.add_argument('--batches', type=int, default=30)
  parser.add_argument('--skip_b16', action='store_true')
  parser.add_argument('--smoke', action='store_true')
  args = parser.parse_args(argv)
  if not flags.FLAGS.is_parsed():  # grain reads absl flags
    flags.FLAGS.mark_as_parsed()
  batches = 2 if args.smoke else args.batches
  rows = []

  c = digits_contrastive.get_config('tiny' if args.smoke else None)
  c.dataset.data_dir = args.data_dir
  step = train_step.run('digits', c.batch_size, 2 if args.smoke else 5, 1,
                        'float32')['examples_per_s']
  # The demo's pipeline, its before (no record/image caches) and the same
  # read in the consuming thread (input.num_threads = 0).
  uncached = c.copy_and_resolve_references()
  uncached.input.cache_raw = False
  uncached.input.image_cache_size = 0
  unthreaded = c.copy_and_resolve_references()
  unthreaded.input.num_threads = 0
  for name, config in (('digits, no caches', uncached), ('digits', c),
                       ('digits, no threads', unthreaded)):
    rows.append((name, c.batch_size, *pipeline_rate(config, batches), step))

  with tempfile.TemporaryDirectory() as tmp:
    n = 64 if args.smoke else 2000
    c = image_text_config(tmp, n, 64 if args.smoke else 224,
                          8 if args.smoke else 32)
    skip = args.skip_b16 or args.smoke
    step = float('nan') if skip else train_step.run(
        'siglip_b16', c.batch_size, 2, 1, 'float32')['examples_per_s']
    name = 'image_text 224px' if not args.smoke else 'image_text'
    for threads in (c.input.num_threads, 0):
      c.input.num_threads = threads
      rows.append((f'{name}, {threads} threads', c.batch_size,
                   *pipeline_rate(c, batches), step))

  print(f'{"pipeline":30s} {"batch":>5s} {"first pass ex/s":>16s} '
        f'{"later ex/s":>11s} {"step ex/s":>10s} {"ratio":>7s}')
  for name, batch, first, later, step in rows:
    print(f'{name:30s} {batch:5d} {first:16,.0f} {later:11,.0f} '
          f'{step:10,.1f} {later / step:7.1f}x')
  return {r[0]: dict(zip(('batch', 'first', 'later', 'step'), r[1:]))
          for r in rows}


if __name__ == '__main__':
  main()
