"""HuggingFace CLIPModel -> our ContrastiveModel (towers 'image' and 'text').

HF computation, and the options of ours that reproduce it:
  vision: [CLS, conv patches (no bias)] + a position table covering the CLS
    slot -> pre_layrnorm -> pre-LN layers -> post_layernorm on the CLS token.
    Ours: ViT(pool='cls', patch_bias=False, posemb_cls=True, pre_norm=True);
    post_layernorm becomes the encoder's final norm (applied to every token,
    so our pooled output is HF's pooler_output and our tokens are
    post_layernorm(HF last_hidden_state[:, 1:])).
  text: token + position embeddings -> causal pre-LN layers ->
    final_layer_norm -> the token at the first EOS (or, for old configs with
    eos_token_id == 2, at the largest token id). Ours: TextEncoder(
    causal=True, mask_pad=False, pool='eos_id' / 'argmax_id'). Without pad
    masking the outputs match HF called without an attention mask at every
    position, and with one at every position up to the EOS (the causal mask
    keeps the pads after it out of those); called with HF's attention_mask
    (TextEncoder's attention_mask), at every position.
  projections: bias-free Linears -> our default 'linear' heads.
  logit_scale (a log) -> log_scale[0]; loss 'softmax'.
"""
from __future__ import annotations

from typing import Any

from multimodal.hf_import import common

# HF's CLIP*Config defaults (transformers 5), for keys a config dict omits.
TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                     num_hidden_layers=12, num_attention_heads=8,
                     max_position_embeddings=77, hidden_act='quick_gelu',
                     layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=49406,
                     eos_token_id=49407)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072,
                       num_hidden_layers=12, num_attention_heads=12,
                       num_channels=3, image_size=224, patch_size=32,
                       hidden_act='quick_gelu', layer_norm_eps=1e-5)
DEFAULTS = dict(projection_dim=512)

# Buffers some (older) checkpoints saved; HF recomputes them.
IGNORED = (r'.*\.position_ids$',)


def encoder_blocks(r: common.StateReader, prefix: str, *, depth: int,
                   width: int, num_heads: int, mlp_dim: int
                   ) -> dict[int, Any]:
  """CLIP-style layers `prefix`.{i}.{self_attn, layer_norm1/2, mlp} (also
  SigLIP's) -> our Encoder blocks {i: {norm1, attn, norm2, mlp}}."""
  blocks = {}
  for i in range(depth):
    p = f'{prefix}.{i}'
    a = f'{p}.self_attn'
    names = dict(ln1=f'{p}.layer_norm1', q=f'{a}.q_proj', k=f'{a}.k_proj',
                 v=f'{a}.v_proj', o=f'{a}.out_proj', ln2=f'{p}.layer_norm2',
                 fc1=f'{p}.mlp.fc1', fc2=f'{p}.mlp.fc2')
    blocks[i] = common.encoder_block(r, names, width=width,
                                     num_heads=num_heads, mlp_dim=mlp_dim)
  return blocks


def square(value: Any, what: str) -> int:
  """An int from an int or a square (h, w) pair; ours needs square."""
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise common.ConversionError(f'{what}={value}: only square sizes are '
                                   'supported.')
    value = value[0]
  return int(value)


def vision_geometry(vc: common.ConfigView) -> dict[str, int]:
  """Size fields shared by the CLIP / SigLIP / ViT vision configs."""
  image = square(vc['image_size'], f'{vc.what}.image_size')
  patch = square(vc['patch_size'], f'{vc.what}.patch_size')
  if image % patch:
    raise common.ConversionError(f'{vc.what}: image_size {image} is not a '
                                 f'multiple of patch_size {patch}.')
  return dict(image_size=image, patch_size=patch,
              channels=int(vc['num_channels']), width=int(vc['hidden_size']),
              depth=int(vc['num_hidden_layers']),
              num_heads=int(vc['num_attention_heads']),
              mlp_dim=int(vc['intermediate_size']))


def text_geometry(tc: common.ConfigView) -> dict[str, int]:
  return dict(vocab_size=int(tc['vocab_size']),
              max_len=int(tc['max_position_embeddings']),
              width=int(tc['hidden_size']),
              depth=int(tc['num_hidden_layers']),
              num_heads=int(tc['num_attention_heads']),
              mlp_dim=int(tc['intermediate_size']))


def text_tower(r: common.StateReader, prefix: str, g: dict[str, int]
               ) -> dict[str, Any]:
  """Embeddings + layers + final_layer_norm under `prefix` -> TextEncoder."""
  width = g['width']
  return {
      'embed': {'embedding': r.take(
          f'{prefix}.embeddings.token_embedding.weight',
          (g['vocab_size'], width))},
      'posemb': {'embedding': r.take(
          f'{prefix}.embeddings.position_embedding.weight',
          (g['max_len'], width))},
      'encoder': {
          'blocks': encoder_blocks(
              r, f'{prefix}.encoder.layers', depth=g['depth'], width=width,
              num_heads=g['num_heads'], mlp_dim=g['mlp_dim']),
          'norm': common.layer_norm(r, f'{prefix}.final_layer_norm', width),
      },
  }


def convert(hf_config: Any, state: dict) -> tuple[dict, dict]:
  """CLIPModel config + state dict -> (our model config, our params).

  See the module docstring for the correspondence. Batch fields: 'image'
  (float [B, H, W, C], i.e. HF pixel_values transposed NCHW -> NHWC) and
  'text' (int token ids [B, L], L <= max_position_embeddings).
  """
  cfg = common.ConfigView(hf_config, DEFAULTS, 'CLIPConfig')
  vc = cfg.sub('vision_config', VISION_DEFAULTS)
  tc = cfg.sub('text_config', TEXT_DEFAULTS)
  r = common.StateReader(state, 'clip')
  embed_dim = int(cfg['projection_dim'])

  vg = vision_geometry(vc)
  w, grid = vg['width'], vg['image_size'] // vg['patch_size']
  v = 'vision_model'
  image = {'core': {
      'embed': common.patch_embedding(
          r, f'{v}.embeddings.patch_embedding', channels=vg['channels'],
          patch=vg['patch_size'], width=w, bias=False),
      'posemb': {'embedding': r.take(
          f'{v}.embeddings.position_embedding.weight', (grid * grid + 1, w))},
      'cls': r.take(f'{v}.embeddings.class_embedding', (w,)),
      'pre_norm': common.layer_norm(r, f'{v}.pre_layrnorm', w),
      'encoder': {
          'blocks': encoder_blocks(r, f'{v}.encoder.layers', depth=vg['depth'],
                                   width=w, num_heads=vg['num_heads'],
                                   mlp_dim=vg['mlp_dim']),
          'norm': common.layer_norm(r, f'{v}.post_layernorm', w),
      },
  }}
  image_cfg = dict(
      name='vit', **vg, pool='cls', posemb='learned', posemb_cls=True,
      patch_bias=False, pre_norm=True,
      activation=common.activation(vc['hidden_act'], vc.what),
      layernorm_epsilon=float(vc['layer_norm_eps']))

  tg = text_geometry(tc)
  eos_id = int(tc['eos_token_id'])
  text = text_tower(r, 'text_model', tg)
  text_cfg = dict(
      name='text_transformer', **tg, causal=True, mask_pad=False,
      # HF: eos_token_id == 2 marks configs from before the EOS id was fixed
      # in the config, where EOS is the largest id in the vocabulary.
      pool='argmax_id' if eos_id == 2 else 'eos_id', eos_id=eos_id,
      pad_id=int(tc['pad_token_id']),
      posemb='learned',
      activation=common.activation(tc['hidden_act'], tc.what),
      layernorm_epsilon=float(tc['layer_norm_eps']))

  params = {
      'towers': {'image': image, 'text': text},
      'heads': {
          'image': common.dense(r, 'visual_projection', w, embed_dim,
                                bias=False),
          'text': common.dense(r, 'text_projection', tg['width'], embed_dim,
                               bias=False),
      },
      'log_scale': r.take('logit_scale', ()).reshape(1),
  }
  r.ignore(IGNORED)
  r.finish()
  model_config = dict(
      name='contrastive', towers={'image': image_cfg, 'text': text_cfg},
      embed_dim=embed_dim, pairs=[('image', 'text')],
      inputs={'image': 'image', 'text': 'text'}, loss='softmax')
  return model_config, params
