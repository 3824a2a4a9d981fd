"""The inference API (multimodal.predictor) against the trainer's own
evaluation, multimodal.models.generate, the data pipeline's preprocessing
and its compilation budget; and its errors."""
import importlib
import io

from flax import nnx
import jax
import numpy as np
from PIL import Image
import pytest
import soundfile

import multimodal
from multimodal import mesh as mesh_lib
from multimodal import train
from multimodal import tree as tree_lib
from multimodal.data import audio as audio_lib
from multimodal.data import pipeline
from multimodal.evaluators import zeroshot as zeroshot_lib
from multimodal.inputs import InputError
from multimodal.models import generate
from multimodal.tasks import text_generation
from multimodal.testing import exports

pytestmark = pytest.mark.usefixtures('fast_compiles')

SPLIT = 'validation[:96]'  # 3 eval batches of the tiny config's 32


def _config(name, data_dir):
  config = importlib.import_module(
      f'projects.digits.configs.{name}').get_config('tiny')
  config.dataset.data_dir = data_dir
  return config


def _records(config, split, n=None):
  source = pipeline.open_source(config.dataset, split)
  return [source[i] for i in range(n or len(source))]


def _pipeline_arrays(config, records, fields):
  """What the eval pipeline makes of raw records: {field: [N, ...]}."""
  pre = pipeline.Preprocess(config.input, fields, train=False)
  rows = [pre(r, np.random.default_rng(0)) for r in records]
  return {f: np.stack([row[f] for row in rows]) for f in fields}


def _trainer_eval(config, export_dir):
  """train.evaluate of the export's parameters; returns (metrics, the
  task's outputs it evaluated, the task's evaluator context)."""
  mesh = mesh_lib.build_mesh(config.mesh)
  task, ts, _ = train.make_trainer(config, mesh)
  flat = tree_lib.flatten(multimodal.load_pretrained(export_dir).params)
  shardings = tree_lib.flatten(ts.shardings['params'])
  params = tree_lib.unflatten_like(
      {k: jax.device_put(v, shardings[k]) for k, v in flat.items()},
      ts.abstract['params'])
  captured = {}
  postprocess = task.postprocess
  task.postprocess = lambda outputs, tok: postprocess(
      captured.setdefault('outputs', outputs), tok)
  source = pipeline.open_source(config.dataset, config.eval_split)
  metrics = train.evaluate(config, task, ts, params, mesh, source)
  model = nnx.merge(ts.graphdef, params)
  tokenizer = pipeline.make_tokenizer(config.input)
  return (metrics, captured['outputs'], task,
          task.context(model, tokenizer, mesh))


def test_embeddings_and_zero_shot_equal_the_trainers_evaluation(
    tiny_exports, digits_data_dir):
  config = _config('contrastive', digits_data_dir)
  config.eval_split = SPLIT
  metrics, outputs, task, ctx = _trainer_eval(
      config, tiny_exports['contrastive'])
  records = _records(config, SPLIT)
  # Buckets of the trainer's batch shapes (32 examples, 20 prompts): XLA's
  # CPU kernels round differently at other batch sizes (by ~1e-7).
  m = multimodal.load_pretrained(tiny_exports['contrastive']).predictor(
      buckets=(20, 32))
  emb = m.embed(images=[r['image'] for r in records],
                audio=[r['speech'] for r in records])
  np.testing.assert_array_equal(emb['image'], outputs['embedding/image'])
  np.testing.assert_array_equal(emb['audio'], outputs['embedding/audio'])

  for name, modality in (('zeroshot_image', 'image'),
                         ('zeroshot_audio', 'audio')):
    ev = task.evaluators[name]
    prompts = zeroshot_lib.fill_prompts(ev.prompts, ev.class_names)
    flat = [p for group in prompts for p in group]
    np.testing.assert_array_equal(m.embed(texts=flat)['text'],
                                  ctx.embed_texts(ev.text, flat))
    raw = [r['image' if modality == 'image' else 'speech'] for r in records]
    z = m.zero_shot(list(ev.class_names), prompts=ev.prompts,
                    **{'images' if modality == 'image' else 'audio': raw})
    protos = zeroshot_lib.prototypes_from_prompts(np.asarray(
        ctx.embed_texts(ev.text, flat)).reshape(len(ev.class_names),
                                                len(ev.prompts), -1))
    want = np.argmax(outputs[f'embedding/{modality}'] @ protos.T, axis=1)
    np.testing.assert_array_equal(z.index, want)
    assert z.labels == [ev.class_names[i] for i in want]
    labels = np.array([r['label'] for r in records])
    assert float(np.mean(z.index == labels)) == metrics[
        f'{SPLIT}/zeroshot/{modality}']
    np.testing.assert_allclose(z.probs.sum(axis=1), 1.0, rtol=1e-5)
    assert z.scores.shape == z.probs.shape == (len(records), 10)

  # Default buckets (1, 4, 16, 64): the same up to float rounding.
  default = multimodal.load_pretrained(
      tiny_exports['contrastive']).predictor()
  np.testing.assert_allclose(
      default.embed(images=[r['image'] for r in records])['image'],
      outputs['embedding/image'], atol=1e-6)


def test_raw_inputs_of_every_kind_embed_like_preprocessed_arrays(
    tiny_exports, digits_data_dir, tmp_path):
  config = _config('contrastive', digits_data_dir)
  record = _records(config, 'test', 1)[0]
  m = multimodal.load_pretrained(tiny_exports['contrastive']).predictor()
  rate = m.inputs.sample_rate

  png = record['image']
  (tmp_path / 'digit.png').write_bytes(png)
  pixels = np.asarray(Image.open(io.BytesIO(png)))
  images = [str(tmp_path / 'digit.png'), tmp_path / 'digit.png', png,
            Image.open(io.BytesIO(png)), pixels, pixels[..., None],
            pixels.astype(np.float32) / 255.0]
  want = m.embed_arrays({'image': np.repeat(_pipeline_arrays(
      config, [record], ['image'])['image'], len(images), axis=0)})
  got = m.embed(images=images)
  np.testing.assert_array_equal(got['image'], want['image'])

  # Audio: the record's OGG bytes, the same clip as a file, as samples with
  # its rate; then the clip at other rates, each compared with the
  # pipeline's features of the waveform resampled to 16 kHz.
  wave = audio_lib.decode_audio(record['speech'], rate)
  (tmp_path / 'clip.ogg').write_bytes(record['speech'])
  wav22k = io.BytesIO()
  wave22k = audio_lib.resample(wave, rate, 22050)
  soundfile.write(wav22k, wave22k, 22050, format='WAV', subtype='FLOAT')
  wave8k = audio_lib.resample(wave, rate, 8000)
  clips = [record['speech'], str(tmp_path / 'clip.ogg'), (wave, rate),
           wav22k.getvalue(), (wave8k, 8000)]
  waves = [wave, wave, wave, audio_lib.resample(wave22k, 22050, rate),
           audio_lib.resample(wave8k, 8000, rate)]
  want = m.embed_arrays({'audio': _pipeline_arrays(
      config, [{'speech': w} for w in waves], ['audio'])['audio']})
  got = m.embed(audio=clips)
  np.testing.assert_array_equal(got['audio'], want['audio'])
  # Bare samples take the call's sample_rate; int16 PCM reads as float.
  pcm = np.round(wave * 32767).astype(np.int16)
  np.testing.assert_array_equal(
      m.embed(audio=[pcm], sample_rate=rate)['audio'],
      m.embed(audio=[(pcm.astype(np.float32) / 32768, rate)])['audio'])
  # Up to 48 kHz and back is the same clip, up to the filters' ripple.
  wave48k = audio_lib.resample(wave, rate, 48000)
  cos = float(m.embed(audio=[(wave48k, 48000)])['audio'][0]
              @ got['audio'][0])
  assert cos > 0.999, cos

  texts = m.embed(texts=['a handwritten six', b'a handwritten six'])['text']
  np.testing.assert_array_equal(texts[0], texts[1])
  np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, rtol=1e-5)


def test_a_stream_of_batch_sizes_compiles_once_per_bucket(tiny_exports):
  buckets = (1, 4, 16)
  m = multimodal.load_pretrained(tiny_exports['contrastive']).predictor(
      buckets=buckets)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
  everything = m.embed(images=list(images))['image']  # 16 + 4
  for n in range(1, 21):
    got = m.embed(images=list(images[:n]), texts=['a six'] * n)
    np.testing.assert_allclose(got['image'], everything[:n], atol=1e-6)
  counts = m.compilations.as_dict()
  assert counts['embed/image'] <= len(buckets), counts
  assert counts['embed/text'] <= len(buckets), counts

  c = multimodal.load_pretrained(tiny_exports['captioning']).predictor(
      buckets=(1, 4))
  for n in (1, 3, 2, 5, 4, 1, 6):
    assert len(c.caption(images=list(images[:n]), max_new_tokens=3)) == n
  (name, count), = c.compilations.as_dict().items()
  assert name == 'captioning/image/greedy' and count <= 2, name


def _reference_generation(model, media, present, prompt, method, tokenizer,
                          max_new, **kw):
  memory, mask = model.encode(media, present)
  ids = tokenizer.ids
  args = dict(memory=memory, memory_mask=mask, max_new_tokens=max_new,
              eos_id=ids.eos, pad_id=ids.pad)
  if method == 'beam':
    tokens = generate.beam_search(model.decoder, prompt, **args,
                                  **kw).tokens[:, 0]
  elif method == 'sample':
    tokens = generate.sample(model.decoder, prompt, **args, **kw).tokens
  else:
    tokens = generate.greedy(model.decoder, prompt, **args).tokens
  tokens = np.asarray(tokens)
  return tokens, text_generation.continuations(tokens, np.asarray(prompt),
                                               tokenizer, ids=ids)


def test_caption_and_answer_equal_generate(tiny_exports, digits_data_dir):
  config = _config('captioning', digits_data_dir)
  records = _records(config, 'test', 4)
  pre = multimodal.load_pretrained(tiny_exports['captioning'])
  m = pre.predictor(buckets=(4,))
  model, tok = pre.build_model(), m.inputs.tokenizer
  arrays = _pipeline_arrays(config, records, ['image', 'audio'])
  bos = np.full((4, 1), tok.bos_id, np.int32)
  for method, kw in (('greedy', {}), ('beam', dict(beam_size=3, alpha=0.6)),
                     ('sample', dict(temperature=0.8, top_k=5))):
    extra = dict(rng=jax.random.fold_in(jax.random.key(7), 0),
                 temperature=0.8, top_k=5) if method == 'sample' else kw
    _, want = _reference_generation(model, {'audio': arrays['audio']}, None,
                                    bos, method, tok, 5, **extra)
    got = m.caption(audio=[r['speech'] for r in records], method=method,
                    max_new_tokens=5, seed=7, **kw)
    assert got == want, method

  config = _config('vqa', digits_data_dir)
  records = _records(config, 'test', 4)
  pre = multimodal.load_pretrained(tiny_exports['vqa'])
  m = pre.predictor(buckets=(4,))
  model = pre.build_model()
  arrays = _pipeline_arrays(config, records, ['image', 'audio'])
  questions = [r['questions'][i].decode() for i, r in enumerate(records)]
  prompt = m.question_prompts(questions)
  present = {'image': np.ones(4, bool), 'audio': np.array([1, 0, 1, 0],
                                                          bool)}
  want_tokens, want = _reference_generation(model, arrays, present, prompt,
                                            'greedy', tok, 4)
  audio = [r['qa_speech'] if present['audio'][i] else None
           for i, r in enumerate(records)]
  got = m.generate_arrays(*m.media_arrays([r['image'] for r in records],
                                          audio), prompt, m.decoding(
                                              max_new_tokens=4))
  np.testing.assert_array_equal(got.tokens, want_tokens)
  assert m.answer(questions, images=[r['image'] for r in records],
                  audio=audio, max_new_tokens=4) == want == got.texts
  # One modality alone: that tower only, as the model's presence does.
  _, want = _reference_generation(model, {'image': arrays['image']}, None,
                                  prompt, 'greedy', tok, 4)
  assert m.answer(questions, images=[r['image'] for r in records],
                  max_new_tokens=4) == want


def _raises(reason, fn, match=None):
  with pytest.raises(InputError, match=match) as e:
    fn()
  assert e.value.reason == reason, (e.value.reason, str(e.value))


def test_clear_errors(tiny_exports, digits_data_dir, tmp_path):
  m = multimodal.load_pretrained(tiny_exports['contrastive']).predictor()
  cap = multimodal.load_pretrained(tiny_exports['captioning']).predictor()
  vqa = multimodal.load_pretrained(tiny_exports['vqa']).predictor()
  png = _records(_config('contrastive', digits_data_dir), 'test', 1)[0][
      'image']
  _raises('unknown_modality', lambda: m.embed(image=[png]), 'images=')
  _raises('unknown_modality', lambda: m.embed_arrays({'depth': np.zeros(3)}))
  _raises('missing_modality', lambda: m.embed_arrays({'video': np.zeros(3)}),
          'no video tower')
  _raises('bad_image', lambda: m.embed(images=[b'not an image']),
          r'images\[0\]: Could not decode')
  _raises('missing_file', lambda: m.embed(images=[str(tmp_path / 'no.png')]))
  _raises('bad_value', lambda: m.embed(images=[np.full((8, 8), 2.0)]),
          r'\[0, 1\]')
  _raises('bad_value', lambda: m.embed(images=png), 'list')
  _raises('bad_value', lambda: m.embed(audio=(np.zeros(80), 8000)),
          'wrap one value in a list')
  _raises('text_too_long', lambda: m.embed(texts=['six ' * 40]),
          'at most 23')
  _raises('empty_text', lambda: m.embed(texts=['  ']))
  _raises('bad_value', lambda: m.embed(audio=[np.zeros(800)]),
          'sample_rate=')
  _raises('bad_audio', lambda: m.embed(audio=[b'RIFF not a wav']))
  _raises('bad_value', lambda: m.embed_arrays({'image': np.zeros((2, 8, 8,
                                                                  1))}),
          r'\[N, 16, 16, 1\]')
  _raises('bad_value', lambda: m.zero_shot(['a'], images=[png], audio=[png]))
  _raises('unsupported', lambda: m.caption(images=[png]), 'captioning export')
  _raises('unsupported', lambda: cap.answer(['what?'], images=[png]),
          'VQA export')
  _raises('unsupported', lambda: cap.embed(images=[png]),
          'contrastive export')
  _raises('unsupported', lambda: vqa.zero_shot(['a'], images=[png]))
  _raises('bad_option', lambda: cap.caption(images=[png], method='nucleus'))
  _raises('bad_option', lambda: cap.caption(images=[png], temperature=0))
  _raises('bad_option', lambda: cap.caption(images=[png],
                                            max_new_tokens=100),
          'at most 23 new tokens')
  _raises('bad_value', lambda: vqa.answer(['a?', 'b?'], images=[png]),
          'one question per example')

  # A model without an audio tower says which modalities it has.
  config = _config('contrastive', digits_data_dir)
  del config.model.towers['audio']
  config.model.inputs = dict(image='image', image_text='text')
  config.model.pairs = (('image', 'image_text'),)
  config.evals = dict(config.evals.to_dict())
  del config.evals['zeroshot_audio'], config.evals['zeroshot_image_audio']
  out = exports.untrained_export(config, str(tmp_path / 'image_text'))
  two = multimodal.load_pretrained(out).predictor()
  assert two.modalities == ('image', 'text')
  _raises('missing_modality', lambda: two.embed(audio=[(np.zeros(80), 8000)]),
          'no audio tower')


def test_workdir_and_checkpoint_step_serve_like_the_export(tiny_exports):
  export = tiny_exports['contrastive']
  workdir = export + '.workdir'  # multimodal.testing.exports keeps it
  texts = ['a handwritten six', 'the word two']
  want = multimodal.load_pretrained(export).predictor().embed(texts=texts)
  for path in (workdir, workdir + '/checkpoints/0'):
    got = multimodal.load_pretrained(path).predictor().embed(texts=texts)
    np.testing.assert_array_equal(got['text'], want['text'])
