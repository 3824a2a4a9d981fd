"""Caches the indexes of webdataset shards before training, in parallel.

  python -m multimodal.data.sources.index_webdataset \
      'shards/{00000..09999}.tar' [--index_dir DIR] [--processes 16]

Opening a webdataset source indexes any shard without a cached index (about
50 us a tar member); for thousands of shards do it once here instead.
"""
from __future__ import annotations

import argparse

from multimodal.data.sources import webdataset


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('patterns', nargs='+',
                      help='brace patterns or globs naming the shards')
  parser.add_argument('--index_dir', default=None,
                      help='as config.dataset.index_dir (default: next to '
                      'each shard)')
  parser.add_argument('--processes', type=int, default=None,
                      help='worker processes (default: one per CPU)')
  args = parser.parse_args(argv)
  built, cached = webdataset.index_shards(args.patterns, args.index_dir,
                                          args.processes)
  print(f'Indexed {built} shards; {cached} were already cached.')


if __name__ == '__main__':
  main()
