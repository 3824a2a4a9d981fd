"""digits_trimodal: handwritten digits + spoken digits + text, as array_record.

Each record pairs a real handwritten 8x8 scan (sklearn's `load_digits`, 1,797
images) with an espeak-ng clip of the same digit (committed under speech/,
see make_speech.py / voices.py), captions of both derived from measured
attributes, and QA over the image and a second clip (`qa_speech`).

Splits (fixed):
  images   stratified by digit with a seed-0 numpy permutation per digit:
           round(70%) train, round(10%) validation, rest test
           -> 1,258 / 179 / 360 images.
  speech   from the split of the same name; accents and variants are disjoint
           across splits (voices.py): test voices are never heard in training.
  records  train: 3 per image (each with a different clip) = 3,774;
           validation: 179; test: 360.
Image<->clip pairing cycles through the split's clips of the digit in a
seeded order, so all clips are used about equally. Building is
deterministic (same bytes every build); keys are the ids "<split>/<index>".

Build without TensorFlow:
  builder = DigitsTrimodal(data_dir=d, file_format='array_record')
  builder.download_and_prepare()
  source = builder.as_data_source('train')
"""
import collections
import io

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from projects.digits.data import captions
from projects.digits.data import sources
from projects.digits.data import voices

SPLIT_FRACTIONS = {'train': 0.7, 'validation': 0.1}  # test: the rest
RECORDS_PER_IMAGE = {'train': 3, 'validation': 1, 'test': 1}
SEED = 0


def split_image_indices() -> dict[str, np.ndarray]:
  """Indices into sklearn's digits of each split (int64, ascending)."""
  _, labels = sources.load_images()
  rng = np.random.default_rng(SEED)
  parts = collections.defaultdict(list)
  for digit in range(10):
    idx = rng.permutation(np.flatnonzero(labels == digit))
    n_train = round(SPLIT_FRACTIONS['train'] * len(idx))
    n_val = round(SPLIT_FRACTIONS['validation'] * len(idx))
    parts['train'].append(idx[:n_train])
    parts['validation'].append(idx[n_train:n_train + n_val])
    parts['test'].append(idx[n_train + n_val:])
  return {s: np.sort(np.concatenate(parts[s])) for s in voices.SPLITS}


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of an int [8, 8] scan with values 0..16 (as uint8 0..255)."""
  pixels = np.round(image * 255 / 16).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels, mode='L').save(buf, format='PNG')  # no metadata
  return buf.getvalue()


def _clip_features(clip: dict) -> dict:
  return {
      'speech_captions': captions.speech_captions(
          clip['digit'], clip['accent'], clip['variant'], clip['speed'],
          clip['pitch']),
      'speech_accent': clip['accent'],
      'speech_variant': clip['variant'],
      'speech_speed': clip['speed'],
      'speech_pitch': clip['pitch'],
      'voice_id': voices.voice_id(clip['accent'], clip['variant'],
                                  clip['speed'], clip['pitch']),
  }


def generate_records(split: str):
  """Yields (key, example) of a split; pure function of the inputs."""
  images, labels = sources.load_images()
  attributes = captions.image_attributes(images, labels)
  rng = np.random.default_rng([SEED, voices.SPLITS.index(split)])
  clips = [c for c in sources.load_clips() if c['split'] == split]
  by_digit = [[clips[i] for i in rng.permutation(
      [j for j, c in enumerate(clips) if c['digit'] == d])] for d in range(10)]
  audio = {c['file']: (sources.SPEECH_DIR / c['file']).read_bytes()
           for c in clips}
  used = [0] * 10  # per-digit position in the cycle over by_digit[d]
  index = 0
  for image_index in split_image_indices()[split]:
    digit = int(labels[image_index])
    thickness, slant, size = attributes[image_index]
    png = encode_png(images[image_index])
    for _ in range(RECORDS_PER_IMAGE[split]):
      clip = by_digit[digit][used[digit] % len(by_digit[digit])]
      used[digit] += 1
      # Second clip for QA: the same digit about half the time.
      if rng.random() < 0.5:
        qa_digit = digit
      else:
        qa_digit = (digit + int(rng.integers(1, 10))) % 10
      pool = by_digit[qa_digit]
      pick = int(rng.integers(len(pool)))
      if pool[pick]['file'] == clip['file']:
        pick = (pick + 1) % len(pool)  # a different recording
      qa_clip = pool[pick]
      questions, answers, types = captions.qa(digit, qa_digit)
      key = f'{split}/{index:05d}'
      yield key, {
          'id': key,
          'image': png,
          'label': digit,
          'image_captions': captions.image_captions(digit, thickness, slant,
                                                    size),
          'image_thickness': thickness,
          'image_slant': slant,
          'image_size': size,
          'speech': audio[clip['file']],
          **_clip_features(clip),
          'qa_speech': audio[qa_clip['file']],
          'qa_speech_label': qa_digit,
          'qa_voice_id': voices.voice_id(qa_clip['accent'],
                                         qa_clip['variant'],
                                         qa_clip['speed'], qa_clip['pitch']),
          'questions': questions,
          'answers': answers,
          'question_types': types,
      }
      index += 1


class DigitsTrimodal(tfds.core.GeneratorBasedBuilder):
  """Handwritten digit scans, spoken digits and text (see module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  # tfds 4.9.10 derives code_path via `importlib_resources`, which is not a
  # dependency here (ModuleNotFoundError in download_and_prepare); this file's
  # own path is the value it would compute.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text
    raw = lambda: tfds.features.Tensor(shape=(), dtype=np.object_)
    int64 = lambda: tfds.features.Scalar(dtype=np.int64)
    texts = lambda: tfds.features.Sequence(tfds.features.Text())
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'id': text(),
            'image': raw(),  # PNG, 8x8 grayscale uint8
            'label': int64(),
            'image_captions': texts(),
            'image_thickness': text(),
            'image_slant': text(),
            'image_size': text(),
            'speech': raw(),  # OGG/Opus, 16 kHz mono, <= 0.96 s
            'speech_captions': texts(),
            'speech_accent': text(),
            'speech_variant': text(),
            'speech_speed': int64(),
            'speech_pitch': int64(),
            'voice_id': text(),
            'qa_speech': raw(),
            'qa_speech_label': int64(),
            'qa_voice_id': text(),
            'questions': texts(),
            'answers': texts(),
            'question_types': texts(),
        }),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html',
        citation=('UCI Optical Recognition of Handwritten Digits (Alpaydin & '
                  'Kaynak, 1998); speech synthesised with eSpeak NG.'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # all inputs are local
    return {split: self._generate_examples(split) for split in voices.SPLITS}

  def _generate_examples(self, split: str):
    yield from generate_records(split)
