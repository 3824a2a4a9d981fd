r"""CLIP-score data filtering with a contrastive export.

  python -m multimodal.filter --pretrained EXPORT --data SOURCE \
      (--keep_fraction F | --threshold T) --out MANIFEST.jsonl \
      [--pairs image:caption] [--scores ALL.jsonl] [--histogram H.png]

scores every record of a data source (any registered source, given as the
trainer's config.dataset gives it: multimodal/filter/data.py) by the cosine
similarity of the export's normalised media and text embeddings
(scoring.py: the pipeline's preprocessing, the inference API's
Predictor.embed_arrays), keeps the best ones (cut.py), and writes

  MANIFEST.jsonl           the kept records in source order, each with its
                           score under `clip_score` (and its pairs' scores
                           under `clip_score_pairs` when there are several),
                           for the `jsonl` source (records.py);
  MANIFEST_media/          media of sources that do not name files (tfds,
                           webdataset, COCO, LibriSpeech), once per content;
  MANIFEST.summary.json    counts (records, scored, kept, skipped per
                           reason), the cut and the trainer's flags;
  MANIFEST.hist.png        the scores' histogram with the cut marked;
  --scores FILE            optionally every record: index, id, scores, kept,
                           or the reason it was skipped.

A record's score is the mean of its pairs' scores (`--combine min`: the
lowest); a pair's score is the mean cosine over the record's phrasings.
LAION kept pairs with cosine >= 0.28-0.3 under OpenAI's CLIP; DataComp's
simplest strong baseline keeps the top 30%. Scores of another model are on
another scale, so look at the histogram before picking a threshold.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

from absl import logging
import numpy as np

from multimodal import pretrained as pretrained_lib
from multimodal.data import kinds as kinds_lib
from multimodal.data import sources
from multimodal.filter import cut as cut_lib
from multimodal.filter import pairs as pairs_lib
from multimodal.filter import records as records_lib
from multimodal.filter import scoring

SCORE_KEY = 'clip_score'
_MANIFESTS = ('jsonl', 'csv')


@dataclasses.dataclass
class Result:
  """What a filtering run did (also written as MANIFEST.summary.json)."""
  summary: dict[str, Any]
  scores: scoring.Scores
  record_scores: np.ndarray  # float32 [S], combined, in scores.indices order
  kept: np.ndarray           # bool [S]


def default_paths(out: str) -> dict[str, str]:
  """The files written beside the manifest `out` (module docstring)."""
  stem = out[:-len('.jsonl')] if out.endswith('.jsonl') else out
  return {'summary': f'{stem}.summary.json', 'histogram': f'{stem}.hist.png',
          'media': f'{stem}_media'}


def _inner(source):
  """The source under any slice."""
  while isinstance(source, sources.base.SlicedSource):
    source = source.source
  return source


def filter_data(pretrained: str, dataset_cfg, split: str, out: str, *,
                keep_fraction: float | None = None,
                threshold: float | None = None,
                pairs: str | None = None, combine: str = 'mean',
                scores_path: str | None = None,
                histogram_path: str | None = '',
                batch_size: int = 256, max_texts: int = 8,
                num_threads: int = 4, score_key: str = SCORE_KEY) -> Result:
  """Scores `split` of `dataset_cfg` with the export `pretrained`, writes the
  kept records to the JSONL manifest `out` (see the module docstring).

  Args:
    pretrained: an export (or workdir) of a contrastive model.
    dataset_cfg: config.dataset of the source (dict or ConfigDict).
    split: the split to read ('train', 'train[:10%]').
    out: the manifest to write ('.jsonl').
    keep_fraction, threshold: exactly one (multimodal/filter/cut.py).
    pairs: '--pairs' (multimodal/filter/pairs.py), None for the export's.
    combine: 'mean' or 'min' of a record's pair scores.
    scores_path: where to write every record's scores (None: nowhere).
    histogram_path: the histogram PNG; '' for the default beside `out`,
      None for none.
    batch_size, max_texts, num_threads: see scoring.score_source.
    score_key: the record key the score is written under.

  Returns:
    A Result; its summary is also printed by the command line.
  """
  cut_lib.check_choice(keep_fraction, threshold)
  cut_lib.combine(np.zeros((0, 1)), combine)  # an unknown value fails now
  for name, value in (('batch_size', batch_size), ('max_texts', max_texts),
                      ('num_threads', num_threads)):
    if value < 1:
      raise ValueError(f'--{name}={value} must be at least 1.')
  if not out.endswith('.jsonl'):
    raise ValueError(f'--out={out!r}: the manifest is JSON lines; name it '
                     '*.jsonl.')
  paths = default_paths(out)
  if histogram_path == '':
    histogram_path = paths['histogram']
  if histogram_path:
    try:
      import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise ImportError(
          'The score histogram needs matplotlib: pip install -e ".[filter]" '
          '(or pass --histogram= to write none).') from e

  export = pretrained_lib.load_pretrained(pretrained)
  if export.config is None:
    raise ValueError(f'{pretrained} has no config.json: filtering needs the '
                     'input settings it was trained with.')
  input_cfg = export.config.input
  chosen = pairs_lib.resolve(pairs, export.model_config, input_cfg,
                             where=pretrained)
  source = sources.open_source(dataset_cfg, split)
  if os.path.abspath(out) == getattr(_inner(source), 'path', None):
    raise ValueError(f'--out={out} is the manifest being filtered; write '
                     'the filtered one to a new file.')
  scoring.check_keys(source, sorted({k for p in chosen
                                     for k in (p.media_key, p.text_key)}))
  for p in chosen:
    logging.info('Scoring %s', p.describe())
  scores = scoring.score_source(
      source, export.predictor(buckets=(batch_size,)), chosen, input_cfg,
      export.tokenizer,
      batch_size=batch_size, max_texts=max_texts, num_threads=num_threads)
  record_scores = cut_lib.combine(scores.pair_scores, combine)
  kept, cut = cut_lib.select(record_scores, keep_fraction, threshold)

  writer, raw = _writer(dataset_cfg, split, source, out, paths['media'],
                        chosen, input_cfg)
  pair_names = [p.name for p in chosen]
  _write_jsonl(out, (
      _out_record(writer(raw[int(i)]), scores.keys[j], record_scores[j],
                  scores.pair_scores[j], pair_names, score_key)
      for j, i in enumerate(scores.indices) if kept[j]))
  if scores_path:
    _write_scores(scores_path, scores, record_scores, kept, pair_names)
  if histogram_path:
    what = (f'keep_fraction={keep_fraction}' if keep_fraction is not None
            else f'threshold={threshold}')
    data = source.describe() if hasattr(source, 'describe') else split
    cut_lib.histogram(
        histogram_path, record_scores, kept, cut,
        title=f'{os.path.basename(pretrained.rstrip("/"))}: {what}, kept '
              f'{int(kept.sum())} of {len(kept)} scored ({combine} of '
              f'{", ".join(pair_names)}) on {data}',
        pair_scores=scores.pair_scores, pair_names=pair_names)

  path_keys = tuple(sorted(writer.path_keys))
  summary = {
      'pretrained': os.path.abspath(pretrained),
      'data': source.describe() if hasattr(source, 'describe') else split,
      'pairs': pair_names, 'combine': combine,
      'keep_fraction': keep_fraction, 'threshold': threshold,
      'cut': cut, 'tie_rule': ('>= threshold kept' if threshold is not None
                               else 'equal scores: earlier record kept'),
      'records': scores.num_records, 'scored': len(scores.indices),
      'kept': int(kept.sum()), 'skipped': len(scores.skipped),
      'skipped_by_reason': dict(sorted(scores.counts.counts.items())),
      'skipped_examples': scores.counts.examples,
      'score_mean': _stat(np.mean, record_scores),
      'score_kept_mean': _stat(np.mean, record_scores[kept]),
      'out': os.path.abspath(out), 'path_keys': list(path_keys),
      'media_written': writer.media_written,
      'histogram': os.path.abspath(histogram_path) if histogram_path else None,
      'scores': os.path.abspath(scores_path) if scores_path else None,
      'train_flags': train_flags(out, path_keys),
  }
  with open(paths['summary'], 'w') as f:
    json.dump(summary, f, indent=2)
  return Result(summary=summary, scores=scores, record_scores=record_scores,
                kept=kept)


def _stat(fn, values) -> float | None:
  return float(fn(values)) if len(values) else None


def train_flags(out: str, path_keys: Sequence[str]) -> str:
  """The trainer flags that read the filtered manifest as its train split."""
  flags = ['--config.dataset.source=jsonl',
           f'--config.dataset.splits.train={os.path.abspath(out)}']
  if path_keys:
    flags.append(f'--config.dataset.path_keys="{tuple(path_keys)!r}"')
  return ' '.join(flags)


def _writer(dataset_cfg, split, source, out, media_dir, chosen, input_cfg):
  """(ManifestWriter, records to write by source index): manifest sources
  are re-opened without path_keys, so their records hold the paths."""
  inner = _inner(source)
  audio_keys = {p.media_key for p in chosen
                if kinds_lib.kind_of(p.media_field, input_cfg) == 'audio'}
  name = sources.base.cfg_get(dataset_cfg, 'source', 'tfds')
  keys = getattr(inner, 'path_keys', ())
  if name in _MANIFESTS and keys:
    cfg = dict(dataset_cfg.to_dict() if hasattr(dataset_cfg, 'to_dict')
               else dataset_cfg)
    cfg['path_keys'] = ()
    cfg.pop('required_keys', None)
    raw = sources.open_source(cfg, split)
    return records_lib.ManifestWriter(
        out, media_dir, source_root=inner.root, path_keys=keys,
        audio_keys=audio_keys), raw
  return records_lib.ManifestWriter(
      out, media_dir, audio_keys=audio_keys,
      sample_rate=int(input_cfg.get('sample_rate') or 16000)), source


def _out_record(record, rid, score, pair_scores, pair_names, score_key):
  if 'source_key' not in record:
    record['source_key'] = rid
  record[score_key] = round(float(score), 6)
  if len(pair_names) > 1:
    record[f'{score_key}_pairs'] = {
        n: round(float(s), 6) for n, s in zip(pair_names, pair_scores)}
  return record


def _write_jsonl(path: str, rows) -> int:
  """Writes rows atomically (a reader never sees half a manifest)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  n = 0
  with open(tmp, 'w') as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + '\n')
      n += 1
  os.replace(tmp, path)
  return n


def _write_scores(path, scores, record_scores, kept, pair_names) -> None:
  rows = []
  for j, i in enumerate(scores.indices):
    rows.append((int(i), {
        'index': int(i), 'key': scores.keys[j],
        'score': round(float(record_scores[j]), 6),
        'pairs': {n: round(float(s), 6)
                  for n, s in zip(pair_names, scores.pair_scores[j])},
        'kept': bool(kept[j])}))
  for index, rid, reason, message in scores.skipped:
    rows.append((index, {'index': index, 'key': rid, 'skipped': reason,
                         'error': message}))
  _write_jsonl(path, (row for _, row in sorted(rows, key=lambda r: r[0])))
