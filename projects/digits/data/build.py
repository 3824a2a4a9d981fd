r"""Builds digits_trimodal into a tfds data directory.

  python -m projects.digits.data.build --data_dir=data

Takes about 5 s; a second call finds the built copy and does nothing.
"""
from absl import app
from absl import flags

from projects.digits import data as digits_data

_DATA_DIR = flags.DEFINE_string('data_dir', 'data', 'tfds data directory.')


def main(argv):
  del argv
  builder = digits_data.build(_DATA_DIR.value)
  for name, split in sorted(builder.info.splits.items()):
    print(f'{name}: {split.num_examples} records')
  print(f'digits_trimodal is ready in {builder.data_dir}')


if __name__ == '__main__':
  app.run(main)
