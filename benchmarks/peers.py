r"""Side-by-side training step: multimodal vs open_clip vs big_vision.

  python benchmarks/peers.py --model siglip_b32 --batch 32 --rounds 2 \
      --torch_python .venv-bench/bin/python --big_vision_dir ../big_vision
  python benchmarks/peers.py --model tiny --frameworks multimodal --rounds 1
  make bench-peers BIG_VISION_DIR=../big_vision      # sets everything up

One model, one synthetic batch, three frameworks, each in its own child
process (`peers.py --child FRAMEWORK ...`): frameworks never share a
process, and the parent alternates them round-robin for --rounds rounds
(multimodal, open_clip, big_vision, multimodal, ...) so that a machine
getting busier or quieter hits all of them alike. Every child gets the same
environment: the same allocator (tcmalloc preloaded when
/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 exists, unless
--allocator glibc), XLA's default threads, torch.set_num_threads(
os.cpu_count()), and the same XLA_FLAGS / OMP_* the parent was given.

What each child times: the training step (forward + backward + AdamW update
with global-norm clipping at 1.0, b1 0.9, b2 0.95, weight decay 1e-4 on the
matrices, lr 1e-3 with 50 warm-up steps and cosine decay: OPT_BY_MODEL, our
config's values) on one synthetic batch of the same shapes and values
(random images in [-1, 1], random token ids with an EOS halfway and pads
after), --warmup steps after the first, then --steps steps, each waited
for (`block_until_ready` in JAX; PyTorch's CPU ops return when their work is
done, and the step reads the loss with .item()). Median and min per
child; across rounds the table shows the median of the per-round medians and
the min of the mins. Time to first step: from building the model (imports
excluded) to the end of the first step, i.e. init + compile + first step.

The frameworks:
  multimodal  ours: benchmarks/train_step.run (the trainer's own jitted,
              donated step; --dtype bfloat16: train_step.model_config's
              bf16 compute, float32 parameters).
  open_clip   PyTorch: `open_clip.create_model` on a model config registered
              with `open_clip.add_model_config` (custom_text, as open_clip's
              SigLIP configs): the image tower a timm ViT (class_token=False,
              global_pool='map', as timm's SigLIP ViTs) at the matched size
              with open_clip's bias-free linear projection; open_clip's
              TextTransformer (no causal mask, pool 'last', bias-free
              projection); learnable logit_scale (init log 10) and
              logit_bias (init -10); `open_clip.loss.SigLipLoss`;
              torch.optim.AdamW with open_clip's two parameter groups (no
              decay on gains, biases, logit scale/bias); clip_grad_norm_;
              logit_scale clamped to [0, log 100] after each step, as
              open_clip's training loop. bfloat16 = open_clip's
              `--precision amp_bf16`: torch.autocast('cpu', torch.bfloat16)
              around forward and loss, float32 parameters.
              open_clip needs torchvision, which does not import beside our
              venv's CPU torch wheel: run it under another interpreter with
              --torch_python (the `bench` extra of setup.cfg, installed into
              its own venv by `make bench-peers`).
  big_vision  JAX/Linen: `big_vision.models.proj.image_text.two_towers`
              with its ViT (pool_type 'map', learned posemb,
              head_zeroinit=False) and text_transformer (pool 'last') at the
              matched sizes, out_dim = the embedding size, temperature_init
              10, bias_init -10; the optimizer from `big_vision.optax.make`
              (scale_by_adam, grad_clip_norm, cosine schedule, decoupled wd
              on kernels) and an update function written like its SigLIP
              trainer's (trainers/proj/image_text/siglip.py: sigmoid loss on
              the diagonal, l2 grads/params/updates measured every step),
              jitted with the train state donated and compiled ahead of
              time (as ours); the parent prints XLA's FLOPs and temporary
              memory of both JAX steps (the same model: they should
              agree). From a source checkout (--big_vision_dir or
              $BIG_VISION_DIR; not pip-installable).
              big_vision.utils imports tensorflow only for `gfile` (file
              I/O, which the step never does): without tensorflow installed
              the child registers a stand-in `tensorflow.io.gfile` whose
              functions raise, and says so in its result. Its bfloat16 is
              the ViT's `dtype_mm` (image tower matmuls); its text
              transformer has no dtype option and stays float32.

Parameter counts are printed per framework and checked against ours (and
against an analytic count of SPECS): the three models agree to a few
hundred values (big_vision's two projection heads have biases). Known
differences that do not change the FLOPs: big_vision's GELU is the tanh
approximation (ours and open_clip's the exact erf); open_clip attends to
pad tokens (no mask), ours masks them out of the keys.

On a shared machine the timings swing with other jobs: every child also
times one NumPy float32 1024^3 matmul before and after its steps, and the
table's `probe` column shows the lower figure, so that rows measured while
the machine was busy stand out (compare rows with similar probes, or rerun
with more --rounds on a quiet machine).

--pair times ours against big_vision in one child instead (both are JAX):
both steps compiled, then --steps rounds of one step each, the order
alternating, and the paired ratio (the median over rounds of ours / theirs
in the same round), which the drift between separate children cannot
disturb (child_pair).

A framework that is not there (package not importable under its
interpreter, no big_vision checkout) is reported as "not installed" with
how to install it, and skipped. --json writes every child's result and the
aggregated rows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TCMALLOC = '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4'
FRAMEWORKS = ('multimodal', 'open_clip', 'big_vision')

# The matched models. `multimodal` builds them from
# benchmarks/train_step.model_config (and checks it still matches these);
# the peers build them from these numbers.
SPECS = {
    'tiny': dict(
        image_size=32, patch=8, embed_dim=32,
        image=dict(width=32, depth=1, heads=2, mlp=128),
        text=dict(vocab=128, length=32, width=32, depth=1, heads=2, mlp=128)),
    'siglip_b32': dict(
        image_size=224, patch=32, embed_dim=512,
        image=dict(width=768, depth=12, heads=12, mlp=3072),
        text=dict(vocab=49408, length=77, width=512, depth=12, heads=8,
                  mlp=2048)),
}

# The optimizer all three use: multimodal's (base_config defaults; the
# tiny experiment variant's lr and warm-up), over train_step.run's 1000
# scheduled steps. The multimodal child checks its config against it.
OPT = dict(lr=1e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=1e-4,
           clip_norm=1.0, warmup_steps=50, total_steps=1000,
           final_fraction=0.01)
OPT_BY_MODEL = {'tiny': dict(OPT, lr=3e-3, warmup_steps=3), 'siglip_b32': OPT}
TEMPERATURE_INIT, BIAS_INIT = 10.0, -10.0

INSTALL = {
    'multimodal': 'pip install -e . (the repository itself)',
    'open_clip': ("make bench-peers, or: python3 -m venv .venv-bench && "
                  ".venv-bench/bin/pip install 'open_clip_torch>=3.3,<4' "
                  'torch==2.14.1 torchvision==0.29.1 numpy (setup.cfg\'s '
                  'bench extra), then --torch_python '
                  '.venv-bench/bin/python'),
    'big_vision': ('a source checkout of google-research/big_vision (git '
                   'clone, or an archive of it), passed as --big_vision_dir '
                   'DIR or BIG_VISION_DIR=DIR; its other imports (flax, '
                   'optax, einops, ml_collections, absl) are already ours'),
}
INSTALL['pair'] = INSTALL['big_vision']


def spec_param_count(spec: dict) -> int:
  """Parameters of the matched two-tower model, counted from SPECS.

  Pre-LN transformer blocks with biases; image: patch embedding (bias),
  learned position table (no class token), final norm, MAP head (probe,
  q/k/v/out, norm, MLP); text: token and position tables, final norm;
  bias-free projections to embed_dim; a logit scale and a bias.
  """
  def block(w, m):
    return 4 * w + 4 * (w * w + w) + (w * m + m) + (m * w + w)
  im, tx, e, p = spec['image'], spec['text'], spec['embed_dim'], spec['patch']
  w, m = im['width'], im['mlp']
  tokens = (spec['image_size'] // p) ** 2
  image = (p * p * 3 * w + w + tokens * w + im['depth'] * block(w, m) + 2 * w
           + w + 4 * (w * w + w) + 2 * w + (w * m + m) + (m * w + w) + w * e)
  w, m = tx['width'], tx['mlp']
  text = (tx['vocab'] * w + tx['length'] * w + tx['depth'] * block(w, m)
          + 2 * w + w * e)
  return image + text + 2


def synthetic_inputs(spec: dict, batch: int):
  """The batch every framework gets: images [B, H, W, 3] in [-1, 1] and
  token ids [B, L] (pieces 4.., an EOS id 3 halfway, pads 0 after), as
  benchmarks/train_step.synthetic_batch makes them."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  size, length = spec['image_size'], spec['text']['length']
  images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  text = rng.integers(4, spec['text']['vocab'], (batch, length)).astype(
      np.int32)
  text[:, length // 2] = 3
  text[:, length // 2 + 1:] = 0
  return images, text


def cosine_lr(o: dict, step: int) -> float:
  """Linear warm-up, then cosine to lr * final_fraction (multimodal's
  schedule; open_clip's cosine_lr ends at 0)."""
  if step < o['warmup_steps']:
    return o['lr'] * step / o['warmup_steps']
  t = min(1.0, (step - o['warmup_steps'])
          / max(1, o['total_steps'] - o['warmup_steps']))
  end = o['lr'] * o['final_fraction']
  return end + (o['lr'] - end) * 0.5 * (1 + math.cos(math.pi * t))


def machine_probe(n: int = 1024, repeats: int = 5) -> float:
  """GFLOP/s of the same NumPy float32 n^3 matmul in every child (median
  of repeats): how much of the machine a child had, whatever its
  framework. On a shared machine a low figure flags a busy moment."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  a = np.ones((n, n), np.float32)
  a @ a
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    a @ a
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / statistics.median(times) / 1e9


def _time_steps(step, warmup: int, steps: int) -> list[float]:
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
  return times


################################################################################
# Children: one framework, one precision, one process.


class NotInstalled(Exception):
  pass


def _import_train_step():
  """benchmarks/train_step.py (our side of every comparison)."""
  try:
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    import train_step  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise NotInstalled(str(e)) from e
  return train_step


def _check_multimodal_model(train_step, args, spec) -> None:
  """train_step.model_config is the source of truth for our model: raises
  unless it still builds what the peers build."""
  from multimodal.models import sizes  # pylint: disable=g-import-not-at-top
  c = train_step.model_config(args.model, args.dtype)
  got = {'image_size': c.input.image_size, 'embed_dim': c.model.embed_dim,
         'length': c.input.max_text_len}
  for name in ('image', 'text'):
    t = c.model.towers[name].to_dict()
    s, patch = sizes.resolve(
        t.get('variant'), {k: t[k] for k in sizes.SIZE_KEYS + ('mlp_ratio',)
                           if k in t}, patches=name == 'image')
    got[name] = dict(width=s['width'], depth=s['depth'],
                     heads=s['num_heads'],
                     mlp=s['mlp_dim'] or int(s['width'] * s['mlp_ratio']))
    if name == 'image':
      got['patch'] = t.get('patch_size') or patch
      got['pool'] = t.get('pool')
    else:
      got['text'].update(vocab=t['vocab_size'], length=t['max_len'])
  want = {'image_size': spec['image_size'], 'embed_dim': spec['embed_dim'],
          'length': spec['text']['length'], 'image': spec['image'],
          'text': spec['text'], 'patch': spec['patch'], 'pool': 'map'}
  opt = OPT_BY_MODEL[args.model]
  got['optimizer'] = {k: c.optimizer[k] for k in (
      'name', 'lr', 'b1', 'b2', 'weight_decay', 'clip_norm', 'warmup_steps',
      'final_fraction')}
  want['optimizer'] = dict(name='adamw', **{k: opt[k] for k in (
      'lr', 'b1', 'b2', 'weight_decay', 'clip_norm', 'warmup_steps',
      'final_fraction')})
  if got != want:
    raise ValueError(f'benchmarks/train_step.model_config({args.model!r}) '
                     f'no longer matches peers.SPECS / OPT_BY_MODEL: {got} '
                     f'!= {want}')


def child_multimodal(args, spec) -> dict:
  train_step = _import_train_step()
  # pylint: disable=g-import-not-at-top
  import flax
  import jax
  # pylint: enable=g-import-not-at-top
  _check_multimodal_model(train_step, args, spec)
  r = train_step.run(args.model, args.batch, args.steps, args.warmup,
                     args.dtype)
  return dict(
      precision=('float32' if args.dtype == 'float32'
                 else 'bfloat16 (compute)'),
      step_s_median=r['step_s_median'], step_s_min=r['step_s_min'],
      params=round(r['params_m'] * 1e6),
      time_to_first_step_s=r['time_to_first_step_s'],
      loss=r['loss'], device=r['device'],
      versions={'jax': jax.__version__, 'flax': flax.__version__},
      detail={k: r.get(k) for k in ('init_s', 'lower_s', 'compile_s',
                                'first_step_s', 'mfu', 'temp_memory_mib',
                                'xla_flops_per_step',
                                'model_flops_per_step')})


def _register_timm_vit(spec) -> str:
  """A timm model name for the matched image tower: timm's own SigLIP ViT
  (vit_base_patch32_siglip_256: no class token, MAP pooling) at our size,
  image size and exact GELU."""
  import timm  # pylint: disable=g-import-not-at-top
  from timm.models import register_model  # pylint: disable=g-import-not-at-top
  im = spec['image']
  name = f'peers_siglip_vit_{im["width"]}x{im["depth"]}_p{spec["patch"]}'
  overrides = dict(img_size=spec['image_size'], patch_size=spec['patch'],
                   embed_dim=im['width'], depth=im['depth'],
                   num_heads=im['heads'], mlp_ratio=im['mlp'] / im['width'],
                   class_token=False, global_pool='map', act_layer='gelu')

  def factory(pretrained=False, **kwargs):
    del pretrained  # never: random init
    return timm.create_model('vit_base_patch32_siglip_256', pretrained=False,
                             **{**overrides, **kwargs})

  factory.__name__ = name
  if name not in timm.list_models(name):
    register_model(factory)
  return name


def child_open_clip(args, spec) -> dict:
  try:
    import numpy as np  # pylint: disable=g-import-not-at-top,unused-import
    import torch  # pylint: disable=g-import-not-at-top
    import open_clip  # pylint: disable=g-import-not-at-top
    import timm  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise NotInstalled(f'{e} (under {sys.executable})') from e
  torch.set_num_threads(os.cpu_count())
  opt = OPT_BY_MODEL[args.model]
  tx = spec['text']
  vision = _register_timm_vit(spec)
  name = f'peers-{args.model}'
  model_cfg = dict(
      embed_dim=spec['embed_dim'], custom_text=True,
      init_logit_scale=math.log(TEMPERATURE_INIT), init_logit_bias=BIAS_INIT,
      vision_cfg=dict(image_size=spec['image_size'], timm_model_name=vision,
                      timm_model_pretrained=False, timm_pool='map',
                      timm_proj='linear', timm_proj_bias=False),
      text_cfg=dict(context_length=tx['length'], vocab_size=tx['vocab'],
                    width=tx['width'], heads=tx['heads'],
                    layers=tx['depth'], mlp_ratio=tx['mlp'] / tx['width'],
                    no_causal_mask=True, pool_type='last', proj_bias=False,
                    norm_kwargs=dict(eps=1e-6)))
  amp = args.dtype == 'bfloat16'
  with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, f'{name}.json'), 'w') as f:
      json.dump(model_cfg, f)
    open_clip.add_model_config(tmp)
    images_np, text_np = synthetic_inputs(spec, args.batch)
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous()
    texts = torch.from_numpy(text_np).long()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = open_clip.create_model(
        name, pretrained=None, precision='amp_bf16' if amp else 'fp32',
        device='cpu', output_dict=True, pretrained_image=False)
  model.train()
  loss_fn = open_clip.loss.SigLipLoss(rank=0, world_size=1)
  # open_clip's parameter groups (open_clip_train/main.py): no weight decay
  # on gains, biases and the logit scale / bias.
  named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
  exclude = lambda n, p: (p.ndim < 2 or 'bn' in n or 'ln' in n
                          or 'bias' in n or 'logit_scale' in n)
  optimizer = torch.optim.AdamW(
      [{'params': [p for n, p in named if exclude(n, p)],
        'weight_decay': 0.0},
       {'params': [p for n, p in named if not exclude(n, p)],
        'weight_decay': opt['weight_decay']}],
      lr=opt['lr'], betas=(opt['b1'], opt['b2']), eps=opt['eps'])
  autocast = (lambda: torch.autocast('cpu', dtype=torch.bfloat16)) if amp \
      else __import__('contextlib').nullcontext
  count = [0]
  losses = []

  def step():
    for group in optimizer.param_groups:  # open_clip's per-step cosine_lr
      group['lr'] = cosine_lr(opt, count[0])
    optimizer.zero_grad()
    with autocast():
      out = model(images, texts)
      loss = loss_fn(out['image_features'], out['text_features'],
                     out['logit_scale'], out['logit_bias'])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), opt['clip_norm'],
                                   norm_type=2.0)
    optimizer.step()
    with torch.no_grad():
      model.logit_scale.clamp_(0, math.log(100))
    count[0] += 1
    losses.append(loss.item())  # CPU: synchronous anyway

  step()
  first = time.perf_counter() - t0
  times = _time_steps(step, args.warmup, args.steps)
  return dict(
      precision='amp_bf16' if amp else 'float32',
      step_s_median=statistics.median(times), step_s_min=min(times),
      params=sum(p.numel() for p in model.parameters()),
      time_to_first_step_s=first, loss=losses[-1],
      device=f'cpu ({torch.get_num_threads()} threads)',
      versions={'torch': torch.__version__,
                'open_clip': open_clip.__version__,
                'timm': timm.__version__},
      detail={'model_class': type(model).__name__, 'vision': vision})


def _import_big_vision(directory: str):
  """Imports big_vision from a checkout; a stand-in tensorflow.io.gfile
  when tensorflow is missing (big_vision.utils imports it for file I/O
  only). Returns (two_towers, bv_optax, note)."""
  if not directory or not os.path.isdir(
      os.path.join(directory, 'big_vision', 'models')):
    raise NotInstalled(f'no big_vision checkout at {directory!r}')
  sys.path.insert(0, os.path.abspath(directory))
  note = 'tensorflow installed'
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    import types  # pylint: disable=g-import-not-at-top
    # flax.io picks tensorflow's gfile when it finds tensorflow: import it
    # first, so that it keeps its own file I/O.
    # pylint: disable=g-import-not-at-top,unused-import
    import flax.io
    import flax.training.checkpoints
    # pylint: enable=g-import-not-at-top,unused-import

    def unavailable(*_, **__):
      raise RuntimeError('tensorflow is not installed: this stand-in gfile '
                         'does no file I/O (pip install tensorflow-cpu)')
    tf = types.ModuleType('tensorflow')
    tf_io = types.ModuleType('tensorflow.io')
    gfile = types.ModuleType('tensorflow.io.gfile')
    gfile.__getattr__ = lambda name: unavailable
    tf.io, tf_io.gfile = tf_io, gfile
    sys.modules.update({'tensorflow': tf, 'tensorflow.io': tf_io,
                        'tensorflow.io.gfile': gfile})
    note = 'tensorflow not installed: stand-in tensorflow.io.gfile (unused)'
  try:
    # pylint: disable=g-import-not-at-top
    from big_vision import optax as bv_optax
    from big_vision.models.proj.image_text import two_towers
    # two_towers imports its towers while tracing: import them now.
    # pylint: disable=unused-import
    from big_vision.models import vit
    from big_vision.models.proj.image_text import text_transformer
  except ImportError as e:
    raise NotInstalled(f'big_vision at {directory} does not import: {e}'
                       ) from e
  return two_towers, bv_optax, note


def _git_commit(directory: str) -> str:
  try:
    return subprocess.run(['git', '-C', directory, 'rev-parse', 'HEAD'],
                          capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    path = os.path.join(directory, 'COMMIT')  # left by an archive export
    return open(path).read().strip() if os.path.exists(path) else 'unknown'


def _big_vision_step(args, spec) -> dict:
  """big_vision's model and compiled update function (see the module doc):
  {'step': runs one step, waited for, and returns its measurements; 't0':
  when the model was built; 'cost', 'memory': XLA's analyses of the step;
  'note'; 'params'}."""
  two_towers, bv_optax, note = _import_big_vision(args.big_vision_dir)
  # pylint: disable=g-import-not-at-top
  import functools
  import flax
  import jax
  import jax.numpy as jnp
  import ml_collections
  import optax
  # pylint: enable=g-import-not-at-top
  im, tx, e = spec['image'], spec['text'], spec['embed_dim']
  opt = OPT_BY_MODEL[args.model]
  model = two_towers.Model(
      image=dict(variant=None, patch_size=(spec['patch'],) * 2,
                 width=im['width'], depth=im['depth'], mlp_dim=im['mlp'],
                 num_heads=im['heads'], pool_type='map', posemb='learn',
                 head_zeroinit=False,
                 dtype_mm='bfloat16' if args.dtype == 'bfloat16'
                 else 'float32'),
      text=dict(variant=None, vocab_size=tx['vocab'], width=tx['width'],
                depth=tx['depth'], mlp_dim=tx['mlp'], num_heads=tx['heads'],
                pool_type='last'),
      out_dim=(e, e), temperature_init=TEMPERATURE_INIT, bias_init=BIAS_INIT)
  config = ml_collections.ConfigDict(dict(
      optax_name='scale_by_adam',
      optax=dict(b1=opt['b1'], b2=opt['b2'], eps=opt['eps']),
      lr=opt['lr'],
      # big_vision's wd is decoupled and not scaled by lr: lr * wd is the
      # same update as optax.adamw's (and torch's) weight_decay.
      wd=opt['lr'] * opt['weight_decay'],
      grad_clip_norm=opt['clip_norm'],
      # (its cosine decays to 0, not to lr * final_fraction)
      schedule=dict(decay_type='cosine', warmup_steps=opt['warmup_steps'])))
  images_np, text_np = synthetic_inputs(spec, args.batch)
  images, texts = jnp.asarray(images_np), jnp.asarray(text_np)

  t0 = time.perf_counter()
  rng = jax.random.PRNGKey(0)
  init = lambda key: model.init(key, images, texts)['params']
  params_shape = jax.eval_shape(init, rng)
  tx_fn, _ = bv_optax.make(config, params_shape, sched_kw=dict(
      total_steps=opt['total_steps'], batch_size=args.batch,
      data_size=None))
  params = jax.jit(init)(rng)
  opt = jax.jit(tx_fn.init)(params)
  train_state = {'params': params, 'opt': opt}
  del params, opt

  @functools.partial(jax.jit, donate_argnums=(0,))
  def update_fn(train_state, rng, images, texts):
    step_count = bv_optax.get_count(train_state['opt'], jittable=True)
    rng = jax.random.fold_in(rng, step_count)
    _, rng_model = jax.random.split(rng, 2)

    def loss_fn(params):
      zimg, ztxt, extras = model.apply(
          {'params': params}, images, texts, train=True,
          rngs={'dropout': rng_model})
      logits = jnp.dot(zimg, ztxt.T) * extras['t'] + extras['b']
      eye = jnp.eye(zimg.shape[0])
      loglik = jax.nn.log_sigmoid((2 * eye - 1) * logits)
      return jnp.mean(-jnp.sum(loglik, axis=-1))

    params, opt = train_state['params'], train_state['opt']
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx_fn.update(grads, opt, params)
    params = optax.apply_updates(params, updates)
    l2 = lambda tree: jnp.sqrt(sum(jnp.sum(x * x)
                                   for x in jax.tree.leaves(tree)))
    measurements = {'training_loss': loss, 'l2_grads': l2(grads),
                    'l2_params': l2(params), 'l2_updates': l2(updates)}
    return {'params': params, 'opt': opt}, measurements

  # Compiled ahead of time, as ours: its cost analysis is the work XLA
  # sees in the step (FLOPs comparable with ours), then run as is.
  compiled = update_fn.lower(train_state, rng, images, texts).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  params = sum(x.size for x in jax.tree.leaves(train_state['params']))
  state = {'train': train_state}

  def step():
    state['train'], out = compiled(state['train'], rng, images, texts)
    return jax.block_until_ready(out)

  return {'step': step, 't0': t0, 'cost': cost, 'memory': memory,
          'note': note, 'params': params,
          'versions': {'jax': jax.__version__, 'flax': flax.__version__,
                       'big_vision': _git_commit(args.big_vision_dir)}}


def child_big_vision(args, spec) -> dict:
  # pylint: disable-next=g-import-not-at-top
  import jax
  bv = _big_vision_step(args, spec)
  out = {}

  def step():
    out.update(bv['step']())

  step()
  first = time.perf_counter() - bv['t0']
  times = _time_steps(step, args.warmup, args.steps)
  cost, memory = bv['cost'], bv['memory']
  return dict(
      precision=('float32' if args.dtype == 'float32'
                 else 'bfloat16 (image matmuls)'),
      step_s_median=statistics.median(times), step_s_min=min(times),
      params=bv['params'], time_to_first_step_s=first,
      loss=float(out['training_loss']),
      device=f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      versions=bv['versions'],
      detail={'note': bv['note'],
              'xla_flops_per_step': float((cost or {}).get('flops', 'nan')),
              'temp_memory_mib': (memory.temp_size_in_bytes / 2 ** 20
                                  if memory is not None else None)})


def child_pair(args, spec) -> dict:
  """multimodal and big_vision in one process, their steps alternating.

  Both are JAX: one process can hold both steps, so every round times one
  step of each right after the other (which goes first alternates), and a
  machine's load drifts over both alike, which separate children one after
  another cannot ensure. The paired ratio is the median over rounds of our
  step / big_vision's step of the same round.
  """
  train_step = _import_train_step()
  import jax  # pylint: disable=g-import-not-at-top
  _check_multimodal_model(train_step, args, spec)
  theirs = _big_vision_step(args, spec)  # first: fails fast if missing
  ours = train_step.compiled_step(args.model, args.batch, args.dtype)
  # The first calls (and --warmup more) untimed; which goes first
  # alternates every round.
  times, outputs = train_step.time_round_robin(
      {'multimodal': ours['step'], 'big_vision': theirs['step']}, args.steps,
      untimed=1 + args.warmup, rotate=True)
  return dict(
      precision=args.dtype,
      step_s=times,
      loss={'multimodal': float(outputs['multimodal']['loss']),
            'big_vision': float(outputs['big_vision']['training_loss'])},
      step_s_median={k: statistics.median(v) for k, v in times.items()},
      step_s_min={k: min(v) for k, v in times.items()},
      paired_ratio_median=train_step.paired_ratio(times['multimodal'],
                                                  times['big_vision']),
      params={'multimodal': ours['params'], 'big_vision': theirs['params']},
      device=f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      versions=theirs['versions'])


CHILDREN = {'multimodal': child_multimodal, 'open_clip': child_open_clip,
            'big_vision': child_big_vision, 'pair': child_pair}


def child_main(args) -> int:
  result = dict(framework=args.child, model=args.model, batch=args.batch,
                dtype=args.dtype, steps=args.steps,
                threads=dict(cpu_count=os.cpu_count(),
                             ld_preload=os.environ.get('LD_PRELOAD', '')),
                python=sys.executable)
  code = 0
  try:
    before = machine_probe()
    result.update(CHILDREN[args.child](args, SPECS[args.model]),
                  status='ok', probe_gflops=[before, machine_probe()])
  except NotInstalled as e:
    result.update(status='not installed', error=str(e),
                  install=INSTALL[args.child])
  except Exception as e:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    result.update(status='error', error=f'{type(e).__name__}: {e}')
    code = 1
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=2)
  return code


################################################################################
# Parent.


def child_env(allocator: str) -> dict:
  """One environment for every child: the allocator preloaded (or not)."""
  env = dict(os.environ)
  preload = [p for p in env.get('LD_PRELOAD', '').split(':')
             if p and 'tcmalloc' not in p]
  if allocator == 'tcmalloc':
    if not os.path.exists(TCMALLOC):
      raise SystemExit(f'--allocator tcmalloc: {TCMALLOC} is missing '
                       '(apt-get install libtcmalloc-minimal4)')
    preload.insert(0, TCMALLOC)
  if preload:
    env['LD_PRELOAD'] = ':'.join(preload)
  else:
    env.pop('LD_PRELOAD', None)
  return env


def run_child(args, framework: str, dtype: str, env: dict) -> dict:
  python = args.torch_python if framework == 'open_clip' else sys.executable
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'result.json')
    cmd = [python, os.path.abspath(__file__), '--child', framework,
           '--model', args.model, '--batch', str(args.batch),
           '--steps', str(args.steps), '--warmup', str(args.warmup),
           '--dtype', dtype, '--out', out]
    if framework in ('big_vision', 'pair'):
      cmd += ['--big_vision_dir', args.big_vision_dir or '']
    t = time.perf_counter()
    try:
      proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=args.child_timeout)
    except subprocess.TimeoutExpired:
      return dict(framework=framework, dtype=dtype, status='error',
                  error=f'timed out after {args.child_timeout} s')
    except OSError as e:  # e.g. --torch_python does not exist
      return dict(framework=framework, dtype=dtype, status='not installed',
                  error=f'{python}: {e}', install=INSTALL[framework])
    wall = time.perf_counter() - t
    if os.path.exists(out):
      with open(out) as f:
        result = json.load(f)
    else:
      tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
      result = dict(framework=framework, dtype=dtype, status='error',
                    error=f'exit {proc.returncode}: ' + ' | '.join(tail))
    if result.get('status') == 'error' and proc.stderr:
      result['stderr_tail'] = proc.stderr[-3000:]
    result['child_wall_s'] = wall
    return result


def aggregate(runs: list[dict], batch: int) -> list[dict]:
  """One row per (framework, dtype): median of medians, min of mins."""
  rows = {}
  for r in runs:
    key = (r['framework'], r['dtype'])
    row = rows.setdefault(key, dict(framework=r['framework'],
                                    dtype=r['dtype'], runs=[]))
    row['runs'].append(r)
  out = []
  for row in rows.values():
    ok = [r for r in row.pop('runs') if r.get('status') == 'ok']
    if not ok:
      continue
    median = statistics.median(r['step_s_median'] for r in ok)
    row.update(
        status='ok', rounds=len(ok), precision=ok[0]['precision'],
        step_s_median=median, step_s_min=min(r['step_s_min'] for r in ok),
        examples_per_s=batch / median, params=ok[0]['params'],
        time_to_first_step_s=statistics.median(
            r['time_to_first_step_s'] for r in ok),
        probe_gflops=min(min(r['probe_gflops']) for r in ok),
        loss=ok[-1]['loss'], versions=ok[0].get('versions', {}))
    out.append(row)
  ours = {r['dtype']: r for r in out if r['framework'] == 'multimodal'}
  for row in out:
    base = ours.get(row['dtype'])
    row['step_vs_ours'] = (row['step_s_median'] / base['step_s_median']
                           if base else None)
    row['first_step_vs_ours'] = (
        row['time_to_first_step_s'] / base['time_to_first_step_s']
        if base else None)
  return out


def format_table(rows: list[dict]) -> str:
  head = ('framework', 'precision', 'step median', 'step min', 'examples/s',
          'params', 'first step', 'step vs ours', 'first vs ours',
          'probe')
  lines = [head]
  ratio = lambda x: '-' if x is None else f'{x:.2f}x'
  count = lambda n: f'{n / 1e6:.2f}M' if n >= 1e6 else f'{n:,}'
  for r in rows:
    lines.append((r['framework'], r['precision'],
                  f'{r["step_s_median"]:.3f} s', f'{r["step_s_min"]:.3f} s',
                  f'{r["examples_per_s"]:.2f}', count(r['params']),
                  f'{r["time_to_first_step_s"]:.1f} s',
                  ratio(r['step_vs_ours']), ratio(r['first_step_vs_ours']),
                  f'{r["probe_gflops"]:.0f} GFLOP/s'))
  widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
  fmt = lambda l: '  '.join(c.ljust(w) for c, w in zip(l, widths)).rstrip()
  return '\n'.join([fmt(lines[0]), fmt(['-' * w for w in widths])]
                   + [fmt(l) for l in lines[1:]])


def param_check(rows: list[dict], expected: int, tolerance: float) -> dict:
  """Each framework's parameter count against ours (or the analytic one)."""
  counts = {}
  for r in rows:
    counts.setdefault(r['framework'], r['params'])
  base = counts.get('multimodal', expected)
  diffs = {k: (v - base) / base for k, v in counts.items()}
  return dict(counts=counts, analytic=expected, relative_to_ours=diffs,
              matched=all(abs(d) <= tolerance for d in diffs.values()),
              tolerance=tolerance)


def parent_main(args) -> dict:
  frameworks = [f.strip() for f in args.frameworks.split(',') if f.strip()]
  unknown = set(frameworks) - set(FRAMEWORKS)
  if unknown:
    raise SystemExit(f'--frameworks: unknown {sorted(unknown)}; choose from '
                     f'{",".join(FRAMEWORKS)}')
  dtypes = (['float32', 'bfloat16'] if args.dtype == 'both'
            else [args.dtype])
  env = child_env(args.allocator)
  spec = SPECS[args.model]
  print(f'peers: --model {args.model} --batch {args.batch} --steps '
        f'{args.steps} --warmup {args.warmup} --rounds {args.rounds}; '
        f'allocator {args.allocator}; {os.cpu_count()} CPUs; '
        f'XLA_FLAGS={env.get("XLA_FLAGS", "")!r}', flush=True)
  runs, skipped = [], {}
  for rnd in range(args.rounds):
    for dtype in dtypes:
      for framework in frameworks:
        if framework in skipped:
          continue
        print(f'round {rnd + 1}/{args.rounds}: {framework} {dtype} ...',
              end=' ', flush=True)
        r = run_child(args, framework, dtype, env)
        r.setdefault('framework', framework)
        r.setdefault('dtype', dtype)
        r['round'] = rnd + 1
        runs.append(r)
        if r['status'] == 'ok':
          print(f'{r["step_s_median"]:.3f} s/step, first step '
                f'{r["time_to_first_step_s"]:.1f} s (child '
                f'{r["child_wall_s"]:.0f} s, probe '
                f'{min(r["probe_gflops"]):.0f} GFLOP/s)', flush=True)
        elif r['status'] == 'not installed':
          skipped[framework] = (f'not installed ({r["error"]}); install: '
                                f'{r["install"]}')
          print('not installed', flush=True)
        else:
          print(f'error: {r["error"]}', flush=True)
          if r.get('stderr_tail'):
            print(r['stderr_tail'], file=sys.stderr)
  rows = aggregate(runs, args.batch)
  print()
  print(format_table(rows) if rows else '(no framework ran)')
  if rows:
    print('probe: the lowest GFLOP/s of one NumPy float32 1024^3 matmul, '
          'run in every child before and after its steps (a low figure: '
          'the machine was busy then; compare only rows with similar '
          'probes)')
  for framework, why in skipped.items():
    print(f'{framework}: {why}')
  for r in runs:
    if r['status'] == 'error':
      print(f'{r["framework"]} {r["dtype"]} round {r["round"]}: '
            f'{r["error"]}')
  expected = spec_param_count(spec)
  check = param_check(rows, expected, args.param_tolerance)
  print('parameters: ' + ', '.join(
      f'{k} {v:,} ({check["relative_to_ours"][k]:+.4%})'
      for k, v in check['counts'].items())
        + f'; analytic {expected:,}; '
        + ('matched' if check['matched'] else
           f'MISMATCH beyond {args.param_tolerance:.0%}'))
  for r in rows:
    print(f'{r["framework"]} {r["precision"]}: loss {r["loss"]:.4f}; '
          + ', '.join(f'{k} {v}' for k, v in r['versions'].items()))
  notes = {r['framework']: r['detail']['note'] for r in runs
           if r.get('status') == 'ok' and 'note' in r.get('detail', {})}
  for framework, note in notes.items():
    print(f'{framework}: {note}')
  # The JAX steps' work as XLA counts it (same model: should be close).
  flops = {}
  for r in runs:
    if r.get('status') == 'ok' and 'xla_flops_per_step' in r['detail']:
      flops.setdefault(f'{r["framework"]} {r["dtype"]}',
                       (r['detail']['xla_flops_per_step'],
                        r['detail'].get('temp_memory_mib')))
  if flops:
    print('XLA cost analysis per step: ' + ', '.join(
        f'{k} {f:.4g} FLOPs, {m:,.0f} MiB temp' for k, (f, m)
        in flops.items()))
  result = dict(
      model=args.model, spec=spec, batch=args.batch, steps=args.steps,
      warmup=args.warmup, rounds=args.rounds, allocator=args.allocator,
      cpu_count=os.cpu_count(), xla_flags=env.get('XLA_FLAGS', ''),
      optimizer=OPT_BY_MODEL[args.model], rows=rows, params=check,
      skipped=skipped, runs=runs)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
  return result


def pair_main(args) -> dict:
  """--pair: one child_pair per round and dtype; a table of both steps and
  their paired ratio."""
  dtypes = (['float32', 'bfloat16'] if args.dtype == 'both'
            else [args.dtype])
  env = child_env(args.allocator)
  print(f'peers --pair: --model {args.model} --batch {args.batch} --steps '
        f'{args.steps} --warmup {args.warmup} --rounds {args.rounds}; '
        f'allocator {args.allocator}; {os.cpu_count()} CPUs', flush=True)
  runs = []
  for rnd in range(args.rounds):
    for dtype in dtypes:
      print(f'round {rnd + 1}/{args.rounds}: multimodal + big_vision '
            f'{dtype} ...', end=' ', flush=True)
      r = run_child(args, 'pair', dtype, env)
      r.update(round=rnd + 1, dtype=dtype)
      runs.append(r)
      if r['status'] != 'ok':
        print(f'{r["status"]}: {r["error"]}', flush=True)
        if r.get('install'):
          print(f'install: {r["install"]}')
        if r.get('stderr_tail'):
          print(r['stderr_tail'], file=sys.stderr)
        continue
      print(f'ours / big_vision {r["paired_ratio_median"]:.3f}x (child '
            f'{r["child_wall_s"]:.0f} s)', flush=True)
  lines = ['| precision | round | multimodal median (min) | big_vision median '
           '(min) | ours / big_vision, paired median | probe |',
           '| --- | --- | --- | --- | --- | --- |']
  for r in runs:
    if r['status'] != 'ok':
      continue
    med, low = r['step_s_median'], r['step_s_min']
    lines.append(
        f"| {r['dtype']} | {r['round']} | {med['multimodal']:.3f} s "
        f"({low['multimodal']:.3f}) | {med['big_vision']:.3f} s "
        f"({low['big_vision']:.3f}) | {r['paired_ratio_median']:.3f}x | "
        f"{min(r['probe_gflops']):.0f} GFLOP/s |")
  print()
  print('\n'.join(lines))
  result = dict(model=args.model, batch=args.batch, steps=args.steps,
                warmup=args.warmup, rounds=args.rounds,
                allocator=args.allocator, cpu_count=os.cpu_count(),
                runs=runs)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='siglip_b32', choices=sorted(SPECS))
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--steps', type=int, default=3,
                      help='timed steps per child')
  parser.add_argument('--warmup', type=int, default=1,
                      help='untimed steps after the first')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16', 'both'))
  parser.add_argument('--frameworks', default=','.join(FRAMEWORKS),
                      help='comma-separated subset of ' + ','.join(FRAMEWORKS))
  parser.add_argument('--torch_python', default=sys.executable,
                      help='interpreter with torch + open_clip (default: '
                      'this one)')
  parser.add_argument('--big_vision_dir',
                      default=os.environ.get('BIG_VISION_DIR', ''),
                      help='big_vision source checkout (default '
                      '$BIG_VISION_DIR)')
  parser.add_argument('--allocator', default=(
      'tcmalloc' if os.path.exists(TCMALLOC) else 'glibc'),
                      choices=('tcmalloc', 'glibc'))
  parser.add_argument('--child_timeout', type=int, default=3600,
                      help='seconds one child may take')
  parser.add_argument('--param_tolerance', type=float, default=0.02)
  parser.add_argument('--json', default=None, help='write the results here')
  parser.add_argument('--pair', action='store_true',
                      help='instead of one child per framework: multimodal '
                      'and big_vision in one child, their steps alternating '
                      '(--steps per round; child_pair)')
  parser.add_argument('--child', choices=FRAMEWORKS + ('pair',),
                      help=argparse.SUPPRESS)
  parser.add_argument('--out', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    if args.dtype == 'both' or not args.out:
      parser.error('--child runs one --dtype and needs --out')
    sys.exit(child_main(args))
  return pair_main(args) if args.pair else parent_main(args)


if __name__ == '__main__':
  main()
