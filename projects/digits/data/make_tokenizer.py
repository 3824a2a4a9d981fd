"""Trains the shipped sentencepiece tokenizer on all text of digits_trimodal.

    python -m projects.digits.data.make_tokenizer

The corpus is every caption, question and answer the builder can produce:
image captions of all 1,797 scans, speech captions of all committed clips,
and QA for all 100 (written, spoken) digit pairs, de-duplicated and sorted.
BPE model, vocab 320, ids pad=0 unk=1 bos=2 eos=3, digits split into
single-digit pieces; single-threaded and unshuffled, so it is deterministic.
Writes tokenizer.model (+ tokenizer.vocab) next to this file and checks that
every text round-trips and each digit 0-9 is its own piece.

    python -m projects.digits.data.make_tokenizer video

trains digits_video's tokenizer the same way (video_tokenizer.model, vocab
VIDEO_VOCAB_SIZE) on every caption, question and answer of
video_captions.all_texts().
"""
import os
import sys

import sentencepiece as spm

from projects.digits.data import captions
from projects.digits.data import sources

VOCAB_SIZE = 320
VIDEO_VOCAB_SIZE = 256
_HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_PREFIX = os.path.join(_HERE, 'tokenizer')
VIDEO_MODEL_PREFIX = os.path.join(_HERE, 'video_tokenizer')


def corpus() -> list[str]:
  """Every distinct text of the dataset, sorted."""
  images, labels = sources.load_images()
  texts = set()
  for digit, attrs in zip(labels, captions.image_attributes(images, labels)):
    texts.update(captions.image_captions(int(digit), *attrs))
  for clip in sources.load_clips():
    texts.update(captions.speech_captions(
        clip['digit'], clip['accent'], clip['variant'], clip['speed'],
        clip['pitch']))
  for written in range(10):
    for spoken in range(10):
      questions, answers, _ = captions.qa(written, spoken)
      texts.update(questions + answers)
  return sorted(texts)


def check(model_file: str, texts: list[str]) -> None:
  """Raises if a text does not round-trip or a digit is not its own piece."""
  sp = spm.SentencePieceProcessor(model_file=model_file)
  for text in texts:
    if sp.decode(sp.encode(text)) != text:
      raise ValueError(f'round trip failed: {text!r}')
  for digit in range(10):
    pieces = sp.encode(f'the digit {digit} and {digit}{digit}', out_type=str)
    if pieces.count(str(digit)) + pieces.count(f'\u2581{digit}') != 3:
      raise ValueError(f'digit {digit} is not a separate piece: {pieces}')


def train(texts: list[str], model_prefix: str, vocab_size: int) -> None:
  """Trains, writes and checks <model_prefix>.model on `texts`."""
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_prefix=model_prefix,
      vocab_size=vocab_size,
      model_type='bpe',
      pad_id=0, unk_id=1, bos_id=2, eos_id=3,
      split_digits=True,
      character_coverage=1.0,
      # Identity normalisation: exact round trips, and no 240 KB NFKC table.
      normalization_rule_name='identity',
      num_threads=1,
      shuffle_input_sentence=False,
      input_sentence_size=0,
      minloglevel=2,
  )
  check(model_prefix + '.model', texts)
  print(f'{len(texts)} distinct texts; wrote {model_prefix}.model')


def main(argv):
  which = argv[1:] or ['trimodal']
  if which == ['trimodal']:
    train(corpus(), MODEL_PREFIX, VOCAB_SIZE)
  elif which == ['video']:
    from projects.digits.data import video_captions  # pylint: disable=g-import-not-at-top
    train(video_captions.all_texts(), VIDEO_MODEL_PREFIX, VIDEO_VOCAB_SIZE)
  else:
    raise SystemExit(f'usage: python -m projects.digits.data.make_tokenizer '
                     f'[video]; got {argv[1:]}')


if __name__ == '__main__':
  main(sys.argv)
