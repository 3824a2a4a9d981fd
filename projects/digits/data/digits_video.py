"""digits_video: handwritten digits in motion, the spoken digit and text.

Each record is a clip of motions.NUM_FRAMES (8) frames of 32x32 grayscale
pixels in which one of sklearn's handwritten 8x8 scans slides left, right,
up or down, turns clockwise or anticlockwise, grows or shrinks
(motions.py), with an espeak-ng clip of the same digit as its audio track
(`speech`), captions naming digit and motion ('a three moving to the left')
and four questions (video_captions.py): three answerable from the frames in
any order (the digit, the kind of motion, whether a second spoken digit
`qa_speech` matches it) and one that needs their order (the direction).

Splits follow digits_trimodal (the same scans and voices in each split):
  records  train: 3 per scan = 3,774; validation: 179; test: 360.
Motions are dealt from a reshuffled deck of the 8, so each split has about
as many of every motion. Building is deterministic (same bytes every
build); each clip's warp parameters come from a generator seeded by
(SEED, split, record index) alone. Keys are the ids "<split>/<index>".

Build without TensorFlow:
  builder = DigitsVideo(data_dir=d, file_format='array_record')
  builder.download_and_prepare()
  source = builder.as_data_source('train')
"""
import io

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from projects.digits.data import digits_trimodal
from projects.digits.data import motions
from projects.digits.data import sources
from projects.digits.data import video_captions
from projects.digits.data import voices

RECORDS_PER_SCAN = {'train': 3, 'validation': 1, 'test': 1}
SEED = 1


def encode_png(frame: np.ndarray) -> bytes:
  """PNG bytes of a uint8 [H, W] frame (grayscale, no metadata)."""
  buf = io.BytesIO()
  Image.fromarray(frame, mode='L').save(buf, format='PNG')
  return buf.getvalue()


def clip_rng(split: str, index: int) -> np.random.Generator:
  """The generator of record `index`'s warp parameters."""
  return np.random.default_rng([SEED, voices.SPLITS.index(split), index])


def generate_records(split: str, limit: int | None = None):
  """Yields (key, example) of a split (the first `limit` records if given);
  a pure function of the inputs."""
  images, labels = sources.load_images()
  rng = np.random.default_rng([SEED, voices.SPLITS.index(split)])
  clips = [c for c in sources.load_clips() if c['split'] == split]
  by_digit = [[clips[i] for i in rng.permutation(
      [j for j, c in enumerate(clips) if c['digit'] == d])] for d in range(10)]
  audio = {}

  def read(clip):
    if clip['file'] not in audio:
      audio[clip['file']] = (sources.SPEECH_DIR / clip['file']).read_bytes()
    return audio[clip['file']]

  used = [0] * 10  # per-digit position in the cycle over by_digit[d]
  deck = []
  index = 0
  for scan_index in digits_trimodal.split_image_indices()[split]:
    digit = int(labels[scan_index])
    for _ in range(RECORDS_PER_SCAN[split]):
      if limit is not None and index >= limit:
        return
      if not deck:
        deck = [motions.MOTIONS[i] for i in rng.permutation(
            len(motions.MOTIONS))]
      motion = deck.pop()
      clip = by_digit[digit][used[digit] % len(by_digit[digit])]
      used[digit] += 1
      # The clip for the 'match' question: the same digit half the time.
      if rng.random() < 0.5:
        qa_digit = digit
      else:
        qa_digit = (digit + int(rng.integers(1, 10))) % 10
      pool = by_digit[qa_digit]
      pick = int(rng.integers(len(pool)))
      if pool[pick]['file'] == clip['file']:
        pick = (pick + 1) % len(pool)  # a different recording
      qa_clip = pool[pick]
      frames = motions.render(images[scan_index], motion,
                              clip_rng(split, index))
      questions, answers, types = video_captions.qa(digit, motion, qa_digit)
      key = f'{split}/{index:05d}'
      yield key, {
          'id': key,
          'video': [encode_png(f) for f in frames],
          'label': digit,
          'motion': motions.MOTIONS.index(motion),
          'motion_name': motion,
          'motion_kind': motions.KIND_OF[motion],
          'video_captions': video_captions.video_captions(digit, motion),
          'speech': read(clip),
          'voice_id': voices.voice_id(clip['accent'], clip['variant'],
                                      clip['speed'], clip['pitch']),
          'qa_speech': read(qa_clip),
          'qa_speech_label': qa_digit,
          'questions': questions,
          'answers': answers,
          'question_types': types,
      }
      index += 1


class DigitsVideo(tfds.core.GeneratorBasedBuilder):
  """Moving handwritten digits, spoken digits and text (module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  # As in digits_trimodal: tfds would need importlib_resources for this.
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
            # 8 PNG frames, each 32x32 grayscale uint8.
            'video': tfds.features.Sequence(raw()),
            'label': int64(),
            'motion': int64(),  # index into motions.MOTIONS
            'motion_name': text(),
            'motion_kind': text(),
            'video_captions': texts(),
            'speech': raw(),  # OGG/Opus, 16 kHz mono, <= 0.96 s
            'voice_id': text(),
            'qa_speech': raw(),
            'qa_speech_label': int64(),
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
