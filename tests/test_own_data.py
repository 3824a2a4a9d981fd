"""Training on one's own data, as a new user would: a small set written on
the fly in each format (multimodal.testing.datasets), a tokenizer trained on
its texts, then `python -m multimodal.train` with experiments/image_text.py
or speech_text.py, and the loss must fall."""
import json
import os
import subprocess
import sys

import pytest

import conftest

from multimodal import metrics_writer
from multimodal import tokenizer as tokenizer_lib
from multimodal.testing import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_VAL = 240, 48


def write_set(fmt: str, kind: str, root: str) -> list[str]:
  """Writes train/val splits of `kind` ('image' or 'speech') in `fmt`;
  returns the --config flags that point the experiment at them."""
  train = datasets.make_records(kind, NUM_TRAIN, seed=0)
  val = datasets.make_records(kind, NUM_VAL, seed=1)
  if fmt in ('jsonl', 'csv', 'webdataset'):
    write = {'jsonl': datasets.write_jsonl, 'csv': datasets.write_csv,
             'webdataset': datasets.write_webdataset}[fmt]
    extra = {'per_shard': 64} if fmt == 'webdataset' else {}
    paths = {s: write(os.path.join(root, s) if fmt == 'webdataset' else root,
                      recs, split=s, **extra)
             for s, recs in (('train', train), ('val', val))}
    flags = [f'--config.dataset.splits.{s}={p}' for s, p in paths.items()]
    if fmt == 'webdataset' and kind == 'image':
      flags.append('--config.input.fields.image=png')  # img2dataset: jpg
    return flags
  if fmt == 'coco':
    datasets.write_coco(root, 'train2017', train)
    datasets.write_coco(root, 'val2017', val)
  else:
    datasets.write_librispeech(root, 'train-clean-100', train)
    datasets.write_librispeech(root, 'dev-clean', val)
  return [f'--config.dataset.root={root}']


def texts_of(kind: str) -> list[str]:
  key = 'captions' if kind == 'image' else 'text'
  texts = []
  for r in datasets.make_records(kind, NUM_TRAIN, seed=0):
    texts += r[key] if isinstance(r[key], list) else [r[key]]
  return texts + [t.upper() for t in texts]  # librispeech is upper case


def train(tmp_path, experiment: str, variant: str, kind: str, fmt: str,
          extra=()) -> tuple[dict, list[float]]:
  data = tmp_path / 'data'
  flags = write_set(fmt, kind, str(data))
  spm = tokenizer_lib.train_tokenizer(texts_of(kind), str(data / 'spm.model'),
                                      vocab_size=96)
  workdir = tmp_path / 'wd'
  cmd = [sys.executable, '-m', 'multimodal.train',
         f'--config=experiments/{experiment}.py:{variant},{fmt},tiny',
         f'--workdir={workdir}', f'--config.input.tokenizer={spm}', *flags,
         *extra]
  run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
  assert 'Checked' in run.stdout  # the up-front validation ran
  losses = [m['train/loss'] for m in metrics_writer.read_metrics(
      str(workdir)) if 'train/loss' in m]
  with open(workdir / f'final_{json.load(open(workdir / "config.json"))["eval_split"]}.json') as f:
    final = json.load(f)
  return final, losses, run.stdout


def falls(losses) -> bool:
  return sum(losses[-2:]) < 0.9 * sum(losses[:2])


# Each format once in CI, with both tasks of both media among them; the full
# cross product is marked slow.
FAST = [('image_text', 'siglip', 'image', 'jsonl'),
        ('image_text', 'caption', 'image', 'webdataset'),
        ('image_text', 'clip', 'image', 'csv'),
        ('image_text', 'caption', 'image', 'coco'),
        ('speech_text', 'asr', 'speech', 'jsonl'),
        ('speech_text', 'siglip', 'speech', 'librispeech')]
ALL = [(e, v, k, f)
       for e, vs, k, fs in (
           ('image_text', ('siglip', 'caption'), 'image',
            ('jsonl', 'csv', 'webdataset', 'coco')),
           ('speech_text', ('siglip', 'asr'), 'speech',
            ('jsonl', 'csv', 'webdataset', 'librispeech')))
       for v in vs for f in fs]
SLOW = [c for c in ALL if c not in FAST]


def _check(final, losses, variant):
  assert len(losses) == 8 and falls(losses), losses
  if variant in ('siglip', 'clip'):
    assert any('/retrieval/' in k and k.endswith('@10') for k in final)
  else:
    assert any(k.endswith('/cider') for k in final)


@pytest.mark.parametrize('experiment,variant,kind,fmt', FAST)
def test_training_on_each_format(tmp_path, experiment, variant, kind, fmt):
  final, losses, _ = train(tmp_path, experiment, variant, kind, fmt)
  _check(final, losses, variant)
  if (variant, fmt) == ('siglip', 'jsonl'):
    _check_export(tmp_path)


def _check_export(tmp_path):
  """The export of a run on one's own data describes its inputs by field
  kind, ships its tokenizer, and loads back."""
  import multimodal  # pylint: disable=g-import-not-at-top
  from multimodal import export  # pylint: disable=g-import-not-at-top
  out = export.export(str(tmp_path / 'wd'), str(tmp_path / 'export'))
  pre = multimodal.load_pretrained(out)
  assert pre.preprocess['fields'] == {
      'image': {'key': 'image', 'kind': 'image'},
      'image_text': {'key': 'caption', 'kind': 'text'}}
  assert pre.preprocess['image']['size'] == 32
  assert pre.preprocess['text']['eos_id'] == 3
  assert pre.preprocess['text']['vocab_size'] == 96
  with open(os.path.join(out, 'README.md')) as f:
    assert 'training on `jsonl ' in f.read()
  model = pre.build_model()
  assert set(model.towers) == {'image', 'text'}


@pytest.mark.slow
@pytest.mark.parametrize('experiment,variant,kind,fmt', SLOW)
def test_training_on_each_format_and_task(tmp_path, experiment, variant,
                                          kind, fmt):
  final, losses, _ = train(tmp_path, experiment, variant, kind, fmt)
  _check(final, losses, variant)


def _webdataset_config(tmp_path):
  from experiments import image_text  # pylint: disable=g-import-not-at-top
  data = str(tmp_path / 'data')
  flags = write_set('webdataset', 'image', data)
  config = image_text.get_config('siglip,webdataset,tiny')
  for flag in flags:  # --config.dataset.splits.S=PATTERN
    if flag.startswith('--config.dataset.splits.'):
      key, value = flag[len('--config.dataset.splits.'):].split('=', 1)
      config.dataset.splits[key] = value
  config.input.fields.image = 'png'  # the generated shards hold KEY.png
  config.input.tokenizer = tokenizer_lib.train_tokenizer(
      texts_of('image'), f'{data}/spm.model', vocab_size=96)
  return config


def test_webdataset_resumes_exactly_and_splits_over_processes(tmp_path):
  """Restoring the iterator state of a webdataset run gives the same next
  examples (the shards are random access through their index), and two
  processes' batches together are exactly one process's."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from multimodal.data import pipeline  # pylint: disable=g-import-not-at-top
  config = _webdataset_config(tmp_path)
  fields = ['image', 'image_text']
  make = lambda **kw: pipeline.make_iterator(  # noqa: E731
      config, 'train', train=True, fields=fields, **kw)[0]
  it = make(batch_size=8)
  for _ in range(7):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(3)]
  resumed = make(batch_size=8)
  resumed.set_state(state)
  for w in want:
    got = next(resumed)
    for k in fields:
      np.testing.assert_array_equal(got[k], w[k])

  conftest.assert_two_processes_hold_one(
      lambda batch, index, count: make(batch_size=batch, process_index=index,
                                       process_count=count))
