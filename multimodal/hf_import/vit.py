"""HuggingFace ViTModel (or ViTForImageClassification's `vit`) -> our ViT.

HF computation, and the options of ours that reproduce it:
  [CLS, conv patches (with bias)] + a position table covering the CLS slot
  -> pre-LN layers -> layernorm on every token. Ours: ViT(pool='cls',
  posemb_cls=True) with `layernorm` as the encoder's final norm, so our
  pooled output is HF's last_hidden_state[:, 0] and our tokens its
  last_hidden_state[:, 1:]. (HF's optional `pooler`, a tanh Linear on the
  CLS token, and a classification `classifier` are not part of our ViT and
  are skipped; the skipped names are logged.)

Checkpoint names: the Hub layout that save_pretrained writes
(encoder.layer.{i}.attention.attention.query, ..., intermediate.dense,
output.dense) and the module layout of transformers 5 in memory
(layers.{i}.attention.q_proj, ..., mlp.fc1, mlp.fc2) are both read, with or
without the 'vit.' prefix. Without qkv_bias, q/k/v get zero biases.
"""
from __future__ import annotations

from typing import Any

from multimodal.hf_import import clip
from multimodal.hf_import import common

# HF's ViTConfig defaults (transformers 5), for keys a config dict omits.
DEFAULTS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, hidden_act='gelu',
                layer_norm_eps=1e-12, image_size=224, patch_size=16,
                num_channels=3, qkv_bias=True)

IGNORED = (r'(vit\.)?pooler\.', r'classifier\.', r'.*\.position_ids$')


def _layer_names(prefix: str, i: int, hub: bool) -> dict[str, str]:
  if hub:
    p = f'{prefix}encoder.layer.{i}'
    a = f'{p}.attention.attention'
    return dict(q=f'{a}.query', k=f'{a}.key', v=f'{a}.value',
                o=f'{p}.attention.output.dense',
                fc1=f'{p}.intermediate.dense', fc2=f'{p}.output.dense',
                ln1=f'{p}.layernorm_before', ln2=f'{p}.layernorm_after')
  p = f'{prefix}layers.{i}'
  a = f'{p}.attention'
  return dict(q=f'{a}.q_proj', k=f'{a}.k_proj', v=f'{a}.v_proj',
              o=f'{a}.o_proj', fc1=f'{p}.mlp.fc1', fc2=f'{p}.mlp.fc2',
              ln1=f'{p}.layernorm_before', ln2=f'{p}.layernorm_after')


def convert(hf_config: Any, state: dict) -> tuple[dict, dict]:
  """ViTConfig + state dict -> (our ViT config, our params).

  Inputs to our model: float images [B, H, W, C] (HF pixel_values
  transposed NCHW -> NHWC).
  """
  cfg = common.ConfigView(hf_config, DEFAULTS, 'ViTConfig')
  prefix = common.detect_prefix(state, 'embeddings.cls_token', ('vit.', ''),
                                'vit')
  hub = any(k.startswith(f'{prefix}encoder.layer.') for k in state)
  r = common.StateReader(state, 'vit')
  g = clip.vision_geometry(cfg)
  w, grid = g['width'], g['image_size'] // g['patch_size']
  qkv_bias = bool(cfg['qkv_bias'])
  e = f'{prefix}embeddings'

  blocks = {}
  for i in range(g['depth']):
    n = _layer_names(prefix, i, hub)
    blocks[i] = common.encoder_block(
        r, n, width=w, num_heads=g['num_heads'], mlp_dim=g['mlp_dim'],
        q_bias=qkv_bias, k_bias=qkv_bias, v_bias=qkv_bias)
  params = {'core': {
      'embed': common.patch_embedding(
          r, f'{e}.patch_embeddings.projection', channels=g['channels'],
          patch=g['patch_size'], width=w, bias=True),
      'posemb': {'embedding': r.take(f'{e}.position_embeddings',
                                     (1, grid * grid + 1, w))[0]},
      'cls': r.take(f'{e}.cls_token', (1, 1, w)).reshape(w),
      'encoder': {'blocks': blocks,
                  'norm': common.layer_norm(r, f'{prefix}layernorm', w)},
  }}
  r.ignore(IGNORED)
  r.finish()
  model_config = dict(
      name='vit', **g, pool='cls', posemb='learned', posemb_cls=True,
      patch_bias=True,
      activation=common.activation(cfg['hidden_act'], cfg.what),
      layernorm_epsilon=float(cfg['layer_norm_eps']))
  return model_config, params
