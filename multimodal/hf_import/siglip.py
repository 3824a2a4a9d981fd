"""HuggingFace SiglipModel -> our ContrastiveModel (towers 'image' and 'text').

HF computation, and the options of ours that reproduce it:
  vision: conv patches (with bias) + a position table (no CLS) -> pre-LN
    layers -> post_layernorm on every token -> SiglipMultiheadAttention-
    PoolingHead (probe attends to the tokens through a torch
    nn.MultiheadAttention, then + MLP(LayerNorm(.))). Ours: ViT(pool='map')
    with post_layernorm as the encoder's final norm; the MAP head is our
    MAPHead (its packed in_proj split into query/key/value). The pooled
    output is the image embedding: projection 'identity'.
  text: token + position embeddings -> bidirectional pre-LN layers ->
    final_layer_norm -> the token at the final position (SigLIP pads to a
    fixed length and attends to the pads) -> `head` Linear with bias. Ours:
    TextEncoder(causal=False, mask_pad=False, pool='last_position') and
    projection 'linear_bias' for the head. HF called with an attention_mask
    masks the padded keys (transformers 5) and still pools the final
    position: ours given the same attention_mask.
  logit_scale (a log) and logit_bias -> log_scale / bias; loss 'sigmoid'.
"""
from __future__ import annotations

from typing import Any

from multimodal.hf_import import clip
from multimodal.hf_import import common

# HF's Siglip*Config defaults (transformers 5), for keys a config dict omits.
TEXT_DEFAULTS = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072,
                     num_hidden_layers=12, num_attention_heads=12,
                     max_position_embeddings=64, hidden_act='gelu_pytorch_tanh',
                     layer_norm_eps=1e-6, pad_token_id=1, bos_token_id=49406,
                     eos_token_id=49407, projection_size=None)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072,
                       num_hidden_layers=12, num_attention_heads=12,
                       num_channels=3, image_size=224, patch_size=16,
                       hidden_act='gelu_pytorch_tanh', layer_norm_eps=1e-6,
                       vision_use_head=True)

IGNORED = (r'.*\.position_ids$',)


def convert(hf_config: Any, state: dict) -> tuple[dict, dict]:
  """SiglipModel config + state dict -> (our model config, our params).

  See the module docstring for the correspondence. Batch fields: 'image'
  (float [B, H, W, C], HF pixel_values transposed NCHW -> NHWC) and 'text'
  (int token ids [B, L]; HF SigLIP expects L = max_position_embeddings,
  padded as its tokenizer does with padding='max_length').
  """
  cfg = common.ConfigView(hf_config, {}, 'SiglipConfig')
  vc = cfg.sub('vision_config', VISION_DEFAULTS)
  tc = cfg.sub('text_config', TEXT_DEFAULTS)
  if not vc['vision_use_head']:
    raise common.ConversionError(
        'SiglipConfig.vision_config.vision_use_head is False: SiglipModel '
        'then has no image embedding to import.')
  r = common.StateReader(state, 'siglip')

  vg = clip.vision_geometry(vc)
  w, grid = vg['width'], vg['image_size'] // vg['patch_size']
  v = 'vision_model'
  h = f'{v}.head'
  image = {'core': {
      'embed': common.patch_embedding(
          r, f'{v}.embeddings.patch_embedding', channels=vg['channels'],
          patch=vg['patch_size'], width=w, bias=True),
      'posemb': {'embedding': r.take(
          f'{v}.embeddings.position_embedding.weight', (grid * grid, w))},
      'encoder': {
          'blocks': clip.encoder_blocks(
              r, f'{v}.encoder.layers', depth=vg['depth'], width=w,
              num_heads=vg['num_heads'], mlp_dim=vg['mlp_dim']),
          'norm': common.layer_norm(r, f'{v}.post_layernorm', w),
      },
      'map_head': {
          'probe': r.take(f'{h}.probe', (1, 1, w)).reshape(w),
          'attn': common.packed_attention(r, f'{h}.attention', width=w,
                                          num_heads=vg['num_heads']),
          'norm': common.layer_norm(r, f'{h}.layernorm', w),
          'mlp': common.mlp(r, f'{h}.mlp.fc1', f'{h}.mlp.fc2', w,
                            vg['mlp_dim']),
      },
  }}
  image_cfg = dict(
      name='vit', **vg, pool='map', posemb='learned', patch_bias=True,
      activation=common.activation(vc['hidden_act'], vc.what),
      layernorm_epsilon=float(vc['layer_norm_eps']))

  tg = clip.text_geometry(tc)
  text = clip.text_tower(r, 'text_model', tg)
  text_cfg = dict(
      name='text_transformer', **tg, causal=False, mask_pad=False,
      pool='last_position', pad_id=int(tc['pad_token_id']),
      posemb='learned',
      activation=common.activation(tc['hidden_act'], tc.what),
      layernorm_epsilon=float(tc['layer_norm_eps']))

  embed_dim = tc['projection_size']
  embed_dim = tg['width'] if embed_dim is None else int(embed_dim)
  if embed_dim != w:
    raise common.ConversionError(
        f'SigLIP text projection_size {embed_dim} differs from the vision '
        f'width {w}; the image embedding (the attention-pooled output) and '
        'the text embedding must have one size.')
  params = {
      'towers': {'image': image, 'text': text},
      'heads': {'text': common.dense(r, 'text_model.head', tg['width'],
                                     embed_dim)},
      'log_scale': r.take('logit_scale', (1,)),
      'bias': r.take('logit_bias', (1,)),
  }
  r.ignore(IGNORED)
  r.finish()
  model_config = dict(
      name='contrastive', towers={'image': image_cfg, 'text': text_cfg},
      embed_dim=embed_dim, pairs=[('image', 'text')],
      inputs={'image': 'image', 'text': 'text'}, loss='sigmoid',
      projection={'image': 'identity', 'text': 'linear_bias'})
  return model_config, params
