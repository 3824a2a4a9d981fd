"""Which (media, text) pairs of a record a contrastive export scores.

A pair names two model input fields (the export's `model.inputs`: field ->
tower) and the record keys they read:

  media   a field of a non-text kind ('image', 'audio'): its tower embeds
          the record's image or clip;
  text    a field of a text kind ('image_text'): the text tower embeds the
          record's text (a string, or a list of phrasings).

By default the pairs are the export's own contrastive pairs that join a
media field to a text field, reading the record keys the export was
trained with (its `config.input.fields`). `--pairs` names them instead, as
comma-separated `MEDIA:TEXT` items where each side is `KEY` (a record key)
or `FIELD=KEY`:

  image:caption               the 'image' key through the field reading it
                              (or the field named 'image'), against the
                              'caption' key through image's text partner
  image=jpg:image_text=txt    fully explicit (webdataset members)
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from multimodal import registry
from multimodal.data import kinds as kinds_lib


@dataclasses.dataclass(frozen=True)
class Pair:
  """One scored pair: model fields and the record keys they read."""
  media_field: str
  media_key: str
  text_field: str
  text_key: str

  @property
  def name(self) -> str:
    """'MEDIA_KEY:TEXT_KEY', how reports and scores files name the pair."""
    return f'{self.media_key}:{self.text_key}'

  def describe(self) -> str:
    return (f'{self.media_key!r} (field {self.media_field}) vs '
            f'{self.text_key!r} (field {self.text_field})')


def is_text(field: str, input_cfg) -> bool:
  return registry.get('field', kinds_lib.kind_of(field, input_cfg)).text


def _model_fields(model_config, input_cfg, where: str
                  ) -> tuple[list[str], list[str], list[tuple[str, str]]]:
  """(media fields, text fields, contrastive pairs) of a contrastive model;
  a clear error for a model that cannot score (media, text) pairs."""
  name = model_config.get('name')
  inputs = dict(model_config.get('inputs') or {})
  if name != 'contrastive' or not inputs:
    raise ValueError(
        f'{where} is a {name!r} model; CLIP-score filtering needs a '
        "contrastive export ('contrastive' model: towers embedding media "
        'and text into one space), e.g. one of projects/digits/configs/'
        'contrastive.py or experiments/image_text.py:siglip.')
  text = [f for f in inputs if is_text(f, input_cfg)]
  media = [f for f in inputs if f not in text]
  if not text:
    raise ValueError(
        f'{where} has no text tower: its input fields {sorted(inputs)} are '
        'all media, so there is no text to score against. Use an export '
        'trained with an image-text or speech-text pair.')
  if not media:
    raise ValueError(f'{where} has no image or audio tower (its input '
                     f'fields are {sorted(inputs)}).')
  pairs = [tuple(p) for p in model_config.get('pairs') or ()]
  return media, text, pairs


def _side(text: str) -> tuple[str | None, str]:
  """'FIELD=KEY' -> (FIELD, KEY); 'KEY' -> (None, KEY)."""
  field, sep, key = text.strip().partition('=')
  if not sep:
    return None, field
  return field.strip() or None, key.strip()


def _partners(field: str, pairs, text: Sequence[str]) -> list[str]:
  """The text fields the model contrasts `field` with."""
  out = []
  for a, b in pairs:
    other = b if a == field else a if b == field else None
    if other in text and other not in out:
      out.append(other)
  return out


def resolve(spec: str | None, model_config: Mapping, input_cfg,
            where: str = 'the export') -> list[Pair]:
  """The pairs to score (see the module docstring).

  Args:
    spec: '--pairs' (comma-separated MEDIA:TEXT items) or None/'' for the
      export's own pairs.
    model_config: the export's model config (dict).
    input_cfg: the export's config.input (fields, kinds).
    where: names the export in errors.

  Returns:
    One Pair per item, in order.
  """
  media, text, pairs = _model_fields(model_config, input_cfg, where)
  keys = dict(input_cfg.get('fields') or {})
  if not spec:
    out = []
    for a, b in pairs:
      if a in media and b in text:
        out.append(Pair(a, keys.get(a, a), b, keys.get(b, b)))
      elif b in media and a in text:
        out.append(Pair(b, keys.get(b, b), a, keys.get(a, a)))
    if not out:
      raise ValueError(f'{where} contrasts no media field with a text field '
                       f'(pairs {pairs}); name them with --pairs '
                       'MEDIA_KEY:TEXT_KEY.')
    return out
  out = []
  for item in spec.split(','):
    if item.count(':') != 1 or not all(s.strip() for s in item.split(':')):
      raise ValueError(f'--pairs item {item!r} is not MEDIA:TEXT; e.g. '
                       "'image:caption' or 'image=jpg:image_text=txt'.")
    left, right = item.split(':')
    field, media_key = _side(left)
    if field is None:
      by_key = [f for f in media if keys.get(f) == media_key]
      field = by_key[0] if by_key else media_key
    if field not in media:
      raise ValueError(
          f'--pairs {item!r}: {field!r} is not a media field of {where} '
          f'(media fields: {media}, reading record keys '
          f'{[keys.get(f, f) for f in media]}). Write FIELD=KEY to read '
          f'another record key, e.g. {media[0]}={media_key}.')
    text_field, text_key = _side(right)
    if text_field is None:
      partners = _partners(field, pairs, text) or text
      if len(partners) != 1:
        raise ValueError(
            f'--pairs {item!r}: {field} pairs with several text fields '
            f'{partners}; name one, e.g. {partners[0]}={text_key}.')
      text_field = partners[0]
    if text_field not in text:
      raise ValueError(f'--pairs {item!r}: {text_field!r} is not a text '
                       f'field of {where}; its text fields are {text}.')
    out.append(Pair(field, media_key, text_field, text_key))
  return out
