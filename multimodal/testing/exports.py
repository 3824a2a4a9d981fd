"""Exports of untrained models, for tests and benchmark smoke runs.

`untrained_export(config, out)` writes what `python -m multimodal.export`
writes for a run of `config` (same layout, same code path: it saves the
randomly initialised parameters as a workdir checkpoint and exports that),
without training, so a test gets an export of any architecture in seconds.
"""
from __future__ import annotations

import os

from flax import nnx
import jax
import numpy as np
import orbax.checkpoint as ocp

from multimodal import export as export_lib
from multimodal import registry
from multimodal.models import build_model
from multimodal.models import rng


def untrained_export(config, out: str) -> str:
  """Exports `config`'s model at its initialisation (seed config.seed).

  The workdir holding its one checkpoint (step 0) is `out` + '.workdir'.
  Returns the export directory `out` (which must not exist).
  """
  registry.import_modules(config.get('imports', ()))
  workdir = out + '.workdir'
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  model = build_model(config.model, rngs=rng.Rngs(config.seed))
  params = jax.tree.map(np.asarray,
                        nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  with ocp.StandardCheckpointer() as checkpointer:  # waits for the write
    checkpointer.save(os.path.join(workdir, 'checkpoints', '0', 'state'),
                      params)
  return export_lib.export(workdir, out)
