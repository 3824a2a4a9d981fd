"""HuggingFace Whisper encoder -> our AudioEncoder with the conv1d stem.

HF computation (WhisperEncoder), and the options of ours that reproduce it:
  log-mels [B, n_mels, T] -> conv1 (k=3, pad 1) -> GELU -> conv2 (k=3,
  stride 2, pad 1) -> GELU -> + embed_positions (a stored sinusoid table,
  frozen in HF) -> pre-LN layers (k_proj without bias) -> layer_norm.
  Ours: AudioEncoder(stem='conv1d', posemb='learned') over [B, T, n_mels]
  (HF input_features transposed), T = 2 * max_source_positions, the stored
  table loaded into the learned position embedding (trainable here: freeze
  it in the optimizer if it should stay fixed), layer_norm as the encoder's
  final norm, a zero key bias (which cannot change attention). Our tokens
  are HF's last_hidden_state; our pooled output is their mean over time
  (Whisper itself has no pooling). Raw 16 kHz audio -> HF's input_features
  (WhisperFeatureExtractor), in our [T, n_mels] layout: the 'whisper' log-mel
  front end (multimodal.data.audio.LogMelConfig.whisper;
  config.input.audio_front_end='whisper').

Checkpoints: WhisperEncoder (no prefix), WhisperModel ('encoder.') or
WhisperForConditionalGeneration ('model.encoder.'); decoder and output
projection tensors are skipped (their names are logged).
"""
from __future__ import annotations

from typing import Any

from multimodal.hf_import import common

# HF's WhisperConfig defaults (transformers 5), for keys a config dict omits.
DEFAULTS = dict(num_mel_bins=80, encoder_layers=4, encoder_attention_heads=6,
                encoder_ffn_dim=1536, d_model=384, max_source_positions=1500,
                activation_function='gelu')
# Whisper's LayerNorms are torch's default nn.LayerNorm(d_model).
LAYERNORM_EPS = 1e-5

IGNORED = (r'(model\.)?decoder\.', r'proj_out\.', r'projector\.',
           r'classifier\.', r'layer_weights$')


def convert(hf_config: Any, state: dict) -> tuple[dict, dict]:
  """WhisperConfig + state dict -> (our AudioEncoder config, our params).

  Inputs to our model: float log-mels [B, 2 * max_source_positions,
  num_mel_bins] (HF input_features [B, num_mel_bins, T] transposed).
  """
  cfg = common.ConfigView(hf_config, DEFAULTS, 'WhisperConfig')
  prefix = common.detect_prefix(state, 'conv1.weight',
                                ('model.encoder.', 'encoder.', ''), 'whisper')
  r = common.StateReader(state, 'whisper')
  w = int(cfg['d_model'])
  depth = int(cfg['encoder_layers'])
  num_heads = int(cfg['encoder_attention_heads'])
  mlp_dim = int(cfg['encoder_ffn_dim'])
  mels = int(cfg['num_mel_bins'])
  positions = int(cfg['max_source_positions'])

  blocks = {}
  for i in range(depth):
    p = f'{prefix}layers.{i}'
    a = f'{p}.self_attn'
    names = dict(ln1=f'{p}.self_attn_layer_norm', q=f'{a}.q_proj',
                 k=f'{a}.k_proj', v=f'{a}.v_proj', o=f'{a}.out_proj',
                 ln2=f'{p}.final_layer_norm', fc1=f'{p}.fc1', fc2=f'{p}.fc2')
    blocks[i] = common.encoder_block(r, names, width=w, num_heads=num_heads,
                                     mlp_dim=mlp_dim, k_bias=False)
  params = {'core': {
      'embed': {
          'conv1': common.conv1d(r, f'{prefix}conv1', d_in=mels, d_out=w,
                                 kernel_size=3),
          'conv2': common.conv1d(r, f'{prefix}conv2', d_in=w, d_out=w,
                                 kernel_size=3),
      },
      'posemb': {'embedding': r.take(f'{prefix}embed_positions.weight',
                                     (positions, w))},
      'encoder': {'blocks': blocks,
                  'norm': common.layer_norm(r, f'{prefix}layer_norm', w)},
  }}
  r.ignore(IGNORED)
  r.finish()
  model_config = dict(
      name='audio_transformer', stem='conv1d', num_frames=2 * positions,
      num_mels=mels, width=w, depth=depth, num_heads=num_heads,
      mlp_dim=mlp_dim, pool='mean', posemb='learned',
      activation=common.activation(cfg['activation_function'], cfg.what),
      layernorm_epsilon=LAYERNORM_EPS)
  return model_config, params
