r"""Builds digits_trimodal (or digits_video) into a tfds data directory.

  python -m projects.digits.data.build --data_dir=data
  python -m projects.digits.data.build --data_dir=data --dataset=digits_video

digits_trimodal takes about 5 s, digits_video about 15 s; a second call
finds the built copy and does nothing.
"""
from absl import app
from absl import flags

from projects.digits import data as digits_data

_DATA_DIR = flags.DEFINE_string('data_dir', 'data', 'tfds data directory.')
_DATASET = flags.DEFINE_enum('dataset', 'digits_trimodal',
                             sorted(digits_data.BUILDERS),
                             'Which dataset to build.')


def main(argv):
  del argv
  builder = digits_data.build(_DATA_DIR.value, _DATASET.value)
  for name, split in sorted(builder.info.splits.items()):
    print(f'{name}: {split.num_examples} records')
  print(f'{_DATASET.value} is ready in {builder.data_dir}')


if __name__ == '__main__':
  app.run(main)
