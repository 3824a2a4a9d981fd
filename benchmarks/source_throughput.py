"""Read rates of the data-source formats on the same image-caption records.

  python benchmarks/source_throughput.py [--num_records 10000]
      [--workdir /tmp/source_throughput] [--seed 0]

Writes the same records (multimodal.testing.datasets: 32x32 PNG + caption,
about 130 bytes of PNG each) as
  arrayrecord  one ArrayRecord file (group_size:1, as tfds writes) of
               pickled record dicts, read through grain's
               ArrayRecordDataSource + pickle.loads: stands for today's
               tfds path (tfds's own feature decoding is not included)
  jsonl        DIR/train.jsonl + one PNG file per record
  csv          DIR/train.tsv (open_clip layout) + one PNG file per record
  webdataset   tar shards of 1,000 records (img2dataset layout)
  coco         COCO captions layout (annotations JSON + image directory)
then, on one process and thread, times opening each source the first time
(building its index: line/row offsets, tar headers, the COCO JSON),
reading every record through `source[i]` in shuffled order, and
reading + decoding (Pillow decode to a uint8 array, caption .encode()).
Files were just written, so they are in the page cache: the rates measure
per-record overhead, not the disk. Also times building the webdataset
index on first open against reusing the cached one.

Printed on the development machine (2 CPU cores shared with other jobs,
load average about 4 during the run, so rates vary by +-30% between runs;
the order is what holds):

  10000 records, shuffled order, one thread, best of 3 passes:
    format        write s  open s  read rec/s  read+decode rec/s    MiB
    arrayrecord      0.16   0.011      36,465             12,217    3.3
    jsonl            4.22   0.004      47,025             10,988    3.2
    csv              6.46   0.013      33,426              8,633    1.9
    webdataset       1.03   1.450      76,409             13,144   30.1
    coco             5.18   0.129      50,694             10,167    4.4
    webdataset index, 10 shards: built in 1.238 s on first open, reused in
    0.108 s

Reading is not the bottleneck for any format: decoding even a 32x32 PNG
costs more than the read, and real images cost far more. Webdataset pays
its index once (about 50 us a tar member; cached after) and 3 tar headers
of 512 bytes a record on disk (hence 30 MiB for tiny images); the
file-per-record formats pay file creation when written.
"""
from __future__ import annotations

import argparse
import glob
import io
import os
import pathlib
import pickle
import shutil
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# pylint: disable=g-import-not-at-top,wrong-import-position
from multimodal.data import sources
from multimodal.testing import datasets


def _parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_records', type=int, default=10000)
  parser.add_argument('--workdir', default='/tmp/source_throughput',
                      help='where the datasets are written (emptied first)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--repeats', type=int, default=3,
                      help='timed passes per measurement; the best is shown '
                      '(the machine may be shared)')
  return parser.parse_args()


class _PickledArrayRecord:
  """grain's ArrayRecordDataSource of pickled dicts, as a source."""

  def __init__(self, path: str):
    import grain
    self.source = grain.sources.ArrayRecordDataSource([path])

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return pickle.loads(self.source[i])


def _write_arrayrecord(path: str, records) -> None:
  from array_record.python import array_record_module
  writer = array_record_module.ArrayRecordWriter(path, 'group_size:1')
  for r in records:
    writer.write(pickle.dumps({k: r[k] for k in ('image', 'caption',
                                                 'captions', 'label')}))
  writer.close()


def _disk_bytes(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def _decode(image: bytes, text: str):
  pixels = np.asarray(Image.open(io.BytesIO(image)).convert('RGB'))
  return pixels, text.encode('utf-8')


def _rate(fn, order, repeats: int) -> float:
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    for i in order:
      fn(int(i))
    best = min(best, time.perf_counter() - start)
  return len(order) / best


def _best_time(fn, repeats: int) -> tuple[float, object]:
  best, out = float('inf'), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return best, out


def main():
  args = _parse_args()
  work = args.workdir
  shutil.rmtree(work, ignore_errors=True)
  os.makedirs(work)
  n = args.num_records

  start = time.perf_counter()
  records = datasets.image_caption_records(n, args.seed)
  print(f'Made {n} records in {time.perf_counter() - start:.1f} s; writing '
        f'them in 5 formats under {work}')

  write = {}
  start = time.perf_counter()
  _write_arrayrecord(os.path.join(work, 'train.array_record'), records)
  write['arrayrecord'] = time.perf_counter() - start
  start = time.perf_counter()
  manifest = datasets.write_jsonl(os.path.join(work, 'jsonl'), records)
  write['jsonl'] = time.perf_counter() - start
  start = time.perf_counter()
  table = datasets.write_csv(os.path.join(work, 'csv'), records)
  write['csv'] = time.perf_counter() - start
  start = time.perf_counter()
  pattern = datasets.write_webdataset(os.path.join(work, 'webdataset'),
                                      records, per_shard=1000)
  write['webdataset'] = time.perf_counter() - start
  start = time.perf_counter()
  coco = datasets.write_coco(os.path.join(work, 'coco'), 'train2017',
                             records)
  write['coco'] = time.perf_counter() - start

  # Each format: (where, opener, image key, text of a record).
  formats = {
      'arrayrecord': (os.path.join(work, 'train.array_record'),
                      lambda: _PickledArrayRecord(
                          os.path.join(work, 'train.array_record')),
                      'image', lambda r: r['caption']),
      'jsonl': (os.path.join(work, 'jsonl'), lambda: sources.open_source(
          {'source': 'jsonl', 'splits': {'train': manifest},
           'path_keys': 'image'}, 'train'), 'image', lambda r: r['caption']),
      'csv': (os.path.join(work, 'csv'), lambda: sources.open_source(
          {'source': 'csv', 'splits': {'train': table},
           'path_keys': 'filepath'}, 'train'), 'filepath',
              lambda r: r['title']),
      'webdataset': (os.path.join(work, 'webdataset'),
                     lambda: sources.open_source(
                         {'source': 'webdataset',
                          'splits': {'train': pattern}}, 'train'),
                     'png', lambda r: r['txt']),
      'coco': (coco, lambda: sources.open_source(
          {'source': 'coco_captions', 'root': coco}, 'train2017'),
               'image', lambda r: r['captions'][0]),
  }
  # Imports on first use (the registry's builtins, grain) are not opening.
  import grain  # pylint: disable=unused-import
  from multimodal import registry
  registry.names('source')
  order = np.random.default_rng(args.seed).permutation(n)
  rows = []
  for name, (where, opener, image_key, text_of) in formats.items():
    start = time.perf_counter()
    source = opener()
    opened = time.perf_counter() - start
    assert len(source) == n, (name, len(source))
    read = _rate(lambda i, s=source: s[i], order, args.repeats)

    def read_decode(i, s=source, k=image_key, t=text_of):
      record = s[i]
      return _decode(record[k], t(record))

    decoded = _rate(read_decode, order, args.repeats)
    rows.append((name, write[name], opened, read, decoded,
                 _disk_bytes(where) / 2 ** 20))

  wds_dir = os.path.join(work, 'webdataset', 'train')

  def open_fresh():
    for index in glob.glob(os.path.join(wds_dir, '*.index.json')):
      os.remove(index)
    return formats['webdataset'][1]()

  build_s, built = _best_time(open_fresh, args.repeats)
  reuse_s, reused = _best_time(formats['webdataset'][1], args.repeats)
  assert built.num_built == reused.num_reused == len(built.shards)

  print(f'\n{n} records, shuffled order, one thread, best of '
        f'{args.repeats} passes:')
  print(f'  {"format":<12} {"write s":>8} {"open s":>7} {"read rec/s":>11} '
        f'{"read+decode rec/s":>18} {"MiB":>6}')
  for name, w, o, r, d, mib in rows:
    print(f'  {name:<12} {w:8.2f} {o:7.3f} {r:11,.0f} {d:18,.0f} '
          f'{mib:6.1f}')
  print(f'  webdataset index, {len(built.shards)} shards: built in '
        f'{build_s:.3f} s on first open, reused in {reuse_s:.3f} s')


if __name__ == '__main__':
  main()
