"""`Rngs`: nnx.Rngs whose key draws cost the same inside a trace as outside.

Each draw from an ``nnx.RngStream`` advances its counter with
``count[...] += 1``. Flax 0.12's ``Variable.__setitem__`` then compares the
new value's ``sharding`` with the old one's; inside a trace (jit, eval_shape)
both are tracers, whose ``sharding`` raises an AttributeError after JAX has
searched the whole trace so far for the error message's origin. So every
draw costs time proportional to the trace's length, and building a model
under a trace is quadratic in its number of parameters: 3.3-4.3 s per trace
of ViT-B/32 SigLIP's 410 draws on the 2-core CPU, against 0.6-0.8 s when
the counter is replaced whole (benchmarks/README.md). A run traces its model
three or four times before the first step (the config check, the state's
shapes, the jitted init).

The streams here replace the counter whole instead: the same keys in the
same order, the same programs (tests/test_models.py). Every model the
library builds gets its keys from here; `nnx.Rngs` works too, only slower
to trace.
"""
from __future__ import annotations

import jax
from flax import nnx


class RngStream(nnx.RngStream):
  """nnx.RngStream whose draw sets its counter whole (no sharding probe)."""

  def __call__(self) -> jax.Array:
    self.count._check_can_update()  # pylint: disable=protected-access
    key = jax.random.fold_in(self.key[...], self.count[...])
    self.count.set_value(self.count[...] + 1)
    return key


class Rngs(nnx.Rngs):
  """nnx.Rngs (same arguments, same keys) made of the streams above."""

  def __init__(self, default=None, **rngs):
    super().__init__(default, **rngs)
    for tag, stream in list(self.items()):
      setattr(self, tag, RngStream(stream.key.get_value(), tag=tag))
