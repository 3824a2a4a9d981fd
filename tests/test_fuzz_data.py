"""Fuzzing the input path with a few hundred damaged records: with
on_error='skip' every one is counted under its reason and nothing crashes;
with 'raise' the first one is named."""
import collections
import os

import pytest

from multimodal import base_config
from multimodal import tokenizer as tokenizer_lib
from multimodal.data import pipeline
from multimodal.data import sources
from multimodal.data.errors import DataError
from multimodal.testing import datasets

# corruption kind -> the reason the pipeline counts it under, per format.
REASONS = {
    'jsonl': dict(truncated='bad_image', random_bytes='bad_image',
                  bad_header='bad_image', empty_text='empty_text',
                  missing_file='missing_file', bad_json='bad_json'),
    'webdataset': dict(truncated='bad_image', random_bytes='bad_image',
                       bad_header='bad_image', empty_text='empty_text',
                       missing_file='missing_key', bad_json='bad_json'),
    'speech': dict(truncated='bad_audio', random_bytes='bad_audio',
                   bad_header='bad_audio', empty_text='empty_text',
                   missing_file='missing_file', bad_row='bad_row'),
}
COUNTS = dict(truncated=30, random_bytes=30, bad_header=30, empty_text=30,
              missing_file=30)


def _config(tmp_path, fmt, kind, path, records):
  c = base_config.base()
  texts = [r.get('caption') or r.get('text') for r in records]
  c.input.tokenizer = tokenizer_lib.train_tokenizer(
      [t for t in texts if t] * 3, str(tmp_path / 'spm.model'), vocab_size=64)
  c.input.max_text_len = 16
  c.input.image_size = 16
  c.input.num_frames = 64
  c.eval_batch_size = 32
  c.input.max_skip_fraction = 1.0  # most records are damaged on purpose
  c.dataset = dict(source=fmt, splits=dict(test=path),
                   path_keys=(('image',) if kind == 'image' else
                              ('filepath',)) if fmt != 'webdataset' else ())
  if fmt == 'webdataset':
    c.input.fields = dict(image='png', image_text='txt')
  elif kind == 'image':
    c.input.fields = dict(image='image', image_text='caption')
  else:
    c.input.fields = dict(audio='filepath', audio_text='text')
  return c


def _expected(records, reasons):
  return collections.Counter(reasons[r['__corrupt__']] for r in records
                             if r['__corrupt__'])


def _skip_pass(config):
  config.input.on_error = 'skip'
  fields = sorted(config.input.fields)
  it, pre, n = pipeline.make_iterator(config, 'test', train=False,
                                      fields=fields, batch_size=32)
  kept = sum(len(b[fields[0]]) for b in it)
  return kept, pre, n


CASES = {
    'jsonl': ('image', datasets.write_jsonl, dict(COUNTS, bad_json=30)),
    'webdataset': ('image', datasets.write_webdataset,
                   dict(COUNTS, bad_json=30)),
    'speech': ('speech', datasets.write_csv, dict(COUNTS, bad_row=30)),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_skip_counts_every_damaged_record_by_reason(tmp_path, case):
  kind, write, counts = CASES[case]
  records = datasets.corrupt(datasets.make_records(kind, 300, seed=3),
                             seed=4, **counts)
  path = write(str(tmp_path / 'data'), records, split='test')
  fmt = {'speech': 'csv'}.get(case, case)
  config = _config(tmp_path, fmt, kind, path, records)
  want = _expected(records, REASONS[case])
  kept, pre, n = _skip_pass(config)
  assert n == 300 and kept == 300 - sum(counts.values())
  assert dict(pre.skipped.counts) == dict(want)
  assert pre.skipped.seen == 300
  # The up-front validation finds the source-level problems (files, JSON,
  # rows, member-less keys, empty texts) before any decoding.
  report = sources.validate(pipeline.open_source(config.dataset, 'test'),
                            list(config.input.fields.values()),
                            text_keys=[config.input.fields[
                                f'{"image" if kind == "image" else "audio"}'
                                '_text']])
  for reason in ('missing_file', 'bad_json', 'bad_row', 'empty_text'):
    if reason in want:
      assert report.counts.get(reason) == want[reason], report.summary()

  # 'raise' stops at the first damaged record and names it.
  config.input.on_error = 'raise'
  it, _, _ = pipeline.make_iterator(config, 'test', train=False,
                                    fields=sorted(config.input.fields),
                                    batch_size=32)
  first = min(i for i, r in enumerate(records) if r['__corrupt__'])
  with pytest.raises(DataError) as err:
    list(it)
  message = str(err.value)
  assert "on_error='skip'" in message
  assert err.value.reason == REASONS[case][records[first]['__corrupt__']]
  # Record ids: manifest line numbers (1-based, after the header of a CSV)
  # or the tar member key.
  want_id = {'jsonl': f'test.jsonl:{first + 1}',
             'speech': f'test.tsv:{first + 2}',
             'webdataset': f'{first:09d}'}[case]
  assert want_id in err.value.record, (err.value.record, want_id)
  assert err.value.record in message


def test_a_truncated_shard_is_counted_not_fatal(tmp_path):
  records = datasets.make_records('image', 200, seed=5)
  pattern = datasets.write_webdataset(str(tmp_path / 'data'), records,
                                      split='test', per_shard=100)
  shard = os.path.join(str(tmp_path / 'data'), 'test', '00001.tar')
  datasets.truncate_file(shard, 0.5)
  config = _config(tmp_path, 'webdataset', 'image', pattern, records)
  kept, pre, n = _skip_pass(config)
  lost = sum(pre.skipped.counts.values())
  assert kept + lost == n and 100 <= kept < 200
  assert set(pre.skipped.counts) <= {'unreadable_member', 'missing_key'}


def test_a_split_of_only_bad_records_fails_instead_of_spinning(tmp_path):
  """Skipping is for a few bad records: when (nearly) all are bad the
  pipeline stops with the counts, in training too (which repeats)."""
  records = datasets.corrupt(datasets.make_records('image', 150, seed=6),
                             seed=7, random_bytes=150)
  path = datasets.write_jsonl(str(tmp_path / 'data'), records, split='test')
  config = _config(tmp_path, 'jsonl', 'image', path, records)
  config.input.on_error = 'skip'
  config.input.max_skip_fraction = 0.5
  it, _, _ = pipeline.make_iterator(config, 'test', train=True,
                                    fields=['image', 'image_text'],
                                    batch_size=8)
  with pytest.raises(RuntimeError, match=r'bad_image: 1\d\d .*'
                     'max_skip_fraction'):
    next(it)


@pytest.mark.parametrize('value,reason', [
    ('', 'empty_text'), ('  ', 'empty_text'), ([], 'empty_text'),
    (7, 'not_text'), (b'', 'empty_text')])
def test_text_kinds_and_validation_agree_on_the_reason(tmp_path, value,
                                                       reason):
  """The pipeline counts a bad text under the reason validation gives it."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from multimodal.data import kinds  # pylint: disable=g-import-not-at-top
  records = datasets.make_records('image', 100, seed=8)
  config = _config(tmp_path, 'jsonl', 'image', 'unused.jsonl', records)
  config.input.max_references = 2
  tokenizer = pipeline.make_tokenizer(config.input)
  report = sources.validate([{'caption': value}], ['caption'],
                            text_keys=['caption'])
  assert list(report.counts) == [reason]
  for kind in ('text', 'texts'):
    field = kinds.registry.get('field', kind)(config.input, train=False,
                                              tokenizer=tokenizer)
    with pytest.raises(DataError) as err:
      field(value, np.random.default_rng(0))
    assert err.value.reason == reason
