"""Data sources chosen in config: `config.dataset.source` names the format.

  source          module          reads
  tfds            tfds.py         prepared tensorflow_datasets data
  jsonl, csv      manifest.py     a manifest per split naming media files
  webdataset      webdataset.py   tar shards (img2dataset layout)
  coco_captions   coco.py         COCO captions, native layout
  librispeech     librispeech.py  LibriSpeech, native layout

Importing this package registers them all (`registry.get('source', NAME)`);
`open_source(config.dataset, 'train[:90%]')` opens a (sliced) split and
`validate(source, keys, text_keys)` counts unreadable records before
training. Each opener also carries a config check (`base.checked_by`)
that the trainer runs before reading anything (multimodal/config_checks.py).
See base.py for what a source is;
`python -m multimodal.data.sources.index_webdataset PATTERN` caches shard
indexes ahead of training.
"""
from __future__ import annotations

# Each format module registers itself on import.
# pylint: disable=unused-import
from multimodal.data.sources import coco
from multimodal.data.sources import librispeech
from multimodal.data.sources import manifest
from multimodal.data.sources import tfds
from multimodal.data.sources import webdataset
from multimodal.data.sources.base import lookup
from multimodal.data.sources.base import open_source
from multimodal.data.sources.base import parse_split
from multimodal.data.sources.base import RecordError
from multimodal.data.sources.base import Source
from multimodal.data.sources.base import validate
from multimodal.data.sources.base import ValidationReport
from multimodal.data.sources.base import text_problem
