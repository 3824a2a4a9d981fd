"""The grain pipeline over the built-in dataset: shapes, resume, bad records."""

import numpy as np
import pytest

import conftest

from multimodal.data import pipeline

FIELDS = ['audio', 'audio_text', 'image', 'image_text', 'label']


def _iter(config, split='train', train=True, batch=8, source=None):
  it, pre, n = pipeline.make_iterator(config, split, train=train,
                                      fields=FIELDS, batch_size=batch,
                                      source=source)
  return it, pre, n


def test_batch_shapes_and_dtypes(tiny_config):
  it, _, _ = _iter(tiny_config)
  b = next(it)
  c = tiny_config.input
  assert b['image'].shape == (8, c.image_size, c.image_size, 1)
  assert b['image'].dtype == np.float32
  assert -1.0 <= b['image'].min() and b['image'].max() <= 1.0
  assert b['audio'].shape == (8, c.num_frames, c.num_mels)
  assert b['audio'].dtype == np.float32 and np.isfinite(b['audio']).all()
  for f in ('image_text', 'audio_text'):
    assert b[f].shape == (8, c.max_text_len) and b[f].dtype == np.int32
    assert (b[f][:, 0] != 0).all()  # every caption has at least one token
  assert b['label'].dtype == np.int32 and set(b['label']) <= set(range(10))


def test_iterator_resumes_at_the_exact_position(tiny_config):
  it, _, _ = _iter(tiny_config)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  fresh, _, _ = _iter(tiny_config)
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize('train', [True, False])
def test_processes_together_see_what_one_process_sees(tiny_config, train):
  """Two processes' k-th batches hold exactly one process's k-th batch."""
  split = 'train' if train else 'test'
  conftest.assert_two_processes_hold_one(
      lambda batch, index, count: pipeline.make_iterator(
          tiny_config, split, train=train, fields=FIELDS, batch_size=batch,
          process_index=index, process_count=count)[0])


def test_shuffle_depends_on_seed(tiny_config):
  a = next(_iter(tiny_config)[0])['label']
  tiny_config.seed = 1
  b = next(_iter(tiny_config)[0])['label']
  assert not np.array_equal(a, b)


def test_eval_pass_sees_every_record_once(tiny_config):
  it, _, n = _iter(tiny_config, split='test', train=False, batch=64)
  batches = list(it)
  assert sum(len(b['label']) for b in batches) == n
  again = list(_iter(tiny_config, split='test', train=False, batch=64)[0])
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a['image_text'], b['image_text'])


class _Broken:
  """A source whose record 2 carries a corrupt image."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return 12

  def __getitem__(self, i):
    r = dict(self.source[i])
    if i == 2:
      r['image'] = b'\x89PNG\r\n\x1a\n truncated'
    return r


def test_corrupt_record_fails_loudly_or_is_counted(tiny_config):
  src = _Broken(pipeline.open_source(tiny_config.dataset, 'test'))
  it, _, _ = _iter(tiny_config, split='test', train=False, batch=4, source=src)
  with pytest.raises(ValueError, match="on_error='skip'"):
    list(it)
  tiny_config.input.on_error = 'skip'
  it, pre, _ = _iter(tiny_config, split='test', train=False, batch=4,
                     source=src)
  got = sum(len(b['label']) for b in it)
  assert got == 11 and pre.skipped.counts == {'bad_image': 1}
  assert pre.skipped.metrics()['data/skipped/bad_image'] == 1
  with pytest.raises(RuntimeError, match='max_skip_fraction'):
    pre.skipped.check(0.05)  # 1 of 12 > 5%
  pre.skipped.check(0.1)


def test_cached_shifted_audio_equals_recomputed(tiny_config):
  from multimodal.data import audio as audio_lib  # pylint: disable=g-import-not-at-top
  tiny_config.input.audio_augment = {}  # the shift alone, for an exact check
  pre = pipeline.Preprocess(tiny_config.input, ['audio'], train=True)
  record = pipeline.open_source(tiny_config.dataset, 'test')[0]
  rng = np.random.default_rng(5)
  got = pre({**record}, rng)['audio']
  kind = pre.kinds['audio']
  shift = int(np.random.default_rng(5).integers(
      0, kind._cached(record['speech'])[1] + 1))
  assert shift > 0
  wave = audio_lib.decode_audio(record['speech'])
  offset = (audio_lib.lead_frames(kind.mel) + shift) * kind.mel.hop
  want = audio_lib.log_mel(audio_lib.fit_to_window(wave, kind.mel, offset),
                           kind.mel)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_record_and_image_caches_change_nothing_but_reads(tiny_config):
  """input.cache_raw and input.image_cache_size: the same batches, in the
  same order, over more than one epoch; the second epoch reads no record
  from the source."""
  tiny_config.input.cache_raw = False
  tiny_config.input.image_cache_size = 0
  source = pipeline.open_source(tiny_config.dataset, 'validation')

  class Counting:
    """The source, counting its reads (each iterator its own: the first
    one's threads keep reading ahead while the second runs)."""

    def __init__(self):
      self.reads = 0

    def __len__(self):
      return len(source)

    def __getitem__(self, index):
      self.reads += 1
      return source[index]

  batches = -(-2 * len(source) // 8)  # two epochs
  plain, _, _ = _iter(tiny_config, 'validation', source=Counting())
  want = [next(plain) for _ in range(batches)]
  tiny_config.input.cache_raw = True
  tiny_config.input.image_cache_size = 100_000
  # One reader thread: two threads may both miss on a record read at the
  # end of one epoch and the start of the next (harmless, not countable).
  tiny_config.input.num_threads = 1
  counting = Counting()
  cached, pre, n = _iter(tiny_config, 'validation', source=counting)
  got = [next(cached) for _ in range(batches)]
  for g, w in zip(got, want):
    for k in w:
      np.testing.assert_array_equal(g[k], w[k])
  assert counting.reads == n  # each record read once, across both epochs
  assert pre.kinds['image']._decoded.cache_info().hits > 0  # pylint: disable=protected-access


def test_worker_processes_give_the_same_examples(tiny_config):
  """config.input.num_workers > 0 (grain's worker processes receive the
  preprocessing pickled, with its caches and skip counter): the examples of
  the in-process pipeline, each worker batching its own share (worker w of
  W reads positions w, w + W, ...), so 4 batches from 2 workers hold the
  first 4 in-process batches' examples."""
  tiny_config.input.cache_raw = True
  tiny_config.input.image_cache_size = 1000

  def examples(it, batches=4):
    out = set()
    for _ in range(batches):
      b = next(it)
      for i in range(len(b['label'])):
        out.add(b''.join(np.ascontiguousarray(b[k][i]).tobytes()
                         for k in sorted(b)))
    return out

  want_it, _, _ = _iter(tiny_config, 'validation')
  want = examples(want_it)
  tiny_config.input.num_workers = 2
  got_it, _, _ = _iter(tiny_config, 'validation')
  assert examples(got_it) == want and len(want) == 32
