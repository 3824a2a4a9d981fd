"""CLIP scores of every record of a source: cosine similarity of the
export's L2-normalised media and text embeddings.

Records are read from the source and preprocessed by the input pipeline's
own `Preprocess` (the export's config.input, evaluation mode: no
augmentation, audio centred), so a record is scored on exactly the arrays
the trainer's evaluation would feed the model, and embedded by the
inference API's `Predictor.embed_arrays` (multimodal/predictor.py: jitted
once per tower, batches padded to fixed sizes). A text value may be one
string or a list of phrasings (digits' 'image_captions'): every phrasing
(up to `max_texts`) is embedded and the pair's score is the mean cosine
over them, since a record is kept or dropped with all its phrasings.

Records that cannot be used (an unreadable file, an undecodable image, an
empty caption: multimodal.data.errors.DataError) are not scored; they are
counted per reason, as the trainer's `on_error='skip'` counts them.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Sequence

from absl import logging
import ml_collections as mlc
import numpy as np

from multimodal.data import kinds as kinds_lib
from multimodal.data import pipeline
from multimodal.data import sources
from multimodal.data import text as text_lib
from multimodal.data.errors import DataError
from multimodal.data.errors import ReasonCounts
from multimodal.filter.pairs import Pair


@dataclasses.dataclass
class Scores:
  """What scoring a source found.

  Attributes:
    num_records: records in the source.
    indices: int64 [S], source indices of the S scored records, ascending.
    keys: the S scored records' ids ('train.jsonl:17', ...).
    pair_scores: float32 [S, P], the mean cosine of each pair.
    pairs: the P pairs, in column order.
    skipped: (index, record id, reason, message) of each record not scored.
    counts: skipped records per reason, with example messages.
  """
  num_records: int
  indices: np.ndarray
  keys: list[str]
  pair_scores: np.ndarray
  pairs: list[Pair]
  skipped: list[tuple[int, str, str, str]]
  counts: ReasonCounts


def input_config(input_cfg, pairs: Sequence[Pair], max_texts: int
                 ) -> tuple[mlc.ConfigDict, dict[Pair, tuple[str, str]]]:
  """The export's input config reading the pairs' record keys.

  Each distinct media (field, key) and text key gets an internal batch
  field ('media0', 'text0', ...) of the original field's kind (texts:
  kind 'texts', every phrasing), so two pairs may read one key or one
  field may read two keys. Returns (config, pair -> (media, text) fields).
  """
  cfg = mlc.ConfigDict(input_cfg.to_dict() if hasattr(input_cfg, 'to_dict')
                       else dict(input_cfg))
  fields, kinds, names = {}, {}, {}
  media_names, text_names = {}, {}
  for pair in pairs:
    m = media_names.setdefault((pair.media_field, pair.media_key),
                               f'media{len(media_names)}')
    t = text_names.setdefault(pair.text_key, f'text{len(text_names)}')
    fields[m], kinds[m] = pair.media_key, kinds_lib.kind_of(
        pair.media_field, input_cfg)
    fields[t], kinds[t] = pair.text_key, 'texts'
    names[pair] = (m, t)
  cfg.fields = fields
  cfg.kinds = kinds
  cfg.max_references = max_texts
  cfg.on_error = 'raise'  # counted here, per record
  cfg.aligned_fields = ()
  return cfg, names


def check_keys(source, keys: Sequence[str], probe: int = 20) -> None:
  """Raises ValueError when none of the first `probe` readable records has
  one of `keys`: a mistyped key, not a bad record."""
  seen = []
  for i in range(min(len(source), probe)):
    try:
      record = source[i]
    except DataError:
      continue
    seen.append(record)
  if not seen:
    return  # nothing readable to judge by; scoring counts the reasons
  for key in keys:
    if all(sources.lookup(r, key, None) is None for r in seen):
      have = sorted(k for k in seen[0] if not k.startswith('__'))
      raise ValueError(
          f'No record has the key {key!r} (the first {len(seen)} records '
          f'read have {have}). Name the record keys with --pairs '
          "MEDIA_KEY:TEXT_KEY, e.g. --pairs image:caption.")


def score_source(source, predictor, pairs: Sequence[Pair], input_cfg,
                 tokenizer: str, *, batch_size: int = 256,
                 max_texts: int = 8, num_threads: int = 4) -> Scores:
  """Scores every record of `source` (see the module docstring).

  Args:
    source: a random-access source (multimodal.data.sources).
    predictor: the export's multimodal.predictor.Predictor (its buckets
      set the sizes of the model calls).
    pairs: the pairs to score (multimodal.filter.pairs.resolve).
    input_cfg: the export's config.input.
    tokenizer: the export's sentencepiece model path.
    batch_size: records read and preprocessed per step.
    max_texts: phrasings of a text value scored (the first ones).
    num_threads: threads reading and preprocessing records.
  """
  cfg, names = input_config(input_cfg, pairs, max_texts)
  tok = text_lib.Tokenizer(tokenizer, cfg.max_text_len)
  preprocess = pipeline.Preprocess(cfg, list(cfg.fields), train=False,
                                   tokenizer=tok)

  def embedder(field, x):
    """float32 [N, E] unit-norm embeddings of model field `field`."""
    modality = kinds_lib.kind_of(field, input_cfg)
    return predictor.embed_arrays({modality: x})[modality]

  counts, skipped = ReasonCounts(), []
  indices, keys, rows = [], [], []

  def load(index):
    rid = f'#{index}'
    try:
      record = source[index]
      rid = pipeline.record_id(record)
      return index, rid, preprocess(record, np.random.default_rng(index))
    except DataError as e:
      return index, e.record or rid, e

  n = len(source)
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    chunks = [range(s, min(n, s + batch_size))
              for s in range(0, n, batch_size)]
    pending = pool.map(load, chunks[0]) if chunks else iter(())
    for c in range(len(chunks)):
      loaded = list(pending)
      if c + 1 < len(chunks):  # read the next chunk while this one embeds
        pending = pool.map(load, chunks[c + 1])
      good = []
      for index, rid, ex in loaded:
        if isinstance(ex, DataError):
          # Preprocess (on_error='raise') rewords the error with advice for
          # the trainer; the original names the record and the problem.
          if isinstance(ex.__cause__, DataError):
            ex.__cause__.record = ex.__cause__.record or rid
            ex = ex.__cause__
          where = (f' (file {ex.path})' if ex.path and ex.path not in
                   str(ex) else '')
          message = f'{ex}{where}'
          counts.add(ex.reason, message)
          skipped.append((index, rid, ex.reason, message))
        else:
          good.append((index, rid, ex))
      if good:
        rows.append(_score_batch([ex for _, _, ex in good], pairs, names,
                                 embedder))
        indices.extend(i for i, _, _ in good)
        keys.extend(r for _, r, _ in good)
      logging.info('Read %d of %d records: %d scored, %d skipped.',
                   chunks[c].stop, n, len(indices), len(skipped))
  pair_scores = (np.concatenate(rows) if rows
                 else np.zeros((0, len(pairs)), np.float32))
  return Scores(num_records=n, indices=np.asarray(indices, np.int64),
                keys=keys, pair_scores=pair_scores, pairs=list(pairs),
                skipped=skipped, counts=counts)


def _score_batch(examples, pairs, names, embedder) -> np.ndarray:
  """float32 [B, P]: each pair's mean cosine over the record's texts."""
  stacked = {f: np.stack([ex[f] for ex in examples]) for f in examples[0]}
  media_emb, text_emb = {}, {}
  out = np.zeros((len(examples), len(pairs)), np.float32)
  for p, pair in enumerate(pairs):
    m, t = names[pair]
    if (pair.media_field, m) not in media_emb:
      media_emb[pair.media_field, m] = embedder(pair.media_field, stacked[m])
    tokens = stacked[t]  # int32 [B, R, L]; rows beyond a record's texts: 0
    valid = tokens.any(-1)
    if (pair.text_field, t) not in text_emb:
      text_emb[pair.text_field, t] = embedder(pair.text_field, tokens[valid])
    rows = np.nonzero(valid)[0]
    cos = np.einsum('ve,ve->v', media_emb[pair.media_field, m][rows],
                    text_emb[pair.text_field, t])
    sums = np.zeros(len(examples), np.float64)
    np.add.at(sums, rows, cos)
    out[:, p] = sums / valid.sum(-1)
  return out
