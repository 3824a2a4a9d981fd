"""Tests of the built-in digits_trimodal dataset (two builds, ~5 s each)."""
import collections
import io

import numpy as np
from PIL import Image
import pytest
import sentencepiece as spm
import soundfile as sf

from projects.digits import data as digits_data
from projects.digits.data import voices

SPLIT_SIZES = {'train': 3774, 'validation': 179, 'test': 360}
WORDS = voices.WORDS


def _records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope='module')
def records(digits_data_dir):
  builder = digits_data.build(digits_data_dir)
  return {s: _records(builder, s) for s in voices.SPLITS}


def test_build_is_deterministic(records, tmp_path):
  other = digits_data.build(str(tmp_path))
  for split in voices.SPLITS:
    assert _records(other, split) == records[split], split


def test_split_sizes_and_ids(records):
  for split, recs in records.items():
    assert len(recs) == SPLIT_SIZES[split]
    ids = {r['id'].decode() for r in recs}
    assert len(ids) == len(recs)
    assert all(i.startswith(split + '/') for i in ids)
  # Train: 3 records per image, each with a different clip.
  by_image = collections.defaultdict(list)
  for r in records['train']:
    by_image[r['image']].append(r['voice_id'])
  assert all(len(set(v)) == len(v) for v in by_image.values())


def test_voices_are_disjoint_across_splits(records):
  def voice_parts(split):
    recs = records[split]
    ids = [r[k].decode() for r in recs for k in ('voice_id', 'qa_voice_id')]
    return {i.split('/')[0] for i in ids}, {i.split('/')[1] for i in ids}
  train_accents, train_variants = voice_parts('train')
  for split in ('validation', 'test'):
    accents, variants = voice_parts(split)
    assert not accents & train_accents
    assert not variants & train_variants
  assert voice_parts('test')[0] == {'en-gb-scotland', 'en-us-nyc'}


def test_feature_types(records):
  r = records['train'][0]
  for key in ('id', 'image', 'image_thickness', 'image_slant', 'image_size',
              'speech', 'speech_accent', 'speech_variant', 'voice_id',
              'qa_speech', 'qa_voice_id'):
    assert isinstance(r[key], bytes), key
  for key in ('label', 'speech_speed', 'speech_pitch', 'qa_speech_label'):
    assert isinstance(r[key], (int, np.integer)), key
  for key in ('image_captions', 'speech_captions', 'questions', 'answers',
              'question_types'):
    assert all(isinstance(x, bytes) for x in r[key]), key
  assert r['voice_id'].decode() == (
      f"{r['speech_accent'].decode()}/{r['speech_variant'].decode()}/"
      f"s{r['speech_speed']}/p{r['speech_pitch']}")


def test_image_decodes(records):
  for r in records['validation']:
    image = np.asarray(Image.open(io.BytesIO(r['image'])))
    assert image.shape == (8, 8) and image.dtype == np.uint8
    assert image.max() > 0


def test_speech_decodes(records):
  recs = records['validation'] + records['test'] + records['train'][:300]
  for r in recs:
    for key in ('speech', 'qa_speech'):
      x, sr = sf.read(io.BytesIO(r[key]), dtype='float32')
      assert sr == 16000 and x.ndim == 1 and x.dtype == np.float32
      assert 0 < len(x) <= int(0.96 * 16000)


def test_canonical_captions(records):
  for recs in records.values():
    for r in recs:
      word = WORDS[r['label']]
      assert r['image_captions'][0].decode() == f'a handwritten {word}'
      assert r['speech_captions'][0].decode() == f'the word {word}'
      assert len(r['image_captions']) >= 4
      assert len(r['speech_captions']) >= 4


def test_qa_consistent_with_labels(records):
  num_match = 0
  for r in records['train']:
    a, b = int(r['label']), int(r['qa_speech_label'])
    qa = {t.decode(): ans.decode()
          for t, ans in zip(r['question_types'], r['answers'])}
    assert len(r['questions']) == len(r['answers']) == len(qa) == 5
    assert qa['written'] == str(a) and qa['spoken'] == str(b)
    assert qa['match'] == ('yes' if a == b else 'no')
    assert qa['larger'] == ('written' if a > b else
                            'spoken' if b > a else 'equal')
    assert qa['sum'] == str(a + b)
    num_match += a == b
  assert 0.4 < num_match / len(records['train']) < 0.6


def test_tokenizer():
  sp = spm.SentencePieceProcessor(model_file=digits_data.TOKENIZER_PATH)
  assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
  text = 'the digit 7 written with a thin stroke, upright and small'
  ids = sp.encode(text)
  assert sp.unk_id() not in ids
  assert sp.decode(ids) == text
