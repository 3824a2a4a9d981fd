"""Parity of multimodal.hf_import with HuggingFace PyTorch models.

Each test builds a randomly initialised transformers model from a small
config, converts its weights, and runs the same inputs through both, in
float32 with float32 matmuls. Tolerance: max |ours - HF| <= RTOL_SCALE *
max(1, max |HF|) per output (the outputs here are O(1)-O(10)); measured
differences are about 1e-6 (see README "Importing public checkpoints").
"""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx

from multimodal import base_config
from multimodal import hf_import
from multimodal import inputs as inputs_lib
from multimodal.data import audio as audio_lib
from multimodal.hf_import import common
from multimodal.models import LOGICAL_AXES, build_model

# Tolerance relative to the output's scale (max(1, max |reference|)).
RTOL_SCALE = 1e-5
B = 3

torch.set_num_threads(1)  # tiny models; xdist runs two workers on 2 cores
pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(autouse=True)
def _float32_matmuls():
  # Scoped, so other tests in this worker keep the default precision.
  with jax.default_matmul_precision('float32'):
    yield


def assert_close(ours, ref, what):
  ours = np.asarray(ours, np.float32)
  ref = np.asarray(ref.detach().numpy() if hasattr(ref, 'detach') else ref,
                   np.float32)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  scale = max(1.0, float(np.abs(ref).max()))
  diff = float(np.abs(ours - ref).max())
  print(f'{what}: max abs diff {diff:.2e} (scale {scale:.3g})')  # pytest -s
  assert diff <= RTOL_SCALE * scale, (
      f'{what}: max abs diff {diff:.3g} > {RTOL_SCALE} * {scale:.3g}')
  return diff


def randomize(hf, seed):
  """Redraws every parameter of `hf` so that each layer changes its input.

  HF's own init (std 0.02, LayerNorms at 1/0) leaves tiny random models
  close to the identity, where e.g. exact vs tanh GELU or a LayerNorm eps
  of 1e-5 vs 1e-6 would not show; here weights are N(0, 1/fan_in),
  LayerNorm scales 1 + N(0, 0.3^2), biases and other vectors N(0, 0.3^2).
  """
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in hf.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if p.ndim >= 2:
        p.copy_(noise / np.sqrt(np.prod(p.shape[1:])))
      elif 'norm' in name and name.endswith('weight'):
        p.copy_(1 + 0.3 * noise)
      else:
        p.copy_(0.3 * noise)
  return hf


def nhwc(pixels):
  """HF pixel_values [B, C, H, W] -> our images [B, H, W, C]."""
  return jnp.asarray(pixels.numpy().transpose(0, 2, 3, 1))


def check_logical_axes(model):
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata().get('out_sharding')
    assert names is not None and len(names) == var.ndim, (path, names)
    assert set(names) <= set(LOGICAL_AXES) | {None}, (path, names)


def assert_same_from_directory(family, hf, model_config, params, path):
  """save_pretrained + convert(directory), config from config.json as a
  dict, gives what converting the module gave."""
  hf.save_pretrained(path)
  config_dir, params_dir = hf_import.convert(family, str(path))
  assert config_dir == model_config
  jax.tree.map(np.testing.assert_array_equal, params_dir, params)


@nnx.jit
def run_contrastive(model, images, tokens, mask):
  """Every output of an image-text ContrastiveModel, in one compiled call;
  the *_masked ones with the text attention mask `mask` [B, L]."""
  tokens = tokens.astype(jnp.int32)
  image_pooled, image_tokens = model.towers['image'](images)
  text_pooled, text_tokens = model.towers['text'](tokens)
  masked_pooled, masked_tokens = model.towers['text'](tokens,
                                                      attention_mask=mask)
  emb = model({'image': images, 'text': tokens})
  scale, bias = model.logit_params(0)
  logits = scale * emb['image'] @ emb['text'].T
  return dict(image_pooled=image_pooled, image_tokens=image_tokens,
              text_pooled=text_pooled, text_tokens=text_tokens,
              image_proj=model.heads['image'](image_pooled),
              text_proj=model.heads['text'](text_pooled),
              image=emb['image'], text=emb['text'], bias=bias,
              logits=logits if bias is None else logits + bias,
              text_pooled_masked=masked_pooled,
              text_tokens_masked=masked_tokens,
              text_proj_masked=model.heads['text'](masked_pooled),
              text_masked=model.embed('text', tokens, attention_mask=mask))


def _tokens(rows, length, pad):
  """Right-padded int32 [B, length] from lists of ids."""
  out = np.full((len(rows), length), pad, np.int64)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return torch.from_numpy(out)


def _mask(rows, length):
  """The HF tokenizer's attention_mask of _tokens(rows, length, pad):
  int64 [B, length], 1 at the rows' ids, 0 at the padding."""
  return (torch.arange(length)[None] < torch.tensor(
      [len(r) for r in rows])[:, None]).long()


def assert_masked_text_matches(o, hf_text, hf_masked, hf_embeds, rows,
                               what, pooled='text_pooled_masked'):
  """Text outputs with an attention mask (o['*_masked']) against HF's with
  the same mask, at every position and at the real tokens alone; the HF
  outputs without a mask must differ somewhere, or the mask went untested.
  `pooled`: our output that is HF's pooler_output (SigLIP's is after the
  text head)."""
  assert_close(o['text_tokens_masked'], hf_masked.last_hidden_state,
               f'{what} text tokens (attention mask, all positions)')
  real = _mask(rows, hf_masked.last_hidden_state.shape[1]).bool().numpy()
  assert_close(np.asarray(o['text_tokens_masked'])[real],
               hf_masked.last_hidden_state.numpy()[real],
               f'{what} text tokens (attention mask, real tokens)')
  assert_close(o[pooled], hf_masked.pooler_output,
               f'{what} text pooled (attention mask)')
  assert_close(o['text_masked'], hf_embeds,
               f'{what} text embeds (attention mask)')
  unmasked = np.abs(hf_text.last_hidden_state.numpy() -
                    hf_masked.last_hidden_state.numpy()).max()
  assert unmasked > 1e-2, f'{what}: the mask changed nothing ({unmasked})'


# ---------------------------------------------------------------- CLIP

VOCAB, PAD, BOS, EOS = 64, 1, 62, 63
TEXT_ROWS = [[BOS, 5, 2, 7, EOS], [BOS, 9, EOS], [BOS, 3, 4, 5, 6, 7, 8, 9,
                                                  10, EOS]]


def clip_config(eos_token_id):
  text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, vocab_size=VOCAB,
              max_position_embeddings=16, pad_token_id=PAD,
              bos_token_id=BOS, eos_token_id=eos_token_id)
  vision = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=96, image_size=32, patch_size=8)
  return transformers.CLIPConfig(text_config=text, vision_config=vision,
                                 projection_dim=24)


# eos_token_id=2 is HF's marker of old CLIP configs: pooling at the largest
# token id (our pool='argmax_id'); otherwise at the first EOS ('eos_id').
# TEXT_ROWS hold id 2 as an ordinary token, so pooling where id 2 is fails.
@pytest.mark.parametrize('eos_token_id', [EOS, 2])
def test_clip_matches_hf(eos_token_id, tmp_path):
  torch.manual_seed(0)
  hf = randomize(transformers.CLIPModel(clip_config(eos_token_id)).eval(), 0)
  with torch.no_grad():
    hf.logit_scale.fill_(np.log(1 / 0.07))  # CLIP's initial scale
  model_config, params = hf_import.convert('clip', hf)
  assert_same_from_directory('clip', hf, model_config, params, tmp_path)
  text_cfg = model_config['towers']['text']
  assert text_cfg['pool'] == ('eos_id' if eos_token_id == EOS
                              else 'argmax_id')
  model = hf_import.load_model(model_config, params)
  check_logical_axes(model)

  pixels = torch.randn(B, 3, 32, 32)
  ids = _tokens(TEXT_ROWS, 12, PAD)
  mask = _mask(TEXT_ROWS, 12)
  with torch.no_grad():
    out = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    vision = hf.vision_model(pixel_values=pixels)
    text = hf.text_model(input_ids=ids)  # no mask: every position comparable
    text_masked = hf.text_model(input_ids=ids, attention_mask=mask)
    image_proj = hf.visual_projection(vision.pooler_output)
    text_proj = hf.text_projection(text.pooler_output)

  o = run_contrastive(model, nhwc(pixels), jnp.asarray(ids.numpy()),
                      jnp.asarray(mask.numpy()))
  assert o['bias'] is None
  assert_close(o['image_pooled'], vision.pooler_output, 'clip image pooled')
  assert_close(o['image_tokens'], hf.vision_model.post_layernorm(
      vision.last_hidden_state[:, 1:]), 'clip image tokens')
  assert_close(o['text_pooled'], text.pooler_output, 'clip text pooled')
  assert_close(o['text_tokens'], text.last_hidden_state, 'clip text tokens')
  assert_close(o['text_pooled'], text_masked.pooler_output,
               'clip text pooled (HF with attention mask)')
  assert_close(o['image_proj'], image_proj, 'clip image proj')
  assert_close(o['text_proj'], text_proj, 'clip text proj')
  assert_close(o['image'], out.image_embeds, 'clip image embeds')
  assert_close(o['text'], out.text_embeds, 'clip text embeds')
  assert_close(o['logits'], out.logits_per_image, 'clip logits')
  # Causal + padding mask: the same at the real tokens and the pooled EOS,
  # different at the padding positions (which then see no pads).
  assert_masked_text_matches(o, text, text_masked, out.text_embeds,
                             TEXT_ROWS, 'clip')


# -------------------------------------------------------------- SigLIP


def test_siglip_matches_hf(tmp_path):
  torch.manual_seed(1)
  # SigLIP's tokenizer pads to max length with its EOS id (pad == eos).
  text = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=80, vocab_size=VOCAB,
              max_position_embeddings=12, pad_token_id=PAD, bos_token_id=BOS,
              eos_token_id=PAD)
  vision = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=80, image_size=32, patch_size=8)
  hf = randomize(transformers.SiglipModel(transformers.SiglipConfig(
      text_config=text, vision_config=vision)).eval(), 1)
  with torch.no_grad():  # a realistic scale (10) and bias
    hf.logit_scale.fill_(2.3)
    hf.logit_bias.fill_(-1.7)
  model_config, params = hf_import.convert('siglip', hf)
  assert_same_from_directory('siglip', hf, model_config, params, tmp_path)
  model = hf_import.load_model(model_config, params)
  check_logical_axes(model)

  pixels = torch.randn(B, 3, 32, 32)
  rows = [r[1:-1] for r in TEXT_ROWS]
  ids = _tokens(rows, 12, PAD)
  mask = _mask(rows, 12)
  with torch.no_grad():
    out = hf(input_ids=ids, pixel_values=pixels)
    vision_out = hf.vision_model(pixel_values=pixels)
    text_out = hf.text_model(input_ids=ids)
    # transformers 5 masks the padded keys of SiglipTextModel too (a
    # bidirectional padding mask) and still pools the final position.
    text_masked = hf.text_model(input_ids=ids, attention_mask=mask)
    embeds_masked = hf(input_ids=ids, pixel_values=pixels,
                       attention_mask=mask).text_embeds

  o = run_contrastive(model, nhwc(pixels), jnp.asarray(ids.numpy()),
                      jnp.asarray(mask.numpy()))
  assert_close(o['image_pooled'], vision_out.pooler_output,
               'siglip image pooled (MAP)')
  assert_close(o['image_tokens'], vision_out.last_hidden_state,
               'siglip image tokens')
  assert_close(o['text_tokens'], text_out.last_hidden_state,
               'siglip text tokens')
  assert_close(o['text_proj'], text_out.pooler_output, 'siglip text head')
  assert_close(o['image'], out.image_embeds, 'siglip image embeds')
  assert_close(o['text'], out.text_embeds, 'siglip text embeds')
  assert_close(o['logits'], out.logits_per_image, 'siglip logits')
  assert_masked_text_matches(o, text_out, text_masked, embeds_masked, rows,
                             'siglip', pooled='text_proj_masked')


# ----------------------------------------------------------------- ViT


@functools.lru_cache(maxsize=None)
def _vit(qkv_bias=True):
  torch.manual_seed(2)
  config = transformers.ViTConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, image_size=32, patch_size=16, num_channels=3,
      qkv_bias=qkv_bias)
  return randomize(transformers.ViTModel(config).eval(), 2)


@pytest.mark.parametrize('qkv_bias', [True, False])
def test_vit_matches_hf(qkv_bias, tmp_path):
  hf = _vit(qkv_bias)
  # Module layout (transformers 5 in memory: layers.{i}.attention.q_proj).
  model_config, params = hf_import.convert('vit', hf.state_dict(), hf.config)
  # Hub layout, as save_pretrained writes it (encoder.layer.{i}.attention.
  # attention.query), with config.json read from the directory.
  hf.save_pretrained(tmp_path)
  saved = safetensors.numpy.load_file(str(tmp_path / 'model.safetensors'))
  assert 'encoder.layer.0.attention.attention.query.weight' in saved
  config_dir, params_dir = hf_import.convert('vit', str(tmp_path))
  assert config_dir == model_config
  jax.tree.map(np.testing.assert_array_equal, params_dir, params)
  # ViTForImageClassification: 'vit.' prefix; the classifier is skipped.
  prefixed = {f'vit.{k}': v for k, v in saved.items()
              if not k.startswith('pooler.')}
  prefixed['classifier.weight'] = np.zeros((5, 32), np.float32)
  _, params_prefixed = hf_import.convert('vit', prefixed, hf.config)
  jax.tree.map(np.testing.assert_array_equal, params_prefixed, params)

  model = hf_import.load_model(model_config, params)
  check_logical_axes(model)
  pixels = torch.randn(B, 3, 32, 32)
  with torch.no_grad():
    out = hf(pixel_values=pixels)
  pooled, tokens = nnx.jit(lambda m, x: m(x))(model, nhwc(pixels))
  assert_close(pooled, out.last_hidden_state[:, 0], 'vit pooled (CLS)')
  assert_close(tokens, out.last_hidden_state[:, 1:], 'vit tokens')


# ------------------------------------------------------------- Whisper


def test_whisper_encoder_matches_hf(tmp_path):
  torch.manual_seed(3)
  config = transformers.WhisperConfig(
      d_model=32, encoder_layers=2, encoder_attention_heads=4,
      encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=4,
      decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=12,
      max_target_positions=16, vocab_size=VOCAB, pad_token_id=PAD,
      bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS)
  hf = randomize(transformers.WhisperModel(config).eval(), 3)
  model_config, params = hf_import.convert('whisper', hf)  # decoder skipped
  assert model_config['num_frames'] == 24
  model = hf_import.load_model(model_config, params)
  check_logical_axes(model)

  # A bare encoder checkpoint as a .safetensors file, config as a dict.
  encoder = {k[len('encoder.'):]: v.numpy()
             for k, v in hf.state_dict().items() if k.startswith('encoder.')}
  path = str(tmp_path / 'encoder.safetensors')
  safetensors.numpy.save_file(encoder, path)
  _, params_file = hf_import.convert('whisper', path, config.to_dict())
  jax.tree.map(np.testing.assert_array_equal, params_file, params)

  features = torch.randn(B, 16, 24)  # HF layout [B, mels, frames]
  with torch.no_grad():
    out = hf.encoder(features).last_hidden_state
  pooled, tokens = nnx.jit(lambda m, x: m(x))(
      model, jnp.asarray(features.numpy().transpose(0, 2, 1)))
  assert_close(tokens, out, 'whisper encoder tokens')
  assert_close(pooled, out.mean(1), 'whisper pooled (mean)')


# ------------------------------------------- Whisper's audio front end

SR = 16000


def _chirp(seconds, seed):
  """A linear 100 Hz -> 7 kHz chirp plus white noise (SNR ~ 20 dB), float32
  [seconds * 16000] at 16 kHz."""
  t = np.arange(int(seconds * SR)) / SR
  sweep = 100 * t + 0.5 * (7000 - 100) / seconds * t**2
  noise = np.random.default_rng(seed).standard_normal(t.size)
  return (0.5 * np.sin(2 * np.pi * sweep) + 0.035 * noise).astype(np.float32)


def _feature_extractor(num_mels):
  # Explicit arguments: nothing is downloaded. These are Whisper's.
  return transformers.WhisperFeatureExtractor(
      feature_size=num_mels, sampling_rate=SR, hop_length=160,
      chunk_length=30, n_fft=400)


@pytest.mark.parametrize('num_mels', [80, 128])
def test_whisper_mel_filters_match_transformers(num_mels):
  ref = transformers.audio_utils.mel_filter_bank(
      num_frequency_bins=201, num_mel_filters=num_mels, min_frequency=0.0,
      max_frequency=8000.0, sampling_rate=SR, norm='slaney',
      mel_scale='slaney')
  ours = audio_lib.mel_filters(201, num_mels, SR, 0.0, 8000.0,
                               scale='slaney', norm='slaney')
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12 * ref.max())
  cfg = audio_lib.LogMelConfig.whisper(num_mels=num_mels)
  np.testing.assert_allclose(audio_lib.mel_filterbank(cfg), ref, rtol=1e-6,
                             atol=1e-9)
  # The default front end's filters are HF's HTK ones without a norm.
  ref_htk = transformers.audio_utils.mel_filter_bank(
      num_frequency_bins=257, num_mel_filters=64, min_frequency=0.0,
      max_frequency=8000.0, sampling_rate=SR, norm=None, mel_scale='htk')
  np.testing.assert_allclose(
      audio_lib.mel_filterbank(audio_lib.LogMelConfig()), ref_htk,
      rtol=0, atol=1e-7)


# Shorter than 30 s (zero padded), exactly 30 s, longer (cropped), and the
# 128 mel bins of large-v3 checkpoints.
@pytest.mark.parametrize('seconds, num_mels', [(7.3, 80), (30.0, 80),
                                               (31.7, 128)])
def test_whisper_front_end_matches_feature_extractor(seconds, num_mels):
  wave = _chirp(seconds, 0)
  ref = _feature_extractor(num_mels)(
      wave, sampling_rate=SR, return_tensors='np').input_features[0].T
  cfg = audio_lib.LogMelConfig.whisper(num_mels=num_mels)
  ours, free = audio_lib.clip_features(wave, cfg)
  assert free == 0 and ours.shape == ref.shape == (3000, num_mels)
  assert ours.dtype == np.float32
  diff = float(np.abs(ours - ref).max())
  print(f'whisper front end {seconds} s, {num_mels} mels: max abs diff '
        f'{diff:.2e}')
  assert diff <= 1e-4, diff
  # With torch installed, the call above computes in float32 with torch
  # (the differences above); HF's float64 NumPy path agrees to float32
  # rounding.
  window = np.zeros(30 * SR, np.float32)
  window[:min(len(wave), len(window))] = wave[:len(window)]
  ref_np = _feature_extractor(num_mels)._np_extract_fbank_features(
      window[None], 'cpu')[0].T
  assert float(np.abs(ours - ref_np).max()) <= 1e-6


def test_whisper_encoder_on_raw_audio_matches_hf():
  """Raw 16 kHz clips through the inference API's preprocessing (the audio
  field kind with audio_front_end='whisper') and the imported encoder ==
  HF's WhisperFeatureExtractor + WhisperEncoder."""
  torch.manual_seed(4)
  config = transformers.WhisperConfig(
      d_model=32, encoder_layers=2, encoder_attention_heads=4,
      encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=4,
      decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500,
      max_target_positions=16, vocab_size=VOCAB, pad_token_id=PAD,
      bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS)
  hf = randomize(transformers.WhisperModel(config).eval(), 4)
  model_config, params = hf_import.convert('whisper', hf)
  model = hf_import.load_model(model_config, params)

  waves = [_chirp(4.2, 1), _chirp(33.0, 2)]
  features = _feature_extractor(80)(waves, sampling_rate=SR,
                                    return_tensors='pt').input_features
  with torch.no_grad():
    ref = hf.encoder(features).last_hidden_state

  input_cfg = base_config.base().input
  input_cfg.audio_front_end = 'whisper'
  input_cfg.num_frames = model_config['num_frames']  # 3000
  input_cfg.num_mels = model_config['num_mels']  # 80
  prep = inputs_lib.Preprocessor(input_cfg, None)
  x, _ = prep.batch('audio', waves, sample_rate=SR)
  assert prep.kind('audio').settings()['log_mel']['front_end'] == 'whisper'
  hf_features = features.numpy().transpose(0, 2, 1)  # [B, frames, mels]
  assert x.shape == hf_features.shape == (2, 3000, 80)
  assert float(np.abs(x - hf_features).max()) <= 1e-4
  pooled, tokens = nnx.jit(lambda m, v: m(v))(model, jnp.asarray(x))
  assert_close(tokens, ref, 'whisper encoder tokens from raw audio')
  assert_close(pooled, ref.mean(1), 'whisper pooled from raw audio')


# -------------------------------------------------------------- errors


def test_unknown_family_lists_the_families():
  with pytest.raises(hf_import.ConversionError,
                     match=r"Unknown checkpoint family 'bert'.*"
                           r"'clip', 'siglip', 'vit', 'whisper'"):
    hf_import.convert('bert', {}, {})


def test_missing_unexpected_and_mismatched_keys_are_listed():
  hf = _vit()
  state = {k: v for k, v in hf.state_dict().items()
           if not k.startswith('layers.1.')}  # a layer removed
  state['layers.0.attention.extra.weight'] = torch.zeros(2)
  with pytest.raises(hf_import.ConversionError) as err:
    hf_import.convert('vit', state, hf.config)
  message = str(err.value)
  assert 'missing keys (16)' in message
  assert 'layers.1.attention.q_proj.weight' in message
  assert 'layers.1.mlp.fc2.bias' in message
  assert 'unexpected keys (1)' in message
  assert 'layers.0.attention.extra.weight' in message

  # The config says width 48, the checkpoint is 32 wide.
  wide = dict(hf.config.to_dict(), hidden_size=48, intermediate_size=96)
  with pytest.raises(hf_import.ConversionError) as err:
    hf_import.convert('vit', hf.state_dict(), wide)
  message = str(err.value)
  assert ('embeddings.cls_token: checkpoint (1, 1, 32), config expects '
          '(1, 1, 48)') in message
  assert ('layers.1.mlp.fc1.weight: checkpoint (64, 32), config expects '
          '(96, 48)') in message
  assert 'missing keys' not in message

  with pytest.raises(hf_import.ConversionError, match='Not a .whisper.'):
    hf_import.convert('whisper', hf.state_dict(), {})


def test_sources_without_a_config_or_weights_are_clear_errors(tmp_path):
  with pytest.raises(hf_import.ConversionError, match='No HF config'):
    hf_import.convert('vit', {'a': np.zeros(1)})
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'vit'}))
  (tmp_path / 'pytorch_model.bin').write_bytes(b'')
  with pytest.raises(hf_import.ConversionError,
                     match=r'no model.safetensors.*pytorch_model.bin'):
    hf_import.convert('vit', str(tmp_path))


def test_bfloat16_safetensors_read_as_float32(tmp_path):
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  tensors = {'a': torch.randn(3, 4).bfloat16(), 'b': torch.randn(5).half()}
  path = str(tmp_path / 'x.safetensors')
  save_file(tensors, path)
  state = common.load_state_dict(path)
  for name, tensor in tensors.items():
    assert state[name].dtype == np.float32
    np.testing.assert_array_equal(state[name], tensor.float().numpy())


def test_converted_params_are_the_models_pure_dict():
  """The returned tree has the model's exact paths; a wrong one is caught."""
  model_config, params = hf_import.convert('vit', _vit().state_dict(),
                                           _vit().config)
  model = nnx.eval_shape(lambda: build_model(model_config,
                                             rngs=nnx.Rngs(0)))
  expected = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  assert (jax.tree.structure(jax.tree.map(np.shape, params))
          == jax.tree.structure(jax.tree.map(np.shape, expected)))
  params['core']['cls'] = np.zeros(7, np.float32)
  with pytest.raises(hf_import.ConversionError, match=r'core/cls: \(7,\)'):
    common.check_against_model(model_config, params, 'vit')


# ------------------------------------------------- model options alone


@pytest.mark.parametrize('config, message', [
    (dict(name='vit', pool='mean', posemb_cls=True), 'posemb_cls=True needs'),
    (dict(name='audio_transformer', stem='conv1d'), 'stem="conv1d" needs'),
    (dict(name='audio_transformer', stem='conv2d'), 'stem must be one of'),
    (dict(name='text_transformer', vocab_size=10, pool='eos_id'),
     'needs eos_id'),
    (dict(name='contrastive', towers={'a': dict(name='vit', width=8)},
          embed_dim=4, pairs=[], inputs={'x': 'a'},
          projection={'a': 'identity'}), 'needs the tower width'),
    (dict(name='contrastive', towers={'a': dict(name='vit', width=8)},
          embed_dim=4, pairs=[], inputs={'x': 'a'},
          projection={'b': 'linear'}), 'names tower .b.'),
])
def test_bad_option_combinations_are_clear_errors(config, message):
  with pytest.raises(ValueError, match=message):
    nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))


def test_text_pools_for_imported_checkpoints():
  """eos_id: first EOS; argmax_id: largest id; last_position: index L-1."""
  config = dict(name='text_transformer', vocab_size=20, max_len=6, width=8,
                depth=1, num_heads=2, mask_pad=False)
  tokens = jnp.array([[3, 9, 5, 9, 0, 0], [19, 4, 9, 0, 0, 0]], jnp.int32)
  _, x = build_model(dict(config, pool='first'), rngs=nnx.Rngs(0))(tokens)
  for pool, index in (('eos_id', [1, 2]), ('argmax_id', [1, 0]),
                      ('last_position', [5, 5])):
    model = build_model(dict(config, pool=pool, eos_id=9), rngs=nnx.Rngs(0))
    pooled, tokens_out = model(tokens)
    np.testing.assert_array_equal(tokens_out, x)
    np.testing.assert_array_equal(pooled, x[jnp.arange(2), jnp.array(index)])


def test_text_attention_mask_replaces_the_pad_rule():
  """Our own towers (mask_pad=True): the mask tokens != pad_id changes
  nothing; a mask hiding a real token changes the outputs; mask_pad=False
  with a mask equals mask_pad=True; a mask of the wrong shape is an error."""
  config = dict(name='text_transformer', vocab_size=20, max_len=6, width=8,
                depth=1, num_heads=2, pool='eos')
  tokens = jnp.array([[3, 9, 5, 9, 0, 0], [19, 4, 9, 0, 0, 0]], jnp.int32)
  mask = (tokens != 0).astype(jnp.int32)
  model = build_model(config, rngs=nnx.Rngs(0))
  pooled, x = model(tokens)
  pooled_m, x_m = model(tokens, attention_mask=mask)
  np.testing.assert_array_equal(pooled_m, pooled)
  np.testing.assert_array_equal(x_m, x)
  shorter = mask.at[0, 3].set(0)  # row 0 now ends at position 2
  pooled_s, x_s = model(tokens, attention_mask=shorter)
  np.testing.assert_array_equal(pooled_s[1], pooled[1])
  np.testing.assert_allclose(pooled_s[0], x_s[0, 2])
  assert not np.allclose(x_s[0, :3], x[0, :3])
  unmasked = build_model(dict(config, mask_pad=False), rngs=nnx.Rngs(0))
  assert not np.allclose(unmasked(tokens)[1], x)
  np.testing.assert_array_equal(unmasked(tokens, attention_mask=mask)[1], x)
  with pytest.raises(ValueError, match=r'attention_mask has shape \(2, 5\)'):
    model(tokens, attention_mask=mask[:, :5])


def test_conv1d_stem_lengths_and_odd_frames():
  model = build_model(dict(name='audio_transformer', stem='conv1d',
                           posemb='learned', num_frames=7, num_mels=5,
                           width=8, depth=1, num_heads=2),
                      rngs=nnx.Rngs(0))
  pooled, tokens = model(jnp.ones((2, 7, 5)))
  assert tokens.shape == (2, 4, 8) and pooled.shape == (2, 8)
  check_logical_axes(model)
