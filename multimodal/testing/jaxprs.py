"""What a traced function's program contains, for tests of numerics paths."""
from __future__ import annotations

import jax
from jax.extend import core as jex_core


def dots(fn, *args) -> list[tuple[tuple[str, ...], str]]:
  """(operand dtypes, preferred_element_type) of every dot_general in the
  jaxpr of fn(*args), sub-jaxprs (custom VJPs, scans, jits) included."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        found.append((tuple(str(v.aval.dtype) for v in eqn.invars),
                      str(eqn.params['preferred_element_type'])))
      for sub in jex_core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found
