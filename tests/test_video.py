"""Video: the 'video' field kind, the 'vivit' tower, and a training step of
contrastive video~text through the trainer."""
import io
import json

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from PIL import Image
import pytest

from multimodal import config_checks
from multimodal import metrics_writer
from multimodal import registry
from multimodal import tokenizer as tokenizer_lib
from multimodal import train
from multimodal.data import video as video_lib
from multimodal.data.kinds import DataError
from multimodal.models import build_model
from multimodal.testing import datasets

pytestmark = pytest.mark.usefixtures('fast_compiles')


def _kind(train_mode=False, **input_cfg):
  cfg = dict(image_size=8, image_channels=1, video_frames=4)
  cfg.update(input_cfg)
  return registry.get('field', 'video')(mlc.ConfigDict(cfg),
                                        train=train_mode)


def _numbered(length=10, size=8):
  """uint8 [length, size, size]: frame i is filled with value 20 * i."""
  return np.stack([np.full((size, size), 20 * i, np.uint8)
                   for i in range(length)])


def _which(out):
  """The source frame indices of an output of _numbered frames."""
  return [int(round((v + 1) * 127.5 / 20)) for v in out[:, 0, 0, 0]]


def _png(frame):
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format='PNG')
  return buf.getvalue()


def test_kind_reads_every_form_of_clip_alike():
  clip = _numbered()
  kind = _kind(video_stride=2)
  rng = np.random.default_rng(0)
  want = kind(clip, rng)
  assert want.shape == (4, 8, 8, 1) and want.dtype == np.float32
  assert _which(want) == [1, 3, 5, 7]  # centred window of 7 frames
  forms = [clip[..., None],                      # [T, H, W, 1]
           [_png(f) for f in clip],              # encoded frames
           list(clip),                           # uint8 frames
           video_lib.save_npy(clip),             # .npy bytes
           np.array([_png(f) for f in clip], object),  # as tfds reads lists
           np.array([_png(f) for f in clip])]    # fixed-width bytes
  for form in forms:
    np.testing.assert_array_equal(kind(form, rng), want)
  rgb = _kind(video_channels=3, video_size=4)(np.repeat(clip[..., None], 3,
                                                        -1), rng)
  assert rgb.shape == (4, 4, 4, 3) and rgb.min() >= -1 and rgb.max() <= 1


def test_kind_sampling_offsets_short_clips_and_frame_order():
  clip = _numbered(12)
  train_kind = _kind(True, video_stride=3)  # window of 10 of 12 frames
  starts = {_which(train_kind(clip, np.random.default_rng(s)))[0]
            for s in range(40)}
  assert starts == {0, 1, 2}
  assert _which(_kind(True, video_stride=3, video_offset='center')(
      clip, np.random.default_rng(0))) == [1, 4, 7, 10]
  assert _which(_kind(video_stride=3)(clip, np.random.default_rng(0))) == [
      1, 4, 7, 10]
  # Too short: the last frame repeats.
  assert _which(_kind(video_stride=2)(_numbered(4), None)) == [0, 2, 3, 3]
  assert _which(_kind(frame_order='reversed')(clip, None)) == [7, 6, 5, 4]
  shuffled = [_which(_kind(frame_order='shuffled')(
      clip, np.random.default_rng(s))) for s in (0, 0, 1, 2, 3)]
  assert shuffled[0] == shuffled[1]  # the example's rng decides
  assert all(sorted(s) == [4, 5, 6, 7] for s in shuffled)
  assert len({tuple(s) for s in shuffled}) > 1


def test_kind_draws_one_augmentation_per_clip():
  # A bright square on every frame: one affine draw moves it alike in all
  # frames; a draw per frame would not.
  frame = np.zeros((16, 16), np.uint8)
  frame[4:10, 5:11] = 255
  clip = np.stack([frame] * 6)
  aug = dict(max_shift=0.2, max_scale=0.2, max_rotate=20)
  kind = _kind(True, video_size=16, augment=aug)
  plain = _kind(video_size=16)(clip, None)
  for seed in range(3):
    out = kind(clip, np.random.default_rng(seed))
    for t in range(1, 4):
      np.testing.assert_array_equal(out[t], out[0])
    assert np.abs(out[0] - plain[0]).max() > 0.5
  # No augmentation in evaluation.
  np.testing.assert_array_equal(
      _kind(False, video_size=16, augment=aug)(clip, None), plain)


def test_kind_errors_name_the_problem():
  kind = _kind()
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match='path_keys'):
    kind('clips/1.mp4', rng)
  with pytest.raises(DataError, match='uint8 frames'):
    kind(np.zeros((4, 8, 8), np.float32), rng)
  with pytest.raises(DataError, match='no frames'):
    kind([], rng)
  with pytest.raises(DataError, match='A frame of the clip'):
    kind([b'not a png'] * 4, rng)
  with pytest.raises(DataError, match='.npy'):
    kind(video_lib.save_npy(_numbered())[:60], rng)
  with pytest.raises(ValueError, match='video_frames'):
    registry.get('field', 'video')(mlc.ConfigDict(dict(image_size=8)),
                                   train=False)
  for key, value in (('video_offset', 'start'), ('frame_order', 'random'),
                     ('video_stride', 0), ('video_channels', 2)):
    with pytest.raises(ValueError, match=key):
      _kind(**{key: value})


def test_video_files_decode_with_pyav_or_name_it():
  clip = np.repeat(_numbered(6, 16)[..., None], 3, -1)
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError:
    with pytest.raises(ValueError, match='pip install av'):
      _kind()(b'\x00\x00\x00\x18ftypmp42' + bytes(64), None)
    return
  buf = io.BytesIO()
  with av.open(buf, mode='w', format='mp4') as container:
    stream = container.add_stream('mpeg4', rate=6)
    stream.width = stream.height = 16
    stream.pix_fmt = 'yuv420p'
    for frame in clip:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, 'rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  out = _kind(video_channels=3, video_size=16, video_stride=1)(
      buf.getvalue(), None)
  assert out.shape == (4, 16, 16, 3)
  # Lossy, but the frames' brightness order survives: frames 1..4 of 6.
  assert np.all(np.diff(out.mean((1, 2, 3))) > 0)
  with pytest.raises(DataError, match='as a video'):
    _kind()(b'\x00\x00\x00\x18ftypmp42' + bytes(64), None)


# ------------------------------------------------------------ the tower ---

def _tower(**kw):
  cfg = dict(name='vivit', num_frames=4, image_size=8, channels=1,
             patch_size=4, tubelet_time=2, width=32, depth=1, num_heads=2)
  cfg.update(kw)
  return build_model(cfg, rngs=nnx.Rngs(0), kind='encoder')


def test_tower_shapes_axes_and_options():
  clips = jax.random.normal(jax.random.key(0), (3, 4, 8, 8, 1))
  for attention, tokens in (('factorised', (3, 2, 32)),
                            ('joint', (3, 8, 32))):
    for extra in ({}, dict(scan_layers=True, remat='full', pool='mean',
                           temporal_pool='map', temporal_depth=2)):
      tower = _tower(attention=attention, **extra)
      pooled, toks = tower(clips)
      assert pooled.shape == (3, 32) and toks.shape == tokens
      state = nnx.state(tower, nnx.Param)
      for path, var in nnx.to_flat_state(state):
        names = var.get_metadata().get('out_sharding')
        assert names is not None and len(names) == var.get_value().ndim, path
  with pytest.raises(ValueError, match='Expected clips'):
    _tower()(jnp.zeros((1, 6, 8, 8, 1)))
  with pytest.raises(ValueError, match='tubelet_time'):
    _tower(tubelet_time=3)
  with pytest.raises(ValueError, match='attention must be'):
    _tower(attention='divided')


def test_frame_order_changes_the_embedding():
  clips = jax.random.normal(jax.random.key(1), (2, 4, 8, 8, 1))
  # Swap the two tubelets (frames 0-1 with 2-3): a model without temporal
  # positions and with an order-free temporal stage could not tell.
  swapped = clips[:, jnp.array([2, 3, 0, 1])]
  for attention in ('factorised', 'joint'):
    tower = _tower(attention=attention, temporal_init='random', pool='mean')
    a, b = tower(clips)[0], tower(swapped)[0]
    assert float(jnp.abs(a - b).max()) > 1e-3, attention
  # At its identity initialisation the factorised temporal stage is a mean
  # over time: order-free until training moves it.
  tower = _tower()
  np.testing.assert_allclose(tower(clips)[0], tower(swapped)[0], atol=1e-5)


# ------------------------------------------------------------ the tasks ---

def _video_config(tmp_path, task='contrastive'):
  from experiments import image_text  # pylint: disable=g-import-not-at-top
  variant = 'siglip' if task == 'contrastive' else 'caption'
  c = image_text.get_config(f'{variant},jsonl,tiny')
  data = tmp_path / 'data'
  splits = {s: datasets.write_jsonl(
      str(data), datasets.video_caption_records(n, seed, frames=4, size=16),
      split=s) for s, n, seed in (('train', 32, 0), ('val', 16, 1))}
  texts = [t for r in datasets.video_caption_records(32, 0, 4, 16)
           for t in r['captions']]
  c.input.tokenizer = tokenizer_lib.train_tokenizer(
      texts, str(data / 'spm.model'), vocab_size=40)
  c.dataset.splits = splits
  c.dataset.path_keys = ('video',)
  c.input.fields = dict(video='video', video_text='caption')
  if task != 'contrastive':
    c.input.fields.video_text_refs = 'captions'
  c.input.video_frames, c.input.video_size = 4, 16
  c.input.video_channels = 3
  video = dict(name='vivit', variant='mu', num_frames=4, image_size=16,
               channels=3, patch_size=8, tubelet_time=2, temporal_depth=1)
  if task == 'contrastive':
    c.model.towers = dict(video=video, text=c.model.towers.text)
    c.model.towers.text.vocab_size = 40
    c.model.inputs = dict(video='video', video_text='text')
    c.model.pairs = (('video', 'video_text'),)
  else:
    c.model.towers = dict(video=video)
    c.model.decoder.vocab_size = 40
    c.captioning.targets = (('video', 'video_text'),)
  c.total_steps, c.batch_size, c.eval_batch_size = 2, 8, 16
  c.log_every, c.checkpoint_every = 1, 100
  c.input.validate_records = 0
  return c


def test_contrastive_video_text_trains(tmp_path):
  config = _video_config(tmp_path)
  final = train.train_and_evaluate(config, str(tmp_path / 'wd'))
  losses = [m['train/loss'] for m in metrics_writer.read_metrics(
      str(tmp_path / 'wd')) if 'train/loss' in m]
  assert len(losses) == 2 and all(np.isfinite(losses))
  assert 0 <= final['val/retrieval/video->video_text@1'] <= 1, final
  with open(tmp_path / 'wd' / 'config.json') as f:
    assert json.load(f)['model']['towers']['video']['name'] == 'vivit'


@pytest.mark.slow
@pytest.mark.parametrize('attention', ['factorised', 'joint'])
def test_zero_shot_direction_needs_the_order_of_frames(tmp_path, attention):
  # Captions name colour and direction (20 classes); the direction is only in
  # the order of the frames. Measured (400 steps, 8 frames of 16 x 16, 128
  # val clips): 100% zero-shot for both, 0% with the frames reversed (every
  # direction read as its opposite), 30-32% shuffled.
  from multimodal import evaluate  # pylint: disable=g-import-not-at-top
  c = _video_config(tmp_path)
  c.dataset.splits = {s: datasets.write_jsonl(
      str(tmp_path / 'data8'), datasets.video_caption_records(n, seed, 8, 16),
      split=s) for s, n, seed in (('train', 512, 0), ('val', 128, 1))}
  c.input.video_frames = 8
  c.model.towers.video.update(num_frames=8, attention=attention,
                              patch_size=4, pool='mean', width=64, depth=2,
                              num_heads=4, temporal_depth=2)
  c.model.towers.text.width = c.model.embed_dim = 64
  c.total_steps, c.batch_size, c.eval_batch_size = 400, 32, 64
  c.log_every = 50
  c.optimizer.lr, c.optimizer.warmup_steps = 3e-3, 20
  c.input.fields.label = 'label'
  c.evals = dict(zeroshot=dict(
      type='zeroshot', media='video', text='video_text', prompts=('a {}',),
      class_names=tuple(f'{colour} square moving {d}'
                        for colour in datasets.COLORS
                        for d in datasets.DIRECTIONS)))
  final = train.train_and_evaluate(c, str(tmp_path / 'wd'))
  assert final['val/zeroshot/video'] >= 0.9, final
  c.input.frame_order = 'reversed'
  reversed_ = evaluate.evaluate_pretrained(str(tmp_path / 'wd'), c)
  assert reversed_['val/zeroshot/video'] <= 0.1, reversed_


def _vqa_config(tmp_path):
  """The digits VQA experiment (tiny) with a video tower where its image
  tower was: (video, audio, question) -> answer."""
  from projects.digits.configs import vqa  # pylint: disable=g-import-not-at-top
  c = vqa.get_config('tiny')
  c.dataset = _video_config(tmp_path).dataset  # no record is read
  c.train_split, c.eval_split = 'train', 'val'
  fields = c.input.fields.to_dict()
  fields['video'] = fields.pop('image')
  c.input.fields = fields
  c.input.video_frames, c.input.video_channels = 4, 1
  towers = c.model.towers.to_dict()
  image = towers.pop('image')
  towers['video'] = dict(name='vivit', num_frames=4, image_size=16,
                         patch_size=4, channels=1, tubelet_time=2,
                         pool='mean', width=image['width'], depth=1,
                         num_heads=image['num_heads'])
  c.model.towers = towers
  c.vqa.media = ('video', 'audio')
  return c


@pytest.mark.parametrize('task', ['captioning', 'vqa'])
def test_video_tasks_pass_the_config_check(tmp_path, task):
  # The check builds the model and the task, and traces the training loss
  # on batches of the kinds' shapes: a video field needs no other wiring.
  config = (_vqa_config(tmp_path) if task == 'vqa'
            else _video_config(tmp_path, task='captioning'))
  config_checks.check(config)
  config.model.towers.video.num_frames = 6
  with pytest.raises(config_checks.ConfigError, match='Expected clips'):
    config_checks.check(config)


# ------------------------------------------------------- the predictor ---

def test_predictor_embeds_videos_given_as_files_dirs_and_arrays(tmp_path):
  from multimodal import inputs  # pylint: disable=g-import-not-at-top
  from multimodal import pretrained  # pylint: disable=g-import-not-at-top
  from multimodal.testing import exports  # pylint: disable=g-import-not-at-top
  out = exports.untrained_export(_video_config(tmp_path),
                                 str(tmp_path / 'export'))
  predictor = pretrained.load_pretrained(out).predictor()
  assert 'video' in predictor.modalities
  clip = np.load(io.BytesIO(datasets.video_caption_records(1, 5, 6, 16)[0][
      'video']))  # [6, 16, 16, 3] uint8
  frames = tmp_path / 'frames'
  frames.mkdir()
  for i, frame in enumerate(clip):  # PNG files, read in name order
    Image.fromarray(frame).save(frames / f'{i:03d}.png')
  np.save(tmp_path / 'clip.npy', clip)
  given = [str(frames), str(tmp_path / 'clip.npy'), clip, clip / 255.0,
           [Image.fromarray(f) for f in clip]]
  emb = predictor.embed(videos=given, texts=['a red square moving left'])
  assert emb['video'].shape == (5, 32) and emb['text'].shape == (1, 32)
  np.testing.assert_allclose(emb['video'], emb['video'][:1].repeat(5, 0),
                             atol=1e-5)
  result = predictor.zero_shot(['left', 'right'], ('a square moving {}',),
                               videos=given[:2])
  assert len(result.labels) == 2
  with pytest.raises(inputs.InputError, match='no frame images'):
    predictor.embed(videos=[str(tmp_path / 'export' / 'params')])
  with pytest.raises(inputs.InputError, match=r'\[T, H, W\]'):
    predictor.embed(videos=[clip[0, :, :, 0]])
