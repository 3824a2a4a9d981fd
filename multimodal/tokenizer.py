r"""Train and inspect sentencepiece tokenizers with the framework's token ids.

  python -m multimodal.tokenizer train --data captions.jsonl --field caption \
      --vocab_size 8000 --out tokenizers/spm.model
  python -m multimodal.tokenizer info tokenizers/spm.model
  python -m multimodal.tokenizer encode tokenizers/spm.model "a red car"

`train` writes OUT (the model) and OUT with .vocab (pieces and scores, for
reading) with the ids every part of the framework reads from the model
(multimodal.data.text.Tokenizer): pad 0, unk 1, bos 2, eos 3. Train with it
by pointing `--config.input.tokenizer=OUT` at the model and giving the text
towers and the decoder `vocab_size` >= the tokenizer's (checked by
multimodal.data.text.check_vocab).

--data (repeatable) takes, by file name:
  *.txt                one text per line
  *.jsonl, *.ndjson    one JSON object per line; --field names the key, a
                       path like `meta/caption` for nested objects (a list
                       along the path is walked element-wise); the value is
                       a string or a list of strings
  *.json               COCO captions annotations (e.g.
                       annotations/captions_train2017.json): every
                       annotations[].caption (--field picks another key), or
                       a JSON list of objects read like JSONL
  *.csv, *.tsv         --field names a column; comma for .csv, tab for .tsv,
                       --delimiter overrides
  *.tar                webdataset shards: the member with extension --field
                       of each sample (default txt, e.g. 000001.txt);
                       `json/a/b` reads key a/b of each sample's .json member
  a pattern            `dir/{00000..00009}.tar`, `dir/{train,val}.jsonl` or a
                       glob `dir/*.tar`, expanded and sorted, any of the
                       above
Text files may be gzipped (name.txt.gz, name.jsonl.gz, ...). Whitespace in a
text (newlines included) is collapsed to single spaces; empty texts are
skipped.

Training is deterministic: the same texts in the same order give the same
model, byte for byte (one thread, no shuffling; --max_sentences samples with
a fixed seed). Bad input is a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import csv
import glob
import gzip
import io
import json
import os
import random
import re
import sys
import tarfile
import tempfile
from typing import Any, Iterable, Iterator

import sentencepiece as spm

# The ids multimodal.data.text.Tokenizer requires (pad 0) and that the
# shipped digits tokenizer has, so models and configs carry over.
SPECIAL_IDS = {'pad_id': 0, 'unk_id': 1, 'bos_id': 2, 'eos_id': 3}
MODEL_TYPES = ('bpe', 'unigram')
TEXT_SUFFIXES = ('.txt', '.jsonl', '.ndjson', '.json', '.csv', '.tsv', '.tar')
# sentencepiece silently drops lines longer than this many bytes (its
# default); training raises it to the longest text so none is lost.
SPM_MAX_SENTENCE_BYTES = 4192


class DataError(ValueError):
  """Bad tokenizer input or settings; the message says what to change."""


class NoTextsError(DataError):
  """The inputs held no (non-empty) text."""


# ------------------------------------------------------------- inputs ---

_RANGE = re.compile(r'\{(\d+)\.\.(\d+)\}')
_ALTERNATIVES = re.compile(r'\{([^{}]*,[^{}]*)\}')


def expand_braces(pattern: str) -> list[str]:
  """'a/{000..002}.tar' -> ['a/000.tar', 'a/001.tar', 'a/002.tar'].

  Numeric ranges keep the zero padding of the first bound; '{x,y}' gives
  each alternative. Several braces expand left to right (cartesian).
  """
  matches = [m for m in (_RANGE.search(pattern), _ALTERNATIVES.search(pattern))
             if m]
  if matches:
    match = min(matches, key=lambda m: m.start())  # leftmost first, as bash
    head, tail = pattern[:match.start()], pattern[match.end():]
    if match.re is _RANGE:
      lo, hi = match.group(1), match.group(2)
      if int(hi) < int(lo):
        raise DataError(f'{pattern}: the range {{{lo}..{hi}}} is empty; '
                        'write it low..high.')
      choices = [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
    else:
      choices = match.group(1).split(',')
    return [p for c in choices for p in expand_braces(head + c + tail)]
  return [pattern]


def expand_inputs(patterns: Iterable[str]) -> list[str]:
  """Files named by --data values (paths, brace patterns, globs), in order.

  Raises DataError for a missing file, a pattern that matches nothing or
  a file of unknown type (before any reading, so a typo fails fast).
  """
  files = []
  for pattern in patterns:
    pattern = os.path.expanduser(pattern)
    for path in expand_braces(pattern):
      if glob.has_magic(path):
        matched = sorted(glob.glob(path))
        if not matched:
          raise DataError(f'--data {pattern}: {path} matches no files.')
        files += matched
      elif not os.path.isfile(path):
        what = 'is a directory' if os.path.isdir(path) else 'does not exist'
        raise DataError(f'--data {pattern}: {path} {what}; give files (or a '
                        'pattern such as dir/{00000..00009}.tar or dir/*.tar).')
      else:
        files.append(path)
  for path in files:
    _kind(path)
  return files


def _kind(path: str) -> str:
  """The file's format from its name: one of TEXT_SUFFIXES."""
  name = path[:-3] if path.endswith('.gz') else path
  for suffix in TEXT_SUFFIXES:
    if name.lower().endswith(suffix):
      return suffix
  raise DataError(f'{path}: unknown file type; --data takes '
                  f'{", ".join(TEXT_SUFFIXES)} files (optionally .gz) or '
                  'patterns of them.')


def _open_text(path: str):
  if path.endswith('.gz'):
    return gzip.open(path, 'rt', encoding='utf-8', newline='')
  return open(path, encoding='utf-8', newline='')


def _strings(value: Any, where: str, field: str) -> list[str]:
  """A field's value as texts: a string, or a (nested) list of strings."""
  if value is None:
    return []
  if isinstance(value, str):
    return [value]
  if isinstance(value, list):
    return [s for v in value for s in _strings(v, where, field)]
  raise DataError(f'{where}: field {field!r} holds a {type(value).__name__}; '
                  'expected a string or a list of strings (point --field at '
                  'the text itself).')


def _lookup(obj: Any, field: str, where: str) -> list[str]:
  """Texts at key path `field` ('a/b') of a JSON value."""
  def walk(value, keys):
    if not keys:
      return _strings(value, where, field)
    if isinstance(value, list):  # e.g. captions/text over a list of dicts
      return [s for v in value for s in walk(v, keys)]
    if not isinstance(value, dict) or keys[0] not in value:
      have = (f'keys: {", ".join(sorted(map(str, value)))}'
              if isinstance(value, dict) else f'a {type(value).__name__}')
      raise DataError(f'{where}: no field {field!r} (at {keys[0]!r} it has '
                      f'{have}); pass the key holding the text with --field '
                      '(a/b for nested objects).')
    return walk(value[keys[0]], keys[1:])
  if isinstance(obj, dict) and field in obj:  # a key that contains '/'
    return _strings(obj[field], where, field)
  return walk(obj, field.split('/'))


def _need_field(field: str | None, path: str, example: Any,
                what: str = 'the first record has keys') -> str:
  if field:
    return field
  keys = (f'; {what} {", ".join(map(str, example))}'
          if isinstance(example, (dict, list)) else '')
  raise DataError(f'{path}: --field is required for this file (the key or '
                  f'column holding the text){keys}.')


def _read_jsonl(path: str, field: str | None) -> Iterator[str]:
  with _open_text(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f'{path} line {number}'
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f'{where}: not JSON ({e.msg}); a .jsonl file holds '
                        'one JSON object per line.') from e
      yield from _lookup(record, _need_field(field, path, record), where)


def _read_json(path: str, field: str | None) -> Iterator[str]:
  with _open_text(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise DataError(f'{path}: not JSON ({e.msg}); for one object per line '
                      'name the file .jsonl.') from e
  if isinstance(data, dict) and isinstance(data.get('annotations'), list):
    field = field or 'caption'  # COCO captions
    for i, annotation in enumerate(data['annotations']):
      yield from _lookup(annotation, field, f'{path} annotations[{i}]')
  elif isinstance(data, list):
    for i, record in enumerate(data):
      yield from _lookup(record, _need_field(field, path, record),
                         f'{path} [{i}]')
  else:
    raise DataError(f'{path}: not a COCO captions file (no "annotations" '
                    'list) nor a list of records; for one object per line '
                    'name the file .jsonl.')


def _read_csv(path: str, field: str | None, delimiter: str | None
              ) -> Iterator[str]:
  if delimiter is None:
    delimiter = '\t' if _kind(path) == '.tsv' else ','
  with _open_text(path) as f:
    reader = csv.DictReader(f, delimiter=delimiter)
    columns = reader.fieldnames or []
    field = _need_field(field, path, columns, 'its columns are')
    if field not in columns:
      raise DataError(f'{path}: no column {field!r}; its header has '
                      f'{", ".join(map(repr, columns)) or "nothing"} '
                      f'(delimiter {delimiter!r}, --delimiter changes it).')
    for row in reader:
      if row.get(field):
        yield row[field]


def _read_tar(path: str, field: str | None) -> Iterator[str]:
  """Texts of one webdataset shard, streamed (tarfile mode 'r|*')."""
  field = field or 'txt'
  ext, _, key = field.partition('/')
  found, seen = 0, set()
  try:
    with tarfile.open(path, mode='r|*') as tar:
      for member in tar:
        if not member.isfile():
          continue
        # webdataset: the sample key ends at the first dot of the basename.
        member_ext = os.path.basename(member.name).partition('.')[2]
        seen.add(member_ext)
        if member_ext != ext:
          continue
        found += 1
        data = tar.extractfile(member).read().decode('utf-8')
        where = f'{path}:{member.name}'
        if key:
          try:
            record = json.loads(data)
          except json.JSONDecodeError as e:
            raise DataError(f'{where}: not JSON ({e.msg}), but --field '
                            f'{field!r} reads a key of it.') from e
          yield from _lookup(record, key, where)
        else:
          yield data
  except tarfile.TarError as e:
    raise DataError(f'{path}: not a readable tar file ({e}).') from e
  if not found:
    raise DataError(f'{path}: no sample has a .{ext} member (extensions in '
                    f'it: {", ".join(sorted(seen)) or "none"}); pass the '
                    'one holding the text with --field.')


def read_texts(path: str, field: str | None = None,
               delimiter: str | None = None) -> Iterator[str]:
  """The raw texts of one input file (see the module docstring)."""
  kind = _kind(path)
  if kind == '.txt':
    with _open_text(path) as f:
      yield from f
  elif kind in ('.jsonl', '.ndjson'):
    yield from _read_jsonl(path, field)
  elif kind == '.json':
    yield from _read_json(path, field)
  elif kind in ('.csv', '.tsv'):
    yield from _read_csv(path, field, delimiter)
  else:
    yield from _read_tar(path, field)


def iter_texts(files: Iterable[str], field: str | None = None,
               delimiter: str | None = None,
               counts: dict[str, int] | None = None) -> Iterator[str]:
  """Texts of all `files` in order; `counts` (if given) gets per file how
  many non-empty texts it gave."""
  for path in files:
    n = 0
    try:
      for text in read_texts(path, field, delimiter):
        text = clean(text)
        if text:
          n += 1
          yield text
    except UnicodeDecodeError as e:
      raise DataError(f'{path}: not UTF-8 text ({e.reason} at byte '
                      f'{e.start}).') from e
    if counts is not None:
      counts[path] = n


def clean(text: str) -> str:
  """Whitespace runs (newlines, tabs) -> one space; stripped. sentencepiece
  reads one text per line, and its normaliser collapses spaces anyway."""
  return ' '.join(text.split())


# ----------------------------------------------------------- training ---


def _spm_error(e: RuntimeError, vocab_size: int, num_texts: int) -> DataError:
  """sentencepiece's C++ check failure as a message saying what to change."""
  message = str(e)
  too_high = re.search(r'Vocabulary size too high.*<= (\d+)', message)
  if too_high:
    limit = int(too_high.group(1))
    return DataError(
        f'vocab_size={vocab_size} is too large for this text: sentencepiece '
        f'can make at most {limit} pieces from these {num_texts} texts. '
        f'Lower --vocab_size to {limit} or less, or train on more text.')
  too_low = re.search(r'smaller than required_chars\. (\d+) vs (\d+)',
                      message)
  if too_low:
    need = int(too_low.group(2))
    return DataError(
        f'vocab_size={vocab_size} is too small: the text has {need - 4} '
        'characters to cover plus 4 special pieces. Raise --vocab_size to '
        f'at least {need}, or lower --character_coverage (e.g. 0.9995) to '
        'map rare characters to unk.')
  return DataError(f'sentencepiece training failed: {message.strip()}')


def train_tokenizer(texts: Iterable[str], out: str, vocab_size: int,
                    model_type: str = 'bpe', *,
                    character_coverage: float = 1.0,
                    max_sentences: int | None = None,
                    lowercase: bool = False, num_threads: int = 1) -> str:
  """Trains a sentencepiece model with ids pad 0, unk 1, bos 2, eos 3.

  Args:
    texts: the training texts (streamed to a temporary file; whitespace
      collapsed, empty ones skipped).
    out: the model file to write, ending in .model; OUT with .vocab is
      written next to it. Parent directories are created; both files
      appear only once training succeeded.
    vocab_size: number of pieces, the 4 special ones included.
    model_type: 'bpe' or 'unigram'.
    character_coverage: fraction of characters (by count) that get their
      own piece; the rest map to unk. 1.0 for small alphabets, about
      0.9995 for Chinese or Japanese.
    max_sentences: train on at most this many texts, sampled uniformly
      with a fixed seed (their order kept); None: all.
    lowercase: the model lowercases (NFKC + case folding) as part of its
      normalisation, so encoding at training and serving time both do.
    num_threads: sentencepiece threads; 1 keeps the output deterministic.

  Returns:
    `out`.

  Raises:
    DataError: no texts, a bad setting, or a vocab_size the text cannot
      support (with the largest or smallest size that works).
  """
  if not out.endswith('.model'):
    raise DataError(f'out={out!r} must end in .model (the vocab is written '
                    'next to it as .vocab).')
  if model_type not in MODEL_TYPES:
    raise DataError(f'model_type={model_type!r}; use one of {MODEL_TYPES}.')
  if vocab_size <= len(SPECIAL_IDS):
    raise DataError(f'vocab_size={vocab_size} must exceed the '
                    f'{len(SPECIAL_IDS)} special pieces.')
  if not 0 < character_coverage <= 1:
    raise DataError(f'character_coverage={character_coverage} must be in '
                    '(0, 1].')
  if max_sentences is not None and max_sentences < 1:
    raise DataError(f'max_sentences={max_sentences} must be >= 1.')
  out = os.path.abspath(out)
  out_dir = os.path.dirname(out)
  os.makedirs(out_dir, exist_ok=True)
  # The corpus goes next to `out` (the user's chosen disk, not a possibly
  # small /tmp), and the model is written there before atomic renames.
  with tempfile.TemporaryDirectory(dir=out_dir, prefix='.spm_train_') as tmp:
    corpus = os.path.join(tmp, 'corpus.txt')
    count, longest = _write_corpus(texts, corpus, max_sentences)
    if not count:
      raise NoTextsError('No texts to train on: the inputs are empty (or '
                         'the field holds only empty strings).')
    model = io.BytesIO()
    try:
      with open(corpus, encoding='utf-8') as lines:
        # An iterator and a writer rather than input=/model_prefix= paths:
        # the model records those paths, and the temporary ones would make
        # every run's file different.
        spm.SentencePieceTrainer.train(
            sentence_iterator=(line.rstrip('\n') for line in lines),
            model_writer=model, vocab_size=vocab_size,
            model_type=model_type, character_coverage=character_coverage,
            normalization_rule_name=('nmt_nfkc_cf' if lowercase
                                     else 'nmt_nfkc'),
            num_threads=num_threads, input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=max(SPM_MAX_SENTENCE_BYTES, longest),
            minloglevel=2, **SPECIAL_IDS)
    except RuntimeError as e:
      raise _spm_error(e, vocab_size, count) from e
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    with open(os.path.join(tmp, 'spm.vocab'), 'w', encoding='utf-8') as f:
      for i in range(sp.get_piece_size()):  # as spm writes it: piece, score
        f.write(f'{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n')
    with open(os.path.join(tmp, 'spm.model'), 'wb') as f:
      f.write(model.getvalue())
    os.replace(os.path.join(tmp, 'spm.vocab'),
               out[:-len('.model')] + '.vocab')
    os.replace(os.path.join(tmp, 'spm.model'), out)
  return out


def _write_corpus(texts: Iterable[str], path: str,
                  max_sentences: int | None) -> tuple[int, int]:
  """Writes cleaned texts one per line; returns (count, longest in bytes)."""
  count = longest = 0
  with open(path, 'w', encoding='utf-8') as f:
    if max_sentences is None:
      for text in texts:
        text = clean(text)
        if text:
          f.write(text + '\n')
          count += 1
          longest = max(longest, len(text.encode('utf-8')))
      return count, longest
    # Reservoir sampling: a uniform sample without holding every text; the
    # fixed seed makes it (and so the model) reproducible.
    rng, sample, seen = random.Random(0), [], 0
    for text in texts:
      text = clean(text)
      if not text:
        continue
      if len(sample) < max_sentences:
        sample.append((seen, text))
      else:
        slot = rng.randrange(seen + 1)
        if slot < max_sentences:
          sample[slot] = (seen, text)
      seen += 1
    for _, text in sorted(sample):
      f.write(text + '\n')
      longest = max(longest, len(text.encode('utf-8')))
    return len(sample), longest


# ------------------------------------------------------------- inspect ---


def _load(path: str) -> spm.SentencePieceProcessor:
  if not os.path.isfile(path):
    raise DataError(f'{path}: no such tokenizer model file.')
  try:
    return spm.SentencePieceProcessor(model_file=path)
  except (RuntimeError, OSError) as e:
    raise DataError(f'{path}: not a sentencepiece model ({e}).') from e


def _model_settings(path: str) -> str:
  """'bpe, nmt_nfkc' from the model proto ('' without protobuf)."""
  try:
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
    proto = sentencepiece_model_pb2.ModelProto()
    with open(path, 'rb') as f:
      proto.ParseFromString(f.read())
    kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(
        proto.trainer_spec.model_type).lower()
    return f'{kind}, normalisation {proto.normalizer_spec.name}'
  except Exception:  # pylint: disable=broad-except
    return ''  # informational only; the ids below are what matters


def describe(path: str, num_pieces: int = 12) -> str:
  """What `info` prints: size, the special ids, whether the framework can
  use it, and a sample of pieces."""
  from multimodal.data import text as text_lib  # pylint: disable=g-import-not-at-top
  sp = _load(path)
  size = sp.get_piece_size()
  piece = lambda i: repr(sp.id_to_piece(i)) if 0 <= i < size else '-'
  settings = _model_settings(path)
  lines = [f'{path}: vocab_size {size}' + (f' ({settings})' if settings
                                            else '')]
  lines.append('ids: ' + ', '.join(
      f'{name} {i} {piece(i)}' for name, i in (
          ('pad', sp.pad_id()), ('unk', sp.unk_id()), ('bos', sp.bos_id()),
          ('eos', sp.eos_id()))))
  try:
    text_lib.Tokenizer(path, max_len=2)
    lines.append('framework: usable (pad 0, bos and eos defined); set '
                 f'vocab_size >= {size} in the text towers and decoder')
  except ValueError as e:
    lines.append(f'framework: NOT usable: {e}')
  normal = [i for i in range(size)
            if not (sp.is_control(i) or sp.is_unknown(i))]
  shown = normal[:num_pieces // 2] + normal[-(num_pieces - num_pieces // 2):]
  lines.append('pieces: ' + ', '.join(
      f'{i} {piece(i)}' for i in sorted(set(shown))))
  return '\n'.join(lines)


def encode(path: str, text: str) -> str:
  """What `encode` prints: pieces, ids (with the eos the pipeline appends)
  and the decoded text."""
  sp = _load(path)
  ids = sp.encode(text)
  eos = [sp.eos_id()] if sp.eos_id() >= 0 else []
  return '\n'.join([
      'pieces: ' + ' '.join(sp.encode(text, out_type=str)),
      f'ids: {ids + eos}' + (' (the last is eos)' if eos else ''),
      f'decoded: {sp.decode(ids)}'])


# ----------------------------------------------------------------- CLI ---


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m multimodal.tokenizer',
      description='Train and inspect sentencepiece tokenizers with ids pad '
      '0, unk 1, bos 2, eos 3.')
  commands = parser.add_subparsers(dest='command', required=True)
  train = commands.add_parser(
      'train', help='train a tokenizer on text files',
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  train.add_argument('--data', action='append', required=True,
                     metavar='PATH', help='input file or pattern (repeat '
                     'for more)')
  train.add_argument('--field', help='JSON key (a/b nested), CSV column or '
                     'webdataset member extension holding the text')
  train.add_argument('--delimiter', help='CSV delimiter (default: comma, '
                     'tab for .tsv)')
  train.add_argument('--vocab_size', type=int, required=True)
  train.add_argument('--out', required=True, help='DIR/NAME.model')
  train.add_argument('--model_type', choices=MODEL_TYPES, default='bpe')
  train.add_argument('--character_coverage', type=float, default=1.0)
  train.add_argument('--max_sentences', type=int,
                     help='train on a fixed-seed sample of this many texts')
  train.add_argument('--lowercase', action='store_true',
                     help='the model lowercases text when encoding')
  train.add_argument('--num_threads', type=int, default=1,
                     help='more is faster; 1 is deterministic')
  info = commands.add_parser('info', help='vocab size, ids, some pieces')
  info.add_argument('model')
  enc = commands.add_parser('encode', help='pieces and ids of a text')
  enc.add_argument('model')
  enc.add_argument('text')
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == 'info':
      print(describe(args.model))
    elif args.command == 'encode':
      print(encode(args.model, args.text))
    else:
      files = expand_inputs(args.data)
      counts = {}
      texts = iter_texts(files, args.field, args.delimiter, counts)
      try:
        out = train_tokenizer(
            texts, args.out, args.vocab_size, args.model_type,
            character_coverage=args.character_coverage,
            max_sentences=args.max_sentences, lowercase=args.lowercase,
            num_threads=args.num_threads)
      except NoTextsError as e:
        named = ', '.join(files[:3]) + (
            f' and {len(files) - 3} more' if len(files) > 3 else '')
        raise NoTextsError(
            f'No texts found in {named}: every line, record or sample was '
            'empty; check the files and that --field names the text.') from e
      total = sum(counts.values())
      used = (f', trained on a sample of {min(total, args.max_sentences)}'
              if args.max_sentences else '')
      print(f'Read {total} texts from {len(files)} file(s){used}.')
      print(describe(out, num_pieces=8))
      print(f'Use it with --config.input.tokenizer={out}')
  except DataError as e:
    # One line, whatever the message holds, so scripts can grep it.
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
