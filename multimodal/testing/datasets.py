"""Small learnable datasets in every source format, written on the fly.

Two kinds of records, deterministic given (n, seed):

  image   32x32 coloured shapes on a plain grey background, drawn with
          Pillow: {'image': PNG/JPEG bytes, 'image_ext', 'caption': str,
          'captions': list[str] (2-4 phrasings, caption first), 'label': int
          (colour x shape x size, 30 classes), 'width', 'height'}; captions
          like 'a red circle', 'a small blue square'.
  speech  16 kHz tones of 0.5-1 s whose pitch and contour set the
          transcript: {'audio': FLAC/WAV bytes, 'audio_ext', 'text': e.g.
          'a low rising tone', 'label': int (9 classes), 'duration',
          'sample_rate'}.

Writers put them in each format's layout and return what its config needs:

  write_jsonl(dir, records)       -> manifest path (DIR/SPLIT.jsonl)
  write_csv(dir, records)         -> manifest path (DIR/SPLIT.tsv or .csv)
  write_webdataset(dir, records)  -> brace pattern of the shards
  write_coco(root, split, records)        -> root (image records only)
  write_librispeech(root, split, records) -> root (speech records only)

`records` may be omitted: then `kind`, `n` and `seed` make them.
`corrupt(records, ...)` damages chosen records for fuzz tests; the writers
carry out the file-level damage ('missing_file', 'bad_json', 'bad_row').
`truncate_file` cuts a file (a shard) short.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw
import soundfile as sf

COLORS = {'red': (220, 30, 30), 'green': (30, 160, 50),
          'blue': (40, 70, 220), 'yellow': (225, 200, 20),
          'purple': (140, 50, 180)}
SHAPES = ('circle', 'square', 'triangle')
SIZES = ('small', 'large')
PITCHES = {'low': 220.0, 'middle': 440.0, 'high': 880.0}
CONTOURS = ('rising', 'falling', 'steady')
SAMPLE_RATE = 16000

# Kinds of damage corrupt() applies. Content kinds change the record;
# file kinds are carried out by the writers.
CONTENT_CORRUPTIONS = ('truncated', 'random_bytes', 'bad_header',
                       'empty_text')
FILE_CORRUPTIONS = ('missing_file', 'bad_json', 'bad_row')

Record = dict[str, Any]


# ----------------------------------------------------------------------------
# Records.


def image_caption_records(n: int = 64, seed: int = 0, size: int = 32,
                          image_format: str = 'png') -> list[Record]:
  """`n` shape images with captions (see module docstring)."""
  rng = np.random.default_rng(seed)
  records = []
  for _ in range(n):
    c, s, z = (int(rng.integers(k)) for k in (len(COLORS), len(SHAPES),
                                                len(SIZES)))
    color, shape, big = list(COLORS)[c], SHAPES[s], SIZES[z]
    grey = int(rng.integers(170, 256))
    img = Image.new('RGB', (size, size), (grey,) * 3)
    radius = (rng.uniform(0.3, 0.4) if z else rng.uniform(0.14, 0.2)) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    draw = ImageDraw.Draw(img)
    if shape == 'circle':
      draw.ellipse(box, fill=COLORS[color])
    elif shape == 'square':
      draw.rectangle(box, fill=COLORS[color])
    else:
      draw.polygon([(cx, cy - radius), (cx - radius, cy + radius),
                    (cx + radius, cy + radius)], fill=COLORS[color])
    phrasings = [f'a {color} {shape}', f'a {big} {color} {shape}',
                 f'a picture of a {color} {shape}',
                 f'there is a {big} {color} {shape}']
    order = rng.permutation(len(phrasings))[:int(rng.integers(2, 5))]
    captions = [phrasings[i] for i in order]
    records.append({'image': encode_image(img, image_format),
                    'image_ext': 'jpg' if image_format == 'jpeg' else
                                 image_format,
                    'caption': captions[0], 'captions': captions,
                    'label': (c * len(SHAPES) + s) * len(SIZES) + z,
                    'width': size, 'height': size})
  return records


DIRECTIONS = {'left': (-1, 0), 'right': (1, 0), 'up': (0, -1),
              'down': (0, 1)}


def video_caption_records(n: int = 32, seed: int = 0, frames: int = 8,
                          size: int = 16) -> list[Record]:
  """`n` clips of a square moving across the frame (module docstring): the
  direction is only in the order of the frames."""
  rng = np.random.default_rng(seed)
  records = []
  side = max(size // 4, 2)
  for _ in range(n):
    c, d = int(rng.integers(len(COLORS))), int(rng.integers(len(DIRECTIONS)))
    color, direction = list(COLORS)[c], list(DIRECTIONS)[d]
    (dx, dy), step = DIRECTIONS[direction], (size - side) / max(frames - 1, 1)
    start = rng.integers(0, size - side + 1, size=2)
    clip = np.full((frames, size, size, 3), int(rng.integers(170, 256)),
                   np.uint8)
    for t in range(frames):
      # Along the motion: from one edge to the other; across it: fixed.
      x, y = (int(s) if not a else int(round(
          t * step if a > 0 else size - side - t * step))
              for a, s in zip((dx, dy), start))
      clip[t, y:y + side, x:x + side] = COLORS[color]
    captions = [f'a {color} square moving {direction}',
                f'a {color} square going {direction}']
    buf = io.BytesIO()
    np.save(buf, clip, allow_pickle=False)
    records.append({'video': buf.getvalue(), 'video_ext': 'npy',
                    'caption': captions[0], 'captions': captions,
                    'label': c * len(DIRECTIONS) + d})
  return records


def encode_image(img: Image.Image, image_format: str = 'png') -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=image_format.upper(),
           **({'quality': 90} if image_format == 'jpeg' else {}))
  return buf.getvalue()


def speech_records(n: int = 32, seed: int = 0, audio_format: str = 'flac'
                   ) -> list[Record]:
  """`n` tones with transcripts (see module docstring)."""
  rng = np.random.default_rng(seed)
  records = []
  for _ in range(n):
    p, c = int(rng.integers(len(PITCHES))), int(rng.integers(len(CONTOURS)))
    pitch, contour = list(PITCHES)[p], CONTOURS[c]
    duration = float(rng.uniform(0.5, 1.0))
    t = np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = PITCHES[pitch]
    # An octave up or down over the clip, or flat in between.
    freq = {'rising': f0 * 2 ** (t / duration),
            'falling': 2 * f0 * 2 ** (-t / duration),
            'steady': np.full_like(t, f0 * 2 ** 0.5)}[contour]
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE + rng.uniform(0, 6.3)
    fade = np.minimum(1, np.minimum(t, t[-1] - t) / 0.01)  # no clicks
    wave = 0.5 * np.sin(phase) * fade + rng.normal(0, 0.005, t.shape)
    records.append({'audio': encode_audio(wave, audio_format),
                    'audio_ext': audio_format,
                    'text': f'a {pitch} {contour} tone',
                    'label': p * len(CONTOURS) + c, 'duration': duration,
                    'sample_rate': SAMPLE_RATE})
  return records


def encode_audio(wave: np.ndarray, audio_format: str = 'flac',
                 sample_rate: int = SAMPLE_RATE) -> bytes:
  """float wave in [-1, 1] -> 16-bit FLAC or WAV bytes."""
  buf = io.BytesIO()
  sf.write(buf, np.clip(wave, -1, 1), sample_rate,
           format=audio_format.upper(), subtype='PCM_16')
  return buf.getvalue()


def make_records(kind: str = 'image', n: int = 64, seed: int = 0
                 ) -> list[Record]:
  if kind == 'image':
    return image_caption_records(n, seed)
  if kind == 'speech':
    return speech_records(n, seed)
  if kind == 'video':
    return video_caption_records(n, seed)
  raise ValueError(f"kind must be 'image', 'speech' or 'video', got "
                   f'{kind!r}.')


def _media(record: Record) -> tuple[str, bytes, str]:
  """(media key, bytes, file extension) of a record."""
  for key, ext in (('image', 'png'), ('video', 'npy')):
    if key in record:
      return key, record[key], record.get(f'{key}_ext', ext)
  return 'audio', record['audio'], record.get('audio_ext', 'flac')


def _text_key(record: Record) -> str:
  return 'caption' if 'image' in record or 'video' in record else 'text'


# ----------------------------------------------------------------------------
# Damage.


def corrupt(records: Sequence[Record], seed: int = 0, **counts: int
            ) -> list[Record]:
  """Copies of `records` with `counts[kind]` of them damaged.

  Kinds (disjoint records, chosen at random from `seed`):
    truncated     media bytes cut to half (an undecodable image/clip)
    random_bytes  media replaced by random bytes of the same length
    bad_header    media's first 8 bytes overwritten (PNG/FLAC/WAV magic)
    empty_text    caption/text set to '' and captions to ['']
    missing_file  the writers leave out the media file (or tar member)
    bad_json      jsonl: the line is cut; webdataset: the .json member is
    bad_row       csv: the row has an extra column
  Every returned record has '__corrupt__': the kind, or None.
  """
  unknown = set(counts) - set(CONTENT_CORRUPTIONS + FILE_CORRUPTIONS)
  if unknown:
    raise ValueError(f'Unknown corruption kinds {sorted(unknown)}; known: '
                     f'{CONTENT_CORRUPTIONS + FILE_CORRUPTIONS}.')
  if sum(counts.values()) > len(records):
    raise ValueError(f'{sum(counts.values())} corruptions asked for '
                     f'{len(records)} records.')
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(records))
  kind_of: dict[int, str] = {}
  start = 0
  for kind in sorted(counts):  # sorted: independent of argument order
    for i in order[start:start + counts[kind]]:
      kind_of[int(i)] = kind
    start += counts[kind]
  out = []
  for i, record in enumerate(records):
    record = dict(record, __corrupt__=kind_of.get(i))
    key, data, _ = _media(record)
    kind = record['__corrupt__']
    if kind == 'truncated':
      record[key] = data[:len(data) // 2]
    elif kind == 'random_bytes':
      record[key] = rng.integers(0, 256, len(data), np.uint8).tobytes()
    elif kind == 'bad_header':
      record[key] = b'\x00NOTMEDIA'[:8] + data[8:]
    elif kind == 'empty_text':
      record[_text_key(record)] = ''
      if 'captions' in record:
        record['captions'] = ['']
    out.append(record)
  return out


def truncate_file(path: str, keep: int | float) -> int:
  """Cuts `path` to `keep` bytes (an int) or that fraction of its size (a
  float); returns the new size."""
  size = os.path.getsize(path)
  new = int(size * keep) if isinstance(keep, float) else int(keep)
  with open(path, 'r+b') as f:
    f.truncate(new)
  return new


# ----------------------------------------------------------------------------
# Writers.


def _records(records, kind, n, seed):
  return make_records(kind, n, seed) if records is None else list(records)


def _write_media(directory: str, split: str, i: int, record: Record
                 ) -> str:
  """Writes record i's media file (unless it is to be missing); returns its
  path relative to `directory`."""
  _, data, ext = _media(record)
  rel = f'{split}/{i:06d}.{ext}'
  if record.get('__corrupt__') != 'missing_file':
    os.makedirs(os.path.join(directory, split), exist_ok=True)
    with open(os.path.join(directory, rel), 'wb') as f:
      f.write(data)
  return rel


def write_jsonl(directory: str, records: Sequence[Record] | None = None, *,
                kind: str = 'image', n: int = 64, seed: int = 0,
                split: str = 'train') -> str:
  """DIR/SPLIT.jsonl with media files in DIR/SPLIT/; returns its path.

  Lines: {"image": "train/000000.png", "caption", "captions", "label"} or
  {"audio": "train/000000.flac", "text", "label"}; path_keys is ('image',)
  or ('audio',).
  """
  records = _records(records, kind, n, seed)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'{split}.jsonl')
  with open(path, 'w', encoding='utf-8') as f:
    for i, record in enumerate(records):
      key = _media(record)[0]
      entry = {key: _write_media(directory, split, i, record)}
      for k in ('caption', 'captions', 'text', 'label'):
        if k in record:
          entry[k] = record[k]
      line = json.dumps(entry)
      if record.get('__corrupt__') == 'bad_json':
        line = line[:len(line) // 2]
      f.write(line + '\n')
  return path


def write_csv(directory: str, records: Sequence[Record] | None = None, *,
              kind: str = 'image', n: int = 64, seed: int = 0,
              split: str = 'train', delimiter: str = '\t') -> str:
  """DIR/SPLIT.tsv (tab) or DIR/SPLIT.csv with media in DIR/SPLIT/.

  Columns: filepath, title, label (open_clip's layout) for images;
  filepath, text, label for speech. path_keys is ('filepath',).
  """
  records = _records(records, kind, n, seed)
  os.makedirs(directory, exist_ok=True)
  ext = 'tsv' if delimiter == '\t' else 'csv'
  path = os.path.join(directory, f'{split}.{ext}')
  with open(path, 'w', encoding='utf-8', newline='') as f:
    writer = csv.writer(f, delimiter=delimiter, lineterminator='\n')
    text_col = 'title' if records and 'image' in records[0] else 'text'
    writer.writerow(['filepath', text_col, 'label'])
    for i, record in enumerate(records):
      row = [_write_media(directory, split, i, record),
             record[_text_key(record)], record['label']]
      if record.get('__corrupt__') == 'bad_row':
        row.append('extra')
      writer.writerow(row)
  return path


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size, info.mode, info.mtime = len(data), 0o644, 0  # reproducible
  tar.addfile(info, io.BytesIO(data))


def write_webdataset(directory: str, records: Sequence[Record] | None = None,
                     *, kind: str = 'image', n: int = 64, seed: int = 0,
                     split: str = 'train', per_shard: int = 100) -> str:
  """Shards DIR/SPLIT/00000.tar, ... in img2dataset's layout; returns the
  brace pattern naming them ('DIR/SPLIT/{00000..0000K}.tar').

  Members per record, key '%09d' of its index: KEY.png (or .jpg/.flac/
  .wav), KEY.txt (the caption/transcript), KEY.json (img2dataset metadata:
  key, status, caption, width, height, label; for speech key, text,
  duration, sample_rate, label).
  """
  records = _records(records, kind, n, seed)
  out = os.path.join(directory, split)
  os.makedirs(out, exist_ok=True)
  num_shards = max(1, -(-len(records) // per_shard))
  for s in range(num_shards):
    with tarfile.open(os.path.join(out, f'{s:05d}.tar'), 'w',
                      format=tarfile.USTAR_FORMAT) as tar:
      for i in range(s * per_shard, min(len(records), (s + 1) * per_shard)):
        record, key = records[i], f'{i:09d}'
        _, data, ext = _media(record)
        if record.get('__corrupt__') != 'missing_file':
          _add_member(tar, f'{key}.{ext}', data)
        text = record[_text_key(record)]
        _add_member(tar, f'{key}.txt', text.encode('utf-8'))
        meta = {'key': key, 'status': 'success', 'label': record['label']}
        if 'image' in record:
          meta.update(caption=text, width=record['width'],
                      height=record['height'])
        else:
          meta.update(text=text, duration=record['duration'],
                      sample_rate=record['sample_rate'])
        meta_bytes = json.dumps(meta).encode('utf-8')
        if record.get('__corrupt__') == 'bad_json':
          meta_bytes = meta_bytes[:len(meta_bytes) // 2]
        _add_member(tar, f'{key}.json', meta_bytes)
  return os.path.join(out, f'{{00000..{num_shards - 1:05d}}}.tar')


def write_coco(root: str, split: str = 'val2017',
               records: Sequence[Record] | None = None, *, n: int = 64,
               seed: int = 0, uncaptioned: int = 0) -> str:
  """COCO captions layout under `root`; returns root.

  ROOT/annotations/captions_SPLIT.json and ROOT/SPLIT/%012d.png (image id
  = index + 1). Annotations list every image's first caption, then every
  second caption, ... (COCO's files are not grouped by image either).
  `uncaptioned` extra images are listed and written with no caption.
  """
  records = _records(records, 'image', n, seed)
  if records and 'image' not in records[0]:
    raise ValueError('write_coco needs image records.')
  os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
  os.makedirs(os.path.join(root, split), exist_ok=True)
  extra = image_caption_records(uncaptioned, seed + 1) if uncaptioned else []
  images, annotations = [], []
  for i, record in enumerate(list(records) + extra):
    _, data, ext = _media(record)
    name = f'{i + 1:012d}.{ext}'
    if record.get('__corrupt__') != 'missing_file':
      with open(os.path.join(root, split, name), 'wb') as f:
        f.write(data)
    images.append({'id': i + 1, 'file_name': name, 'width': record['width'],
                   'height': record['height'], 'license': 1})
  for rank in range(max((len(r['captions']) for r in records), default=0)):
    for i, record in enumerate(records):
      if rank < len(record['captions']):
        annotations.append({'id': len(annotations) + 1, 'image_id': i + 1,
                            'caption': record['captions'][rank]})
  with open(os.path.join(root, 'annotations', f'captions_{split}.json'),
            'w', encoding='utf-8') as f:
    json.dump({'info': {'description': 'multimodal.testing shapes'},
               'licenses': [{'id': 1, 'name': 'CC0'}], 'images': images,
               'annotations': annotations}, f)
  return root


def write_librispeech(root: str, split: str = 'dev-clean',
                      records: Sequence[Record] | None = None, *,
                      n: int = 32, seed: int = 0, speakers: int = 3,
                      chapters: int = 2, nested: bool = True) -> str:
  """LibriSpeech layout; returns root (transcripts upper-cased, as there).

  With `nested`, files go under ROOT/LibriSpeech/SPLIT (as the archives
  unpack), else ROOT/SPLIT. Utterances are dealt round-robin to `speakers`
  x `chapters` chapters (speaker ids of different widths, to check numeric
  order).
  """
  records = _records(records, 'speech', n, seed)
  if records and records[0].get('audio_ext', 'flac') != 'flac':
    raise ValueError('LibriSpeech stores FLAC: make the speech records '
                     "with audio_format='flac'.")
  base_dir = os.path.join(root, 'LibriSpeech', split) if nested else (
      os.path.join(root, split))
  chapter_ids = [(19 * 10 ** (k % 3) + k, 100 + 7 * k + c)
                 for k in range(speakers) for c in range(chapters)]
  lines: dict[tuple[int, int], list[str]] = {c: [] for c in chapter_ids}
  for i, record in enumerate(records):
    speaker, chapter = chapter_ids[i % len(chapter_ids)]
    utt = f'{speaker}-{chapter}-{i // len(chapter_ids):04d}'
    chapter_dir = os.path.join(base_dir, str(speaker), str(chapter))
    os.makedirs(chapter_dir, exist_ok=True)
    if record.get('__corrupt__') != 'missing_file':
      with open(os.path.join(chapter_dir, f'{utt}.flac'), 'wb') as f:
        f.write(record['audio'])
    lines[speaker, chapter].append(f'{utt} {record["text"].upper()}')
  for (speaker, chapter), chapter_lines in lines.items():
    if chapter_lines:
      with open(os.path.join(base_dir, str(speaker), str(chapter),
                             f'{speaker}-{chapter}.trans.txt'), 'w',
                encoding='utf-8') as f:
        f.write('\n'.join(chapter_lines) + '\n')
  return root
