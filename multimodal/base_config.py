"""The library's base experiment config: runtime, mesh, sharding,
distributed start-up, data source, input pipeline and optimizer defaults.

Experiment files start from `base()` and set their task, data, fields,
model, evaluators and schedule; every key an experiment may override from
the command line exists here or in the experiment file.
"""
from __future__ import annotations

import ml_collections as mlc

from multimodal import distributed
from multimodal import runtime

# What a step with a non-finite loss does to the run (config.on_nonfinite).
NONFINITE_POLICIES = ('stop', 'skip')
# How a fresh run creates its train state (config.init_mode; train.init_state).
INIT_MODES = ('jit', 'eager')


def base() -> mlc.ConfigDict:
  """A ConfigDict holding every framework-level key (see the comments)."""
  c = mlc.ConfigDict()
  # Modules imported before anything is built, so their @registry.register
  # lines run: your own fusions, encoders, sources, field kinds, tasks and
  # evaluators, e.g. ('my_lab.fusions',).
  c.imports = ()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 64
  c.eval_batch_size = 64
  c.log_every = 25
  # Steps between evaluations (0: only the final one) and between
  # checkpoints (>= 1: the last step and a preemption always save, so a
  # large value saves rarely). multimodal/config_checks.py checks these and
  # every other key before a run starts.
  c.eval_every = 0
  c.checkpoint_every = 500
  c.checkpoint_keep = 2
  # The checkpoint step a resumed run restores; None: the newest complete
  # one (damaged newer steps are skipped with a warning and moved aside).
  # A step number rolls back to it and moves the newer steps aside (see
  # multimodal/checkpoint.py); rerunning the same command later resumes
  # from the newest step again.
  c.restore_step = mlc.FieldReference(None, field_type=int)
  # How a fresh run creates its parameters and optimizer state: 'jit' (one
  # compiled program that creates each array where the sharding rules put
  # it) or 'eager' (op by op, nothing to compile: ViT-B/32 SigLIP's init
  # takes 8.8 s instead of 18.1 s on 2 CPU cores; one process only, and the
  # whole state is built on one device before it is placed). Values agree
  # to float32 rounding (benchmarks/README.md, fast-path section).
  c.init_mode = 'jit'
  # (first, last) steps to trace with the JAX profiler into WORKDIR/profile
  # (open with TensorBoard's profile plugin or Perfetto); () traces nothing.
  c.profile_steps = ()
  # Process set-up before JAX starts (multimodal/runtime.py): extra XLA_FLAGS,
  # e.g. '--xla_cpu_use_xnnpack=true'; JAX's persistent compilation cache
  # ('auto': ~/.cache/multimodal/jax; '' turns it off); programs that
  # compile faster than compilation_cache_min_compile_secs are not cached.
  c.xla_flags = ''
  c.compilation_cache_dir = 'auto'
  c.compilation_cache_min_compile_secs = runtime.MIN_COMPILE_SECS
  # A step with a non-finite loss or gradient norm never updates the model.
  # 'stop': training stops (checked every log_every steps and before every
  # checkpoint, so the checkpoints stay good); 'skip': carry on, and stop
  # after max_nonfinite_in_a_row such steps in a row.
  c.on_nonfinite = 'stop'
  c.max_nonfinite_in_a_row = 10
  c.train_split = 'train'
  c.eval_split = 'test'
  # Mesh axis sizes (one may be -1); dcn_* split an axis across TPU slices
  # or hosts (see multimodal/mesh.py). stage > 1 pipelines the stacked
  # layers (scan_layers) of towers and decoders over that many stages.
  c.mesh = dict(stage=1, data=-1, fsdp=1, tensor=1, dcn_stage=1, dcn_data=1,
                dcn_fsdp=1, dcn_tensor=1)
  # Pipeline schedule (multimodal/models/pipeline_parallel.py), used when the mesh
  # has stages: each batch is cut into `microbatches`, and a device idles
  # (stages - 1) / (microbatches + stages - 1) of the step (the bubble).
  c.pipeline = dict(microbatches=4)
  # Which mesh axes each logical parameter/activation axis is split over: a
  # preset of multimodal/sharding.py (data_parallel, fsdp, fsdp_tensor) plus
  # (name, mesh_axes) overrides. E.g. FSDP over 8 devices:
  #   --config.mesh.data=1 --config.mesh.fsdp=-1 --config.sharding.rules=fsdp
  c.sharding = dict(rules='data_parallel', overrides=())
  # Multi-process start-up; all defaults detect the cluster (see
  # multimodal/distributed.py and launch/README.md).
  c.distributed = distributed.default_config()
  # The data source (multimodal/data/sources): `source` names a registered
  # format and the other keys are that format's (e.g. tfds: name, data_dir).
  c.dataset = dict(source='tfds', name='', data_dir=mlc.FieldReference(
      None, field_type=str))

  c.input = mlc.ConfigDict()
  # Output field -> record key (a key 'a/b' reads nested values), e.g.
  # dict(image='jpg', image_text='txt'); kinds: field -> field kind where the
  # name does not say it (multimodal/data/kinds).
  c.input.fields = {}
  c.input.kinds = {}
  c.input.tokenizer = mlc.FieldReference(None, field_type=str)
  c.input.max_text_len = 32
  c.input.image_size = 224
  c.input.image_channels = 3
  c.input.augment = None  # or dict(max_shift=, max_scale=, max_rotate=)
  c.input.num_frames = 96  # log-mel frames of 10 ms
  c.input.num_mels = 64
  # 'default', or 'whisper': Whisper's features for imported Whisper
  # encoders (then num_frames=3000, num_mels=80 or 128; multimodal/data/audio)
  c.input.audio_front_end = 'default'
  c.input.audio_augment = None  # see multimodal/data/audio.augment_features
  c.input.audio_cache_size = 0  # clips whose features stay in memory
  c.input.image_cache_size = 0  # decoded, resized images kept in memory
  # Keep every record read in memory (read and deserialised once): for
  # datasets that fit in RAM (multimodal/data/pipeline.py).
  c.input.cache_raw = False
  # Video fields (multimodal/data/kinds/video.py): frames per clip, every
  # stride-th frame, a 'random' (training) or 'center' window; frames of
  # video_size (None: image_size) and video_channels (None: image_channels);
  # frame_order 'original', 'reversed' or 'shuffled' (train and eval).
  c.input.video_frames = mlc.FieldReference(None, field_type=int)
  c.input.video_stride = 1
  c.input.video_offset = 'random'
  c.input.video_size = mlc.FieldReference(None, field_type=int)
  c.input.video_channels = mlc.FieldReference(None, field_type=int)
  c.input.frame_order = 'original'
  # Records that cannot be used (corrupt image, missing file, empty
  # caption...): 'raise' names the first; 'skip' counts them per reason
  # (logged and written to metrics) and fails past max_skip_fraction.
  c.input.on_error = 'raise'
  c.input.max_skip_fraction = 0.01
  # Records checked before training starts (-1: all, 0: none).
  c.input.validate_records = -1
  c.input.num_threads = 2
  c.input.prefetch = 64
  c.input.num_workers = 0
  # Training batches placed on the devices ahead of their step.
  c.input.device_prefetch = 2

  # name: a registered optimizer (adamw, lion, sgd or your own; see
  # multimodal/optimizer.py), its own arguments beside the shared keys (b1,
  # b2: adamw's; mu_dtype='bfloat16' keeps adamw's first moment in bfloat16;
  # None: the optimizer's default). frozen: regexes of parameters that never
  # change (e.g. '^towers/image/' for a LiT-style locked tower); lr_mults:
  # ((regex, multiplier), ...). schedule: what follows the linear warmup,
  # 'cosine', 'linear' (both to lr * final_fraction), 'rsqrt', 'constant'.
  c.optimizer = dict(name='adamw', lr=1e-3, schedule='cosine',
                     b1=0.9, b2=0.95,
                     mu_dtype=mlc.FieldReference(None, field_type=str),
                     weight_decay=1e-4, warmup_steps=50, clip_norm=1.0,
                     final_fraction=0.01, frozen=(), lr_mults=())
  # Start from pretrained parameters (an export, workdir or checkpoint);
  # see multimodal/pretrained.py. Empty path: train from scratch.
  c.init_from = dict(path='', include=('.*',), exclude=(), rename=(),
                     resample_posemb=True, inflate='average')
  return c


def layer_options() -> dict:
  """Keys a transformer part's config (a tower's, the decoder's) lists so
  that the command line can set them (a locked config takes no new keys):

    remat        'none' | 'full' | 'dots' | 'dots_no_batch': what the
                 backward pass recomputes (models/transformer.REMAT_POLICIES).
    scan_layers  blocks stacked and run by nnx.scan (another parameter
                 layout; see models/transformer.Encoder).
    dtype        this part's compute dtype; None (unset) takes the model's
                 `dtype`, e.g. --config.model.towers.image.dtype=float32
                 keeps one tower in float32 under a bfloat16 model.

  Call it once per part: the dtype reference must not be shared.
  """
  return dict(remat='none', scan_layers=False,
              dtype=mlc.FieldReference(None, field_type=str))
