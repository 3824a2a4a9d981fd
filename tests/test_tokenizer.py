"""Tokenizer training (every input format, the CLI and its errors), the
token-id contract of multimodal.data.text, and generation stopping at the
eos id it is given."""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile

import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
import sentencepiece as spm
from flax import nnx

from multimodal import tokenizer as tok_lib
from multimodal.data import text as text_lib
from multimodal.models import build_model
from multimodal.models import generate
from multimodal.tasks import text_generation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures('fast_compiles')

WORDS = ('a the small large red blue green dark bright cat dog car tree house '
         'on near under with beside two three runs sits').split()


def _captions(n: int = 200) -> list[str]:
  rng = np.random.default_rng(0)
  return [' '.join(rng.choice(WORDS, size=rng.integers(3, 9)))
          for _ in range(n)]


CAPTIONS = _captions()


def _tar(path, members: dict[str, bytes]) -> None:
  with tarfile.open(path, 'w') as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def _write_inputs(d) -> dict[str, tuple[list[str], list[str]]]:
  """Every format holding CAPTIONS: name -> (--data/--field args, texts)."""
  caps = CAPTIONS
  (d / 'c.txt').write_text('\n'.join(caps[:150]) + '\n\n' +
                           '\n'.join(caps[150:]) + '\n')
  # Nested key; one record holds a list of captions, one lacks text (null).
  with open(d / 'c.jsonl', 'w') as f:
    f.write(json.dumps({'id': 0, 'meta': {'caption': caps[:2]}}) + '\n')
    for i, c in enumerate(caps[2:]):
      f.write(json.dumps({'id': i, 'meta': {'caption': c}}) + '\n')
    f.write(json.dumps({'id': -1, 'meta': {'caption': None}}) + '\n')
  with gzip.open(d / 'c.jsonl.gz', 'wt') as f:
    f.writelines(json.dumps({'text': c}) + '\n' for c in caps)
  for name, delimiter in (('c.csv', ','), ('c.tsv', '\t')):
    with open(d / name, 'w', newline='') as f:
      writer = csv.writer(f, delimiter=delimiter)
      writer.writerow(['id', 'caption'])
      writer.writerows(enumerate(caps))
  os.makedirs(d / 'shards')
  for s in range(2):
    part = caps[s * 100:(s + 1) * 100]
    members = {}
    for i, c in enumerate(part):
      key = f'sample{s}{i:05d}'
      members[f'{key}.jpg'] = b'\xff\xd8'
      members[f'{key}.txt'] = c.encode()
      members[f'{key}.json'] = json.dumps({'caption': c}).encode()
    _tar(d / 'shards' / f'{s:05d}.tar', members)
  os.makedirs(d / 'annotations')
  (d / 'annotations' / 'captions_train2017.json').write_text(json.dumps({
      'images': [{'id': 7}],
      'annotations': [{'id': i, 'image_id': 7, 'caption': c + '\n'}
                      for i, c in enumerate(caps)]}))
  return {
      'txt': ([str(d / 'c.txt')], caps),
      'jsonl': ([str(d / 'c.jsonl'), '--field', 'meta/caption'], caps),
      'jsonl.gz': ([str(d / 'c.jsonl.gz'), '--field', 'text'], caps),
      'csv': ([str(d / 'c.csv'), '--field', 'caption'], caps),
      'tsv': ([str(d / 'c.tsv'), '--field', 'caption'], caps),
      'tar braces': ([str(d / 'shards' / '{00000..00001}.tar')], caps),
      'tar glob json': ([str(d / 'shards' / '*.tar'), '--field',
                         'json/caption'], caps),
      'coco': ([str(d / 'annotations' / 'captions_train2017.json')], caps),
  }


def _split(args):
  """(--data values, --field or None) of a _write_inputs entry."""
  field = args[args.index('--field') + 1] if '--field' in args else None
  return [a for a in args if a != '--field' and a != field], field


def test_every_input_format_reads_all_texts(tmp_path):
  for name, (args, texts) in _write_inputs(tmp_path).items():
    data, field = _split(args)
    got = list(tok_lib.iter_texts(tok_lib.expand_inputs(data), field))
    assert got == texts, name


def test_brace_patterns():
  assert tok_lib.expand_braces('d/{008..010}.tar') == [
      'd/008.tar', 'd/009.tar', 'd/010.tar']
  assert tok_lib.expand_braces('{a,b}/{0..1}') == ['a/0', 'a/1', 'b/0', 'b/1']


@pytest.mark.parametrize('model_type', ['bpe', 'unigram'])
def test_train_writes_the_framework_ids_and_round_trips(tmp_path,
                                                        model_type):
  out = str(tmp_path / 'tok' / 'spm.model')
  path = tok_lib.train_tokenizer(iter(CAPTIONS), out, vocab_size=40,
                                 model_type=model_type)
  assert path == out
  # Just the model and its vocab: the temporary corpus is gone.
  assert sorted(os.listdir(tmp_path / 'tok')) == ['spm.model', 'spm.vocab']
  sp = spm.SentencePieceProcessor(model_file=out)
  assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
  assert sp.get_piece_size() == 40
  tok = text_lib.Tokenizer(out, max_len=64)
  assert tok.ids == text_lib.TokenIds(pad=0, bos=2, eos=3)
  assert (tok.unk_id, tok.vocab_size) == (1, 40)
  for caption in CAPTIONS[:50]:
    ids = tok(caption)
    assert ids[np.flatnonzero(ids)[-1]] == tok.eos_id
    assert tok.decode(ids) == caption and tok.truncated == 0
  # Deterministic: the same texts give the same bytes.
  again = tok_lib.train_tokenizer(CAPTIONS, str(tmp_path / 'again.model'),
                                  vocab_size=40, model_type=model_type)
  with open(out, 'rb') as a, open(again, 'rb') as b:
    assert a.read() == b.read()


def test_cli_trains_from_every_format(tmp_path, capsys):
  for i, (name, (args, _)) in enumerate(_write_inputs(tmp_path).items()):
    data, field = _split(args)
    out = str(tmp_path / f'out{i}' / 'spm.model')
    argv = ['train', '--vocab_size', '40', '--out', out]
    for d in data:
      argv += ['--data', d]
    if field:
      argv += ['--field', field]
    assert tok_lib.main(argv) == 0, name
    assert f'Read {len(CAPTIONS)} texts' in capsys.readouterr().out, name
    assert text_lib.Tokenizer(out, 8).ids == text_lib.TokenIds(0, 2, 3)


def test_lowercase_and_max_sentences(tmp_path, capsys):
  (tmp_path / 'c.txt').write_text('\n'.join(c.upper() for c in CAPTIONS))
  out = str(tmp_path / 'spm.model')
  assert tok_lib.main(['train', '--data', str(tmp_path / 'c.txt'),
                       '--vocab_size', '40', '--out', out, '--lowercase',
                       '--max_sentences', '120']) == 0
  assert 'a sample of 120' in capsys.readouterr().out
  tok = text_lib.Tokenizer(out, 32)
  # The model itself lowercases, so serving-time text needs no care.
  assert tok.decode(tok('Two Red CATS')) == 'two red cats'


def test_info_and_encode(tmp_path, capsys):
  out = tok_lib.train_tokenizer(CAPTIONS, str(tmp_path / 'spm.model'), 40)
  assert tok_lib.main(['info', out]) == 0
  info = capsys.readouterr().out
  assert 'vocab_size 40' in info
  assert "pad 0 '<pad>', unk 1 '<unk>', bos 2 '<s>', eos 3 '</s>'" in info
  assert 'framework: usable' in info
  assert tok_lib.main(['encode', out, 'a red cat']) == 0
  lines = capsys.readouterr().out.splitlines()
  ids = json.loads(lines[1].split(': ', 1)[1].split(' (')[0])
  assert ids[-1] == 3 and lines[2] == 'decoded: a red cat'


def _cli(*args) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, '-m', 'multimodal.tokenizer', *args],
      capture_output=True, text=True, cwd=REPO, check=False,
      env=dict(os.environ, PYTHONPATH=REPO))


@pytest.mark.parametrize('case, expected', [
    ('missing', 'does not exist'),
    ('field_jsonl', "no field 'caption'"),
    ('field_csv', "no column 'text'"),
    ('field_tar', 'no sample has a .caption member'),
    ('too_large', 'Lower --vocab_size to'),
    ('too_small', 'Raise --vocab_size to at least'),
    ('empty', 'No texts found'),
    ('bad_out', 'must end in .model'),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, case, expected):
  inputs = _write_inputs(tmp_path)
  (tmp_path / 'empty.txt').write_text('\n  \n')
  data = {
      'missing': [str(tmp_path / 'nope.jsonl'), '--field', 'caption'],
      'field_jsonl': [str(tmp_path / 'c.jsonl'), '--field', 'caption'],
      'field_csv': [str(tmp_path / 'c.csv'), '--field', 'text'],
      'field_tar': [inputs['tar braces'][0][0], '--field', 'caption'],
      'too_large': inputs['txt'][0],
      'too_small': inputs['txt'][0],
      'empty': [str(tmp_path / 'empty.txt')],
      'bad_out': inputs['txt'][0],
  }[case]
  vocab = {'too_large': '5000', 'too_small': '10'}.get(case, '40')
  out = str(tmp_path / ('spm.bin' if case == 'bad_out' else 'spm.model'))
  result = _cli('train', '--data', *data, '--vocab_size', vocab, '--out', out)
  assert result.returncode == 2, result
  assert result.stdout == ''
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  assert expected in lines[0]
  assert not os.path.exists(out)


def test_info_of_a_missing_model_is_an_error():
  result = _cli('info', '/nonexistent/spm.model')
  assert result.returncode == 2
  assert result.stderr.strip() == ('error: /nonexistent/spm.model: no such '
                                   'tokenizer model file.')


# ------------------------------------------------------ the id contract ---


def _raw_spm(tmp_path, name, **ids) -> str:
  prefix = str(tmp_path / name)
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CAPTIONS), model_prefix=prefix, vocab_size=40,
      minloglevel=2, **ids)
  return prefix + '.model'


def test_tokenizer_requires_pad_0_and_bos_eos(tmp_path):
  no_bos = _raw_spm(tmp_path, 'no_bos', pad_id=0, unk_id=1, bos_id=-1,
                    eos_id=2)
  with pytest.raises(ValueError, match=r'no bos token .*'
                     r'python -m multimodal.tokenizer train'):
    text_lib.Tokenizer(no_bos, 8)
  # sentencepiece's defaults: unk 0, bos 1, eos 2, no pad.
  default = _raw_spm(tmp_path, 'default')
  with pytest.raises(ValueError, match='pad id is -1, but it must be 0'):
    text_lib.Tokenizer(default, 8)
  with pytest.raises(ValueError, match='not a sentencepiece model'):
    (tmp_path / 'junk.model').write_bytes(b'junk')
    text_lib.Tokenizer(str(tmp_path / 'junk.model'), 8)


def test_missing_tokenizer_error_names_the_config_not_the_demo():
  with pytest.raises(FileNotFoundError) as e:
    text_lib.Tokenizer('/nonexistent/spm.model', 8)
  assert 'config.input.tokenizer' in str(e.value)
  assert 'multimodal.tokenizer train' in str(e.value)
  assert 'digits' not in str(e.value)


def test_check_vocab(tmp_path):
  path = tok_lib.train_tokenizer(CAPTIONS, str(tmp_path / 'spm.model'), 64)
  tok = text_lib.Tokenizer(path, 8)
  small = {'towers': {'image': {'name': 'vit', 'patch': 4},
                      'text': {'name': 'text_transformer', 'vocab_size': 50}},
           'decoder': {'vocab_size': 64}}
  with pytest.raises(ValueError) as e:
    text_lib.check_vocab(small, tok)
  message = str(e.value)
  assert 'config.model.towers.text.vocab_size=50' in message
  assert path in message and '64 pieces' in message
  assert 'Set config.model.towers.text.vocab_size=64' in message
  # Larger tables are fine (notes to log); exact ones give no note.
  config = mlc.ConfigDict({'towers': {'text': {'vocab_size': 128}},
                           'decoder': {'vocab_size': 64}})
  notes = text_lib.check_vocab(config, tok)
  assert len(notes) == 1
  assert notes[0].startswith('config.model.towers.text.vocab_size=128 ')
  assert text_lib.check_vocab({'decoder': {'vocab_size': 64}}, tok) == []


# ---------------------------------------------------------- generation ---


def test_greedy_stops_at_the_eos_id_it_is_given():
  """Generation takes eos from its caller (the tokenizer), not a constant:
  with an eos other than 3 it stops right after that id."""
  model = build_model(dict(name='text_decoder', vocab_size=11, max_len=12,
                           width=16, depth=1, num_heads=2, mlp_ratio=2),
                      rngs=nnx.Rngs(0))
  prompt = jnp.array([[2, 0], [2, 7]], jnp.int32)
  free = np.asarray(generate.greedy(model, prompt, max_new_tokens=8,
                                    eos_id=-1, pad_id=0).tokens)
  eos = next(int(t) for t in free[0, 1:] if t not in (0, 2, 3))
  ids = text_lib.TokenIds(pad=0, bos=2, eos=eos)
  evals = mlc.ConfigDict(dict(max_new_tokens=8, beam_size=1, alpha=0.0))
  for beam_size in (1, 2):
    evals.beam_size = beam_size
    got = np.asarray(text_generation.generate_tokens(
        model, prompt, None, None, evals, ids=ids))
    row, hits = got[0, 1:], np.flatnonzero(got[0, 1:] == eos)
    if beam_size == 1:  # greedy: exactly the free run, cut after eos
      stop = int(hits[0])
      np.testing.assert_array_equal(row[:stop + 1], free[0, 1:stop + 2])
      assert stop + 1 < len(row)  # it did stop early
    if len(hits):
      assert np.all(row[hits[0] + 1:] == 0), (beam_size, row)
