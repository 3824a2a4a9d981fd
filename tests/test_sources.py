"""Data sources chosen in config (multimodal.data.sources) on small sets
written by multimodal.testing.datasets: content, random access, caching of
the webdataset index, split slicing, pickling, validation and errors."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from multimodal import registry
from multimodal.data import image as image_lib
from multimodal.data import sources
from multimodal.data.errors import DataError
from multimodal.data.sources import base
from multimodal.data.sources import webdataset as wds
from multimodal.testing import datasets


@pytest.fixture(scope='module')
def images():
  return datasets.image_caption_records(40, seed=0)


@pytest.fixture(scope='module')
def speech():
  return datasets.speech_records(12, seed=0)


def _open(split='train', **cfg):
  return sources.open_source(cfg, split)


def _all(source):
  return [source[i] for i in range(len(source))]


def _check_random_access(source):
  """Shuffled reads (and negative indices) equal a sequential pass."""
  seq = list(source)  # iteration stops at IndexError
  assert len(seq) == len(source)
  order = np.random.default_rng(0).permutation(len(source))
  for i in order:
    assert source[int(i)] == seq[i]
  assert source[np.int64(-1)] == seq[-1]
  with pytest.raises(IndexError):
    source[len(source)]  # pylint: disable=pointless-statement
  return seq


def test_all_formats_are_registered():
  assert set(registry.names('source')) >= {
      'tfds', 'jsonl', 'csv', 'webdataset', 'coco_captions', 'librispeech'}


@pytest.mark.parametrize('kind', ['image', 'speech'])
def test_jsonl(tmp_path, images, speech, kind):
  records = images if kind == 'image' else speech
  media = 'image' if kind == 'image' else 'audio'
  path = datasets.write_jsonl(str(tmp_path), records)
  source = _open(source='jsonl', splits={'train': path}, path_keys=(media,))
  seq = _check_random_access(source)
  assert len(seq) == len(records)
  for i, (got, want) in enumerate(zip(seq, records)):
    assert got[media] == want[media]
    assert got['label'] == want['label']
    assert got['__key__'] == f'train.jsonl:{i + 1}'
    if kind == 'image':
      assert got['caption'] == want['caption']
      assert got['captions'] == want['captions']
    else:
      assert got['text'] == want['text']
  assert 'jsonl' in source.describe() and str(len(records)) in (
      source.describe())


def test_jsonl_blank_lines_inline_text_and_absolute_paths(tmp_path):
  img = tmp_path / 'elsewhere.png'
  img.write_bytes(b'PNGDATA')
  lines = ['', json.dumps({'text': 'only text', 'meta': {'a': [1, 2]}}),
           '   ', json.dumps({'text': 'x', 'image': str(img)}), '']
  (tmp_path / 'm.jsonl').write_text('\n'.join(lines))
  source = _open(source='jsonl', splits={'train': str(tmp_path / 'm.jsonl')},
                 path_keys='image')
  assert len(source) == 2
  assert source[0] == {'text': 'only text', 'meta': {'a': [1, 2]},
                       '__key__': 'm.jsonl:2'}
  assert source[1]['image'] == b'PNGDATA'
  assert source[1]['__key__'] == 'm.jsonl:4'


@pytest.mark.parametrize('delimiter', ['\t', ','])
@pytest.mark.parametrize('kind', ['image', 'speech'])
def test_csv(tmp_path, images, speech, kind, delimiter):
  records = images if kind == 'image' else speech
  media = 'image' if kind == 'image' else 'audio'
  path = datasets.write_csv(str(tmp_path), records, delimiter=delimiter)
  assert path.endswith('.tsv' if delimiter == '\t' else '.csv')
  # The delimiter follows from the file name.
  source = _open(source='csv', splits={'train': path},
                 path_keys=('filepath',))
  seq = _check_random_access(source)
  assert len(seq) == len(records)
  text = 'title' if kind == 'image' else 'text'
  for got, want in zip(seq, records):
    assert got['filepath'] == want[media]
    assert got[text] == want['caption' if kind == 'image' else 'text']
    assert got['label'] == str(want['label'])  # CSV values are strings


def test_csv_quoted_newlines_and_delimiters(tmp_path):
  path = tmp_path / 'odd.csv'
  path.write_bytes('caption;n\n"two\nlines; quoted";1\n\n"say ""hi""";2\n'
                   'plain;3\r\n"caf\xe9";4\n'.encode('utf-8'))
  source = _open(source='csv', splits={'train': str(path)}, delimiter=';')
  seq = _check_random_access(source)
  assert [r['caption'] for r in seq] == ['two\nlines; quoted', 'say "hi"',
                                        'plain', 'caf\xe9']
  assert [r['__key__'] for r in seq] == ['odd.csv:2', 'odd.csv:5',
                                         'odd.csv:6', 'odd.csv:7']


@pytest.mark.parametrize('kind', ['image', 'speech'])
def test_webdataset(tmp_path, images, speech, kind):
  records = images if kind == 'image' else speech
  per_shard = 16 if kind == 'image' else 5
  pattern = datasets.write_webdataset(str(tmp_path), records,
                                      per_shard=per_shard)
  assert pattern.endswith('{00000..00002}.tar')
  source = _open(source='webdataset', splits={'train': pattern})
  seq = _check_random_access(source)
  assert len(seq) == len(records)
  ext = 'png' if kind == 'image' else 'flac'
  for i, (got, want) in enumerate(zip(seq, records)):
    assert set(got) == {'__key__', ext, 'txt', 'json'}
    assert got['__key__'] == f'{i // per_shard:05d}.tar:{i:09d}'
    assert got[ext] == want['image' if kind == 'image' else 'audio']
    assert got['txt'] == want['caption' if kind == 'image' else 'text']
    assert got['json']['key'] == f'{i:09d}'
    assert got['json']['label'] == want['label']


def test_brace_expansion():
  assert wds.expand_braces('s/{00000..00002}.tar') == [
      's/00000.tar', 's/00001.tar', 's/00002.tar']
  assert wds.expand_braces('{8..11}') == ['8', '9', '10', '11']
  assert wds.expand_braces('{a,b}-{1..2}') == ['a-1', 'a-2', 'b-1', 'b-2']
  assert wds.expand_braces('x{a,b{1,2}}y') == ['xay', 'xb1y', 'xb2y']
  assert wds.expand_braces('plain.tar') == ['plain.tar']
  with pytest.raises(ValueError, match='Unbalanced'):
    wds.expand_braces('s/{0..3.tar')


def test_webdataset_patterns_globs_and_lists(tmp_path, images, monkeypatch):
  pattern = datasets.write_webdataset(str(tmp_path), images, per_shard=10)
  shards = sorted(str(p) for p in (tmp_path / 'train').glob('*.tar'))
  assert len(shards) == 4
  by_glob = _open(source='webdataset',
                  splits={'train': str(tmp_path / 'train' / '*.tar')})
  by_list = _open(source='webdataset', splits={'train': [
      str(tmp_path / 'train' / '{00000,00001}.tar'),
      str(tmp_path / 'train' / '0000[23].tar')]})
  assert by_glob.shards == by_list.shards == shards
  # Relative patterns are relative to the current directory.
  monkeypatch.chdir(tmp_path)
  rel = _open(source='webdataset', splits={'train': 'train/{00001..00002}.tar'})
  assert len(rel) == 20 and rel[0]['__key__'] == '00001.tar:000000010'
  with pytest.raises(FileNotFoundError, match='00004.tar does not exist'):
    _open(source='webdataset', splits={'train': 'train/{00000..00009}.tar'})
  with pytest.raises(FileNotFoundError, match='No shard matches'):
    _open(source='webdataset', splits={'train': 'nothing/*.tar'})
  del pattern


def test_webdataset_index_is_cached_reused_and_rebuilt(tmp_path, images):
  pattern = datasets.write_webdataset(str(tmp_path / 'a'), images,
                                      per_shard=20)
  first = _open(source='webdataset', splits={'train': pattern})
  assert (first.num_built, first.num_reused) == (2, 0)
  index = tmp_path / 'a' / 'train' / '00000.tar.index.json'
  assert json.loads(index.read_text())['size'] == os.path.getsize(
      str(tmp_path / 'a' / 'train' / '00000.tar'))
  again = _open(source='webdataset', splits={'train': pattern})
  assert (again.num_built, again.num_reused) == (0, 2)
  assert _all(again) == _all(first)
  # Rewrite shard 1 with other records: its index is stale and rebuilt.
  datasets.write_webdataset(str(tmp_path / 'b'), images[:5], per_shard=20)
  os.replace(str(tmp_path / 'b' / 'train' / '00000.tar'),
             str(tmp_path / 'a' / 'train' / '00001.tar'))
  changed = _open(source='webdataset', splits={'train': pattern})
  assert (changed.num_built, changed.num_reused) == (1, 1)
  assert len(changed) == 25 and changed[24]['png'] == images[4]['image']


def test_index_shards_ahead_in_processes(tmp_path, images):
  pattern = datasets.write_webdataset(str(tmp_path), images, per_shard=10)
  assert wds.index_shards(pattern, processes=2) == (4, 0)
  assert wds.index_shards(pattern, processes=2) == (0, 4)
  assert _open(source='webdataset', splits={'train': pattern}).num_reused == 4


def test_webdataset_index_dir(tmp_path, images):
  pattern = datasets.write_webdataset(str(tmp_path / 'data'), images,
                                      per_shard=40)
  index_dir = tmp_path / 'indexes'
  cfg = dict(source='webdataset', splits={'train': pattern},
             index_dir=str(index_dir))
  first = _open(**cfg)
  assert not list((tmp_path / 'data' / 'train').glob('*.index.json'))
  assert len(list(index_dir.glob('00000.tar.*.index.json'))) == 1
  assert _open(**cfg).num_reused == 1 and first.num_built == 1


def test_webdataset_ignores_odd_members(tmp_path):
  import io  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'odd.tar'
  with tarfile.open(str(path), 'w') as tar:
    tar.addfile(tarfile.TarInfo('dir'), None)  # a regular file of 0 bytes
    info = tarfile.TarInfo('sub')
    info.type = tarfile.DIRTYPE
    tar.addfile(info)
    for name, data in [('sub/a.b.TXT', b'hi'), ('sub/a.b.txt', b'again'),
                       ('sub/a.jpg', b'\xff\xd8'), ('noext', b'x')]:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
    link = tarfile.TarInfo('sub/c.txt')
    link.type, link.linkname = tarfile.SYMTYPE, 'sub/a.b.txt'
    tar.addfile(link)
  source = wds.WebDatasetSource(str(path))
  assert _all(source) == [{'__key__': 'odd.tar:sub/a', 'b.txt': 'hi',
                           'jpg': b'\xff\xd8'}]
  assert '5 members ignored' in source.describe()


def test_coco(tmp_path, images):
  root = datasets.write_coco(str(tmp_path), 'val2017', images, uncaptioned=3)
  source = _open('val2017', source='coco_captions', root=root)
  seq = _check_random_access(source)
  assert len(seq) == len(images)
  for i, (got, want) in enumerate(zip(seq, images)):
    assert got['image'] == want['image']
    assert got['captions'] == want['captions']  # annotation order
    assert got['image_id'] == i + 1
    assert got['__key__'] == f'val2017/{got["file_name"]}'
  assert '3 images without captions skipped' in source.describe()
  with pytest.raises(FileNotFoundError, match='captions_train2017.json'):
    _open('train2017', source='coco_captions', root=root)


@pytest.mark.parametrize('nested', [True, False])
def test_librispeech(tmp_path, speech, nested):
  root = datasets.write_librispeech(str(tmp_path), 'dev-clean', speech,
                                    nested=nested)
  source = _open('dev-clean', source='librispeech', root=root)
  seq = _check_random_access(source)
  assert len(seq) == len(speech)
  assert (sorted((r['audio'], r['text']) for r in seq) ==
          sorted((r['audio'], r['text'].upper()) for r in speech))
  for r in seq:
    speaker, chapter, _ = r['id'].split('-')
    assert (r['speaker_id'], r['chapter_id']) == (int(speaker), int(chapter))
    assert r['__key__'] == f'dev-clean/{r["id"]}'
  speakers = [r['speaker_id'] for r in seq]
  assert speakers == sorted(speakers)  # numeric, not string, order
  with pytest.raises(FileNotFoundError, match=r"test-clean.*splits found: \['dev-clean'\]"):
    _open('test-clean', source='librispeech', root=root)


def test_librispeech_missing_flac_and_bad_line(tmp_path, speech):
  records = datasets.corrupt(speech, seed=1, missing_file=2)
  root = datasets.write_librispeech(str(tmp_path), 'dev-clean', records)
  trans = sorted((tmp_path / 'LibriSpeech').rglob('*.trans.txt'))[0]
  trans.write_text(trans.read_text() + 'not-an-id SOME WORDS\n')
  source = _open('dev-clean', source='librispeech', root=root)
  assert len(source) == len(speech) + 1  # kept in the index, not dropped
  report = sources.validate(source, keys=('audio', 'text'))
  assert report.counts == {'missing_file': 2, 'bad_row': 1}


def test_split_slicing(tmp_path, images):
  path = datasets.write_jsonl(str(tmp_path), images)  # 40 records
  cfg = dict(source='jsonl', splits={'train': path}, path_keys=('image',))
  full = _all(_open(**cfg))
  keys = lambda s: [r['__key__'] for r in _all(s)]
  head, tail = _open('train[:90%]', **cfg), _open('train[90%:]', **cfg)
  assert len(head) == 36 and len(tail) == 4
  assert keys(head) + keys(tail) == [r['__key__'] for r in full]
  assert keys(_open('train[-5:]', **cfg)) == [r['__key__'] for r in full[-5:]]
  assert keys(_open('train[:10]', **cfg)) == [r['__key__'] for r in full[:10]]
  assert keys(_open('train[10:-10]', **cfg)) == [
      r['__key__'] for r in full[10:-10]]
  assert keys(_open('train[-10%:]', **cfg)) == keys(tail)
  assert _open('train[:90%]', **cfg)[-1] == full[35]
  assert 'slice' in head.describe()
  for bad in ('train[5]', 'train[::2]', 'train[:x]', 'train[:150%]',
              'train[:90]%'):
    with pytest.raises(ValueError, match='Malformed split'):
      _open(bad, **cfg)
  with pytest.raises(ValueError, match='selects no records'):
    _open('train[10:5]', **cfg)


def test_sources_pickle_round_trip(tmp_path, images, speech):
  opened = [
      _open(source='jsonl', path_keys='image',
            splits={'train': datasets.write_jsonl(str(tmp_path / 'j'),
                                                  images)}),
      _open(source='csv', path_keys='filepath',
            splits={'train': datasets.write_csv(str(tmp_path / 'c'),
                                                images)}),
      _open('train[:50%]', source='webdataset', splits={
          'train': datasets.write_webdataset(str(tmp_path / 'w'), images)}),
      _open('val2017', source='coco_captions',
            root=datasets.write_coco(str(tmp_path / 'coco'), 'val2017',
                                     images)),
      _open('dev-clean', source='librispeech',
            root=datasets.write_librispeech(str(tmp_path / 'ls'),
                                            'dev-clean', speech)),
  ]
  for source in opened:
    first = source[0]  # opens file handles, which must not be pickled
    copy = pickle.loads(pickle.dumps(source))
    assert len(copy) == len(source) and copy[0] == first
    assert _all(copy) == _all(source)
  err = base.RecordError('bad_json', 'a.jsonl:3', 'not JSON', '/x/a.jsonl')
  again = pickle.loads(pickle.dumps(err))
  assert (again.reason, again.record, again.path, str(again)) == (
      err.reason, err.record, err.path, str(err))
  # The pipeline catches DataError and reads args[0] as the message.
  assert isinstance(err, DataError) and err.args[0] == 'not JSON'


def test_validate_counts_corruptions_by_reason(tmp_path):
  records = datasets.corrupt(datasets.image_caption_records(400, seed=3),
                             seed=0, missing_file=40, bad_json=30,
                             empty_text=25, truncated=35, random_bytes=20,
                             bad_header=10)
  path = datasets.write_jsonl(str(tmp_path), records)
  source = _open(source='jsonl', splits={'train': path}, path_keys='image')
  report = sources.validate(source, keys=('image', 'label'),
                            text_keys=('caption', 'captions'))
  assert report.num_checked == 400
  assert report.counts == {'missing_file': 40, 'bad_json': 30,
                           'empty_text': 25}
  want_bad = {i for i, r in enumerate(records)
              if r['__corrupt__'] in ('missing_file', 'bad_json',
                                      'empty_text')}
  assert report.bad == want_bad
  assert all(len(v) == 3 for v in report.examples.values())
  assert 'train.jsonl:' in report.examples['bad_json'][0]
  summary = report.summary()
  assert 'Checked 400 records' in summary and '95 with problems' in summary
  assert 'missing_file: 40' in summary
  # Undecodable media is the decoder's problem, not the source's: the bytes
  # come back as written and decoding them fails.
  for i, r in enumerate(records):
    if r['__corrupt__'] in ('truncated', 'random_bytes', 'bad_header'):
      assert source[i]['image'] == r['image']
      with pytest.raises(image_lib.ImageDecodeError):
        image_lib.decode_image(source[i]['image'], 3)
  assert sources.validate(source, ('image',), max_records=10).num_checked == 10


def test_validate_csv_and_webdataset_damage(tmp_path, images):
  records = datasets.corrupt(images * 8, seed=0, bad_row=30, missing_file=20,
                             empty_text=10, bad_json=15)  # 320 records
  path = datasets.write_csv(str(tmp_path / 'csv'), records)
  source = _open(source='csv', splits={'train': path}, path_keys='filepath')
  report = sources.validate(source, keys=('filepath',), text_keys=('title',))
  assert report.counts == {'bad_row': 30, 'missing_file': 20,
                           'empty_text': 10}
  # webdataset: a missing media member is a missing key; a cut .json member
  # is bad JSON; a truncated shard makes its cut member unreadable.
  pattern = datasets.write_webdataset(str(tmp_path / 'wds'), records,
                                      per_shard=100)
  last = str(tmp_path / 'wds' / 'train' / '00003.tar')
  probe = wds.WebDatasetSource(last, index_dir=str(tmp_path / 'probe'))
  # Cut the shard in the middle of the data of a member after the 7th.
  member = next(j for j in range(7, 30) if probe._m_size[j] > 1)
  cut_record = 300 + int(np.searchsorted(probe._start, member, 'right')) - 1
  datasets.truncate_file(last, int(probe._m_offset[member] +
                                   probe._m_size[member] // 2))
  source = _open(source='webdataset', splits={'train': pattern})
  assert list(source.problems) == [last]
  assert 'damaged shards' in source.describe()
  assert len(source) == cut_record + 1  # records after the cut are lost
  report = sources.validate(source, keys=('png', 'txt', 'json'),
                            text_keys=('txt',))
  want = {'unreadable_member': 1}
  for r in records[:cut_record]:
    kind = {'missing_file': 'missing_key', 'empty_text': 'empty_text',
            'bad_json': 'bad_json'}.get(r['__corrupt__'])
    if kind:
      want[kind] = want.get(kind, 0) + 1
  assert report.counts == want
  assert cut_record in report.bad
  # A shard cut exactly between members is reported too.
  datasets.truncate_file(last, int(probe._m_offset[3]) - 512)
  assert list(_open(source='webdataset', splits={'train': pattern}
                    ).problems) == [last]


def test_validate_nested_keys():
  records = [{'__key__': 'r0', 'qa': {'q': ['why?'], 'a': ['because']}},
             {'__key__': 'r1', 'qa': {'q': []}},
             {'__key__': 'r2', 'qa': {'q': ['  '], 'a': ['x']}, 'n': 3}]
  report = sources.validate(records, keys=('qa/a',), text_keys=('qa/q',))
  assert report.counts == {'missing_key': 1, 'empty_text': 2}
  assert report.bad == {1, 2}
  assert "Record r1: no key 'qa/a'" in report.examples['missing_key'][0]
  report = sources.validate(records, keys=(), text_keys=('n',))
  assert report.counts == {'missing_key': 2, 'not_text': 1}


def test_clear_errors(tmp_path, images):
  # (Other tests may have registered more sources, e.g. the digits one.)
  with pytest.raises(KeyError, match="Unknown source 'parquet'. Registered "
                     'sources: coco_captions, csv, .*jsonl, librispeech'):
    _open(source='parquet')
  with pytest.raises(FileNotFoundError, match='manifest of split .train. '
                     'does not exist.*nope.jsonl'):
    _open(source='jsonl', splits={'train': str(tmp_path / 'nope.jsonl')})
  with pytest.raises(ValueError, match=r"Split 'val' is not in "
                     r"config.dataset.splits; it has \['train'\]"):
    _open('val', source='jsonl', splits={'train': 'x.jsonl'})
  with pytest.raises(ValueError, match='needs config.dataset.splits'):
    _open(source='csv')
  for fmt in ('jsonl', 'csv', 'webdataset'):
    with pytest.raises(ValueError, match=r"splits\['val'\] is empty"):
      _open('val', source=fmt, splits={'train': 'x', 'val': ''})
  path = datasets.write_csv(str(tmp_path), images[:3])
  with pytest.raises(ValueError, match=r"no column 'image' .*path_keys.*"
                     r"columns are \['filepath', 'title', 'label'\]"):
    _open(source='csv', splits={'train': path}, path_keys='image')
  with pytest.raises(ValueError, match=r"no column 'caption'.*required_keys"):
    _open(source='csv', splits={'train': path}, required_keys=['caption'])
  with pytest.raises(ValueError, match='needs config.dataset.root'):
    _open('val2017', source='coco_captions')
  err = base.RecordError('missing_file', 'train.jsonl:17', 'file does not\n'
                         'exist', '/data/img.png')
  assert str(err) == ('Record train.jsonl:17 (file /data/img.png): file does '
                      'not exist [missing_file]')


def test_tfds_records_get_keys():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=6,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    source = sources.open_source({'name': 'clevr'}, 'train[2:4]')
    assert len(source) == 2
    record = source[1]
  assert record['__key__'] == 'clevr/train:3'
  assert 'image' in record and 'tfds clevr' in source.describe()
