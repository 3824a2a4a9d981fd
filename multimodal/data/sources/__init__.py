"""INTERIM (replaced by the sources branch): data sources by name."""
from __future__ import annotations

from multimodal import registry


def open_source(dataset_cfg, split):
  return registry.get('source', dataset_cfg.source)(dataset_cfg, split)


def validate(source, keys, text_keys=(), max_records=None):
  raise NotImplementedError('interim')
