"""Command-line config handling: clear errors for bad --config flags.

ml_collections reports an unknown `--config.key` as a KeyError deep inside
flag parsing; researchers mistype keys often, so we turn that (and bad values,
bad variants, missing files) into one line naming the flag and the fix.
"""
from __future__ import annotations

import sys

from absl import flags



def _explain(argv, exc: Exception) -> str:
  ctx = exc.__context__
  if isinstance(exc, AttributeError) and isinstance(ctx, KeyError):
    key, _, hint = str(ctx.args[0]).partition('\n')
    bad = [a for a in argv if a.startswith('--config.') and key.strip("'") in a]
    where = bad[0] if bad else '--config.*'
    return (f'Unknown config key {key} in {where}. {hint} '
            'The experiment file lists every key; new keys cannot be added '
            'from the command line.').strip()
  msg = str(exc)
  lines = [l for l in msg.splitlines() if l.strip()]
  if 'Error whilst parsing config file' in msg and lines:
    return f'{lines[0].split(":")[0]}: {lines[-1].strip()}'
  return msg


# What bad --config flags raise while parsed (or while a config flag is
# defined: ml_collections applies sys.argv's overrides to its default then).
FLAG_ERRORS = (flags.Error, AttributeError, KeyError, ValueError)


def exit_bad_flags(argv: list[str], exc: Exception):
  """Prints the one-line reason for FLAG_ERRORS `exc` and exits 2."""
  print(f'error: {_explain(argv, exc)}', file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl `flags_parser` for app.run that exits 2 with a one-line reason."""
  try:
    return flags.FLAGS(argv)
  except FLAG_ERRORS as e:
    exit_bad_flags(argv, e)
