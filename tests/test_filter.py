"""CLIP-score filtering (multimodal/filter): scores, cuts, outputs, errors.

A tiny randomly initialised image+audio+text contrastive model is exported
(multimodal.testing.exports); its scores are checked against `model.embed`
directly.
"""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

import multimodal
from multimodal import base_config
from multimodal import filter as filter_lib
from multimodal.data import pipeline
from multimodal.data import sources
from multimodal.filter import cut
from multimodal.filter import data as data_lib
from multimodal.filter import pairs as pairs_lib
from multimodal.testing import datasets
from multimodal.testing import exports
from projects.digits import data as digits_data

pytestmark = pytest.mark.usefixtures('fast_compiles')


def _tower(name, **kw):
  return dict(name=name, width=16, depth=1, num_heads=2, mlp_ratio=2,
              **kw)


def _config(with_text=True):
  c = base_config.base()
  c.task = 'contrastive'
  c.input.fields = dict(image='image', image_text='caption', audio='audio',
                        audio_text='text')
  c.input.tokenizer = digits_data.TOKENIZER_PATH
  c.input.image_size = 16
  c.input.image_channels = 3
  c.input.max_text_len = 16
  c.input.num_frames = 32
  c.input.num_mels = 16
  towers = dict(
      image=_tower('vit', image_size=16, patch_size=8, channels=3,
                   pool='map', posemb='learned'),
      audio=_tower('audio_transformer', num_frames=32, num_mels=16,
                   patch_size=(16, 16), pool='map', posemb='sincos2d'))
  inputs = dict(image='image', audio='audio')
  pairs = [('image', 'audio')]
  if with_text:
    towers['text'] = _tower('text_transformer', vocab_size=320, max_len=16,
                            causal=False, pool='eos')
    inputs.update(image_text='text', audio_text='text')
    pairs = [('image', 'image_text'), ('audio', 'audio_text'),
             ('image', 'audio')]
  else:
    c.input.fields = dict(image='image', audio='audio')
  c.model = dict(name='contrastive', embed_dim=8, towers=towers,
                 inputs=inputs, pairs=pairs, loss='sigmoid')
  return c


@pytest.fixture(scope='module')
def export(tmp_path_factory):
  return exports.untrained_export(
      _config(), str(tmp_path_factory.mktemp('export') / 'export'))


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  """A jsonl manifest of 24 shape images (captions: lists of phrasings) with
  two undecodable images, an empty caption, a missing file and a cut
  line."""
  records = datasets.corrupt(datasets.image_caption_records(24, seed=1),
                             seed=3, truncated=1, random_bytes=1,
                             empty_text=1, missing_file=1, bad_json=1)
  root = str(tmp_path_factory.mktemp('images'))
  path = datasets.write_jsonl(root, records)
  return path, records


def _dataset(path, key='image'):
  return data_lib.dataset_config(f'jsonl:{path}', 'train', path_keys=[key])


def _cosines(export_path, path, media, text_key, field, text_field):
  """Mean cosine per usable record, computed with model.embed directly."""
  export = multimodal.load_pretrained(export_path)
  model = export.build_model()
  cfg = mlc.ConfigDict(export.config.input.to_dict())
  cfg.fields = {field: media, text_field: text_key}
  source = sources.open_source(_dataset(path, media), 'train')
  prep = pipeline.Preprocess(cfg, [field], train=False)
  out = {}
  for i in range(len(source)):
    try:
      record = source[i]
      x = prep(record, np.random.default_rng(0))
    except sources.RecordError:
      continue  # a cut line, a missing file
    except pipeline.DataError:
      continue  # an undecodable image
    texts = record[text_key]
    texts = texts if isinstance(texts, list) else [texts]
    if not all(t.strip() for t in texts):
      continue
    m = np.asarray(model.embed(field, jnp.asarray(x[field][None])))[0]
    ids = np.stack([prep.tokenizer(t) for t in texts])
    t = np.asarray(model.embed(text_field, jnp.asarray(ids)))
    out[i] = float(np.mean(t @ m))
  return out


def test_scores_are_the_embeddings_cosine(export, images, tmp_path):
  path, records = images
  out = str(tmp_path / 'kept.jsonl')
  result = filter_lib.filter_data(
      export, _dataset(path), 'train', out, keep_fraction=0.5,
      pairs='image:captions', scores_path=str(tmp_path / 'all.jsonl'))
  expected = _cosines(export, path, 'image', 'captions', 'image',
                      'image_text')
  got = dict(zip(result.scores.indices.tolist(), result.record_scores))
  assert sorted(got) == sorted(expected)
  for i, score in got.items():
    np.testing.assert_allclose(score, expected[i], rtol=1e-5, atol=1e-6)
  # Corrupt records are counted by reason, and named in the scores file.
  s = result.summary
  assert s['records'] == 24 and s['scored'] == 19 and s['skipped'] == 5
  assert s['skipped_by_reason'] == {'bad_image': 2, 'bad_json': 1,
                                    'empty_text': 1, 'missing_file': 1}
  bad = {i for i, r in enumerate(records) if r['__corrupt__']}
  rows = [json.loads(line) for line in open(tmp_path / 'all.jsonl')]
  assert [r['index'] for r in rows] == list(range(24))
  assert {r['index'] for r in rows if 'skipped' in r} == bad
  assert all('Record train.jsonl:' in r['error'] for r in rows
             if 'skipped' in r)
  # keep_fraction 0.5 of 19 scored: round(9.5) = 10, the 10 best.
  kept = [json.loads(line) for line in open(out)]
  assert len(kept) == s['kept'] == 10
  best = sorted(got.values(), reverse=True)[:10]
  np.testing.assert_allclose(sorted(r['clip_score'] for r in kept),
                             sorted(best), atol=1e-6)
  assert s['cut'] == pytest.approx(best[-1])
  assert os.path.getsize(tmp_path / 'kept.hist.png') > 1000
  assert os.path.exists(tmp_path / 'kept.summary.json')


def test_output_manifest_is_trainable_input(export, images, tmp_path):
  """The kept records load through the trainer's jsonl source and
  pipeline, with the same image bytes as the input manifest."""
  path, records = images
  sub = tmp_path / 'elsewhere'
  out = str(sub / 'kept.jsonl')
  result = filter_lib.filter_data(export, _dataset(path), 'train', out,
                                  threshold=-1.0, pairs='image:caption',
                                  histogram_path=None)
  assert result.summary['kept'] == 19  # every scored record: cos >= -1
  assert result.summary['path_keys'] == ['image']
  assert '--config.dataset.path_keys' in result.summary['train_flags']
  cfg = mlc.ConfigDict({'source': 'jsonl', 'splits': {'train': out},
                        'path_keys': ('image',)})
  source = sources.open_source(cfg, 'train')
  assert len(source) == 19
  report = sources.validate(source, ['image'], ['caption'])
  assert report.ok, report.summary()
  for i in range(len(source)):
    record = source[i]
    line = int(record['source_key'].removeprefix('train.jsonl:'))
    assert record['image'] == records[line - 1]['image']
  # ... and through the input pipeline as the trainer reads it.
  config = _config()
  config.dataset = dict(cfg)
  config.input.fields = dict(image='image', image_text='caption')
  it, _, n = pipeline.make_iterator(config, 'train', train=False,
                                    fields=['image', 'image_text'],
                                    batch_size=8)
  batch = next(it)
  assert n == 19 and batch['image'].shape == (8, 16, 16, 3)


def test_threshold_and_ties(export, images, tmp_path):
  path, _ = images
  out = str(tmp_path / 'kept.jsonl')
  base = filter_lib.filter_data(export, _dataset(path), 'train', out,
                                keep_fraction=1.0, pairs='image:caption',
                                histogram_path=None)
  scores = base.record_scores
  t = float(np.sort(scores)[5])
  result = filter_lib.filter_data(export, _dataset(path), 'train', out,
                                  threshold=t, pairs='image:caption',
                                  histogram_path=None)
  assert result.summary['kept'] == int((scores >= t).sum()) == 14
  # Ties at the cut: the earlier record is kept, exactly k records.
  tied = np.array([0.5, 0.9, 0.5, 0.5, 0.1], np.float32)
  kept, c = cut.select(tied, keep_fraction=0.5)  # round(2.5) = 3
  assert kept.tolist() == [True, True, True, False, False] and c == 0.5
  kept, c = cut.select(tied, threshold=0.5)
  assert kept.tolist() == [True, True, True, True, False]
  assert cut.keep_count(7, 0.5) == 4 and cut.keep_count(10, 0.06) == 1


def test_audio_pairs_and_export_pairs(export, tmp_path):
  records = datasets.speech_records(12, seed=2)
  path = datasets.write_jsonl(str(tmp_path), records)
  dataset = data_lib.dataset_config(path, 'train', path_keys=['audio'])
  # The export's own pairs read its record keys 'audio' and 'text'.
  result = filter_lib.filter_data(
      export, dataset, 'train', str(tmp_path / 'kept.jsonl'),
      keep_fraction=0.25, pairs='audio:text', histogram_path=None)
  expected = _cosines(export, path, 'audio', 'text', 'audio', 'audio_text')
  np.testing.assert_allclose(result.record_scores,
                             [expected[i] for i in range(12)], rtol=1e-5,
                             atol=1e-6)
  assert result.summary['kept'] == 3
  chosen = pairs_lib.resolve(None, _config().model.to_dict(),
                             _config().input)
  assert [p.name for p in chosen] == ['image:caption', 'audio:text']


@pytest.mark.parametrize('fmt', ['csv', 'webdataset', 'coco_captions',
                                 'librispeech'])
def test_every_source_kind_in_trainable_jsonl_out(export, tmp_path, fmt):
  """Each format filters to a manifest the jsonl source reads back with
  the same media bytes and texts (paths rewritten, or media written)."""
  root = str(tmp_path / 'src')
  keys = []
  if fmt == 'csv':  # columns filepath, title
    where, split, pairs = datasets.write_csv(root, n=8), 'train', (
        'image=filepath:title')
    keys = ['filepath']
  elif fmt == 'webdataset':  # members KEY.png, KEY.txt, KEY.json
    where, split, pairs = datasets.write_webdataset(
        root, n=8, per_shard=3), 'train', 'image=png:txt'
  elif fmt == 'coco_captions':
    where, split, pairs = datasets.write_coco(root, 'val2017', n=8), (
        'val2017'), 'image:captions'
  else:
    where, split, pairs = datasets.write_librispeech(
        root, 'dev-clean', n=8), 'dev-clean', 'audio:text'
  spec = f'{fmt}:{where}'
  dataset = data_lib.dataset_config(spec, split, path_keys=keys)
  out = str(tmp_path / 'out' / 'kept.jsonl')
  result = filter_lib.filter_data(export, dataset, split, out, threshold=-1,
                                  pairs=pairs, histogram_path=None)
  assert result.summary['scored'] == result.summary['kept'] == 8
  media, text = pairs.split(':')
  media, text = media.split('=')[-1], text.split('=')[-1]
  assert media in result.summary['path_keys']
  written = sources.open_source(
      {'source': 'jsonl', 'splits': {'train': out},
       'path_keys': tuple(result.summary['path_keys'])}, 'train')
  original = sources.open_source(dataset, split)
  for i in range(8):
    assert written[i][media] == original[i][media]
    assert written[i][text] == original[i][text]
    assert written[i]['source_key'] == original[i]['__key__']


def test_tfds_records_are_written_as_media_files(export, digits_data_dir,
                                                 tmp_path):
  """A source holding bytes (the digits tfds data) comes out as a manifest
  naming media files, one file per distinct content."""
  out = str(tmp_path / 'digits.jsonl')
  dataset = data_lib.dataset_config(
      'digits_trimodal', 'test[:12]', options=[f'data_dir={digits_data_dir}'])
  result = filter_lib.filter_data(
      export, dataset, 'test[:12]', out, keep_fraction=0.5,
      pairs='image=image:image_text=image_captions,'
            'audio=speech:audio_text=speech_captions', histogram_path=None)
  s = result.summary
  assert s['scored'] == 12 and s['kept'] == 6
  assert s['path_keys'] == ['image', 'qa_speech', 'speech']
  kept = [json.loads(line) for line in open(out)]
  assert set(kept[0]['clip_score_pairs']) == {'image:image_captions',
                                              'speech:speech_captions'}
  assert isinstance(kept[0]['image_captions'][0], str)
  assert kept[0]['clip_score'] == pytest.approx(
      np.mean(list(kept[0]['clip_score_pairs'].values())), abs=2e-6)
  source = sources.open_source(
      {'source': 'jsonl', 'splits': {'train': out},
       'path_keys': tuple(s['path_keys'])}, 'train')
  original = sources.open_source(
      {'source': 'digits_trimodal', 'data_dir': digits_data_dir}, 'test')
  by_id = {original[i]['id'].decode(): original[i] for i in range(12)}
  for i in range(len(source)):
    record = source[i]
    assert record['image'] == by_id[record['id']]['image']
    assert record['speech'] == by_id[record['id']]['speech']


def test_clear_errors(export, images, tmp_path):
  path, _ = images
  out = str(tmp_path / 'kept.jsonl')
  with pytest.raises(ValueError, match='exactly one of.*got neither'):
    filter_lib.filter_data(export, _dataset(path), 'train', out)
  with pytest.raises(ValueError, match='exactly one of.*got both'):
    filter_lib.filter_data(export, _dataset(path), 'train', out,
                           keep_fraction=0.5, threshold=0.1)
  with pytest.raises(ValueError, match=r"No record has the key 'title'"):
    filter_lib.filter_data(export, _dataset(path), 'train', out,
                           keep_fraction=0.5, pairs='image:title')
  with pytest.raises(ValueError, match="'jpg' is not a media field.*"
                     'e.g. [a-z]+=jpg'):
    filter_lib.filter_data(export, _dataset(path), 'train', out,
                           keep_fraction=0.5, pairs='jpg:caption')
  no_text = exports.untrained_export(_config(with_text=False),
                                     str(tmp_path / 'no_text'))
  with pytest.raises(ValueError, match='has no text tower'):
    filter_lib.filter_data(no_text, _dataset(path), 'train', out,
                           keep_fraction=0.5)
  with pytest.raises(ValueError, match='path_keys'):  # paths, not bytes
    filter_lib.filter_data(export, data_lib.dataset_config(path, 'train'),
                           'train', out, keep_fraction=0.5,
                           pairs='image:caption')
  with pytest.raises(ValueError, match='cannot tell the format'):
    data_lib.dataset_config('data/train.txt', 'train')
  assert not os.path.exists(out)


def test_command_line(export, images, tmp_path):
  path, _ = images
  out = str(tmp_path / 'kept.jsonl')
  cmd = [sys.executable, '-m', 'multimodal.filter', f'--pretrained={export}',
         f'--data=jsonl:{path}', '--path_keys=image', '--pairs=image:caption',
         '--keep_fraction=0.5', f'--out={out}']
  run = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr
  assert 'Kept 10' in run.stdout and 'bad_image: 2' in run.stdout
  assert os.path.exists(tmp_path / 'kept.hist.png')
  run = subprocess.run(cmd + ['--threshold=0.2'], capture_output=True,
                       text=True, check=False)
  assert run.returncode == 2
  assert run.stderr.startswith('error: Give exactly one of --keep_fraction')


def test_noisy_digits_swap_and_report_helpers():
  """The experiment's swap is a seeded derangement of 40% of the records;
  its AUC helper agrees with counting pairs."""
  # pylint: disable=g-import-not-at-top
  from projects.digits.filtering import config as exp_config
  from projects.digits.filtering import make_noisy
  from projects.digits.filtering import report
  donor = make_noisy.swap_plan(1000, 0.4, seed=0)
  moved = donor != np.arange(1000)
  assert moved.sum() == 400
  assert sorted(donor[moved]) == sorted(np.flatnonzero(moved))  # a permutation
  assert (make_noisy.swap_plan(1000, 0.4, seed=0) == donor).all()
  subset = make_noisy.random_subset(1000, 0.6, seed=0)
  assert len(set(subset)) == 600 and (np.diff(subset) > 0).all()
  rng = np.random.default_rng(0)
  scores = rng.normal(size=60).round(1)  # with ties
  positive = rng.random(60) < 0.3
  pos, neg = scores[positive], scores[~positive]
  expected = np.mean([(p < n) + 0.5 * (p == n) for p in pos for n in neg])
  assert report.auc(scores, positive) == pytest.approx(expected)
  c = exp_config.get_config('filtered,/d')
  assert c.dataset.splits.train == '/d/train_filtered.jsonl'
  assert c.dataset.splits.test == '/d/test.jsonl'
  with pytest.raises(ValueError, match='Unknown variant'):
    exp_config.get_config('dirty')


def test_data_flags_give_the_trainers_dataset_config():
  cfg = data_lib.dataset_config
  assert cfg('jsonl:d/x.jsonl', 'train[:10%]', path_keys=['image']) == {
      'source': 'jsonl', 'splits': {'train': 'd/x.jsonl'},
      'path_keys': ('image',)}
  assert cfg('d/x.tsv', 'val') == {'source': 'csv',
                                   'splits': {'val': 'd/x.tsv'}}
  assert cfg('s/{00000..00003}.tar', 'train')['source'] == 'webdataset'
  assert cfg('coco_captions:/c', 'val2017') == {'source': 'coco_captions',
                                                'root': '/c'}
  assert cfg('librispeech:/l', 'dev-clean')['root'] == '/l'
  assert cfg('tfds:clevr', 'train') == {'source': 'tfds', 'name': 'clevr'}
  assert cfg('digits_trimodal', 'test', options=[
      'data_dir=data', "path_keys=('a', 'b')", 'splits.val=v.jsonl']) == {
          'source': 'digits_trimodal', 'data_dir': 'data',
          'path_keys': ('a', 'b'), 'splits': {'val': 'v.jsonl'}}
  with pytest.raises(ValueError, match='takes no location'):
    cfg('digits_trimodal:/x', 'train')
  with pytest.raises(ValueError, match='not KEY=VALUE'):
    cfg('tfds:clevr', 'train', options=['data_dir'])
