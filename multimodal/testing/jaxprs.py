"""What a traced function's program contains, for tests of numerics paths."""
from __future__ import annotations

import jax
from jax.extend import core as jex_core


def equations(jaxpr) -> list:
  """Every equation of a jaxpr (jax.extend.core.Jaxpr), those of its
  sub-jaxprs (custom VJPs, conds, scans, jits) included, in order."""
  found = []
  for eqn in jaxpr.eqns:
    found.append(eqn)
    for sub in jex_core.jaxprs_in_params(eqn.params):
      found.extend(equations(sub))
  return found


def dots(fn, *args) -> list[tuple[tuple[str, ...], str]]:
  """(operand dtypes, preferred_element_type) of every dot_general in the
  jaxpr of fn(*args), sub-jaxprs (custom VJPs, scans, jits) included."""
  return [(tuple(str(v.aval.dtype) for v in eqn.invars),
           str(eqn.params['preferred_element_type']))
          for eqn in equations(jax.make_jaxpr(fn)(*args).jaxpr)
          if eqn.primitive.name == 'dot_general']
