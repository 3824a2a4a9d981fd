"""Process set-up that must happen before JAX starts: the memory allocator,
XLA flags and the persistent compilation cache.

`python -m multimodal.train` calls `prepare(config)` first thing in main:

* tcmalloc: glibc malloc costs a CPU host seconds per large training step in
  page faults (benchmarks/README.md measures it); when
  libtcmalloc_minimal.so.4 is installed (Debian/Ubuntu:
  `apt-get install libtcmalloc-minimal4`) and not yet loaded, the process
  re-executes itself once with it in LD_PRELOAD. The allocator has to be in
  place before Python starts, hence the re-exec. MULTIMODAL_TCMALLOC=0 turns
  this off; MULTIMODAL_TCMALLOC=/path/to/lib.so picks another library.
* config.xla_flags: extra XLA_FLAGS (e.g. '--xla_cpu_use_xnnpack=true'),
  which XLA reads once, when the backend starts.
* config.compilation_cache_dir: JAX's persistent compilation cache, so a
  rerun (a resumed job, the same experiment with another seed) loads the
  compiled step instead of compiling it again. 'auto' (the default) is
  $XDG_CACHE_HOME/multimodal/jax (~/.cache/multimodal/jax); '' turns it off.
"""
from __future__ import annotations

import os
import sys

TCMALLOC_PATHS = (
    '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4',
    '/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4',
    '/usr/lib64/libtcmalloc_minimal.so.4',
    '/usr/lib/libtcmalloc_minimal.so.4',
)
# Below JAX's default of 1 s: small programs (eval helpers, initialisers) are
# worth caching too, a resumed run compiles each of them again otherwise.
MIN_COMPILE_SECS = 0.5
_ENV = 'MULTIMODAL_TCMALLOC'
_REEXECED = 'MULTIMODAL_TCMALLOC_REEXEC'


def tcmalloc_library() -> str | None:
  """The tcmalloc library to preload, or None (absent, or turned off)."""
  choice = os.environ.get(_ENV, '')
  if choice == '0':
    return None
  if choice and choice != '1':
    if not os.path.exists(choice):
      raise FileNotFoundError(f'{_ENV}={choice}: no such file; give the path '
                              'of libtcmalloc_minimal.so.4, or 0 to turn the '
                              'preload off.')
    return choice
  return next((p for p in TCMALLOC_PATHS if os.path.exists(p)), None)


# Allocators a process may have preloaded, by the name their shared object
# carries in /proc/self/maps.
ALLOCATORS = ('tcmalloc', 'jemalloc', 'mimalloc')


def allocator(maps: str | None = None) -> str:
  """The malloc this process runs: 'tcmalloc', 'jemalloc' or 'mimalloc'
  when one is loaded (read from `maps`, default /proc/self/maps), else
  'glibc malloc' ('system malloc' where there is no /proc)."""
  if maps is None:
    try:
      with open('/proc/self/maps') as f:
        maps = f.read()
    except OSError:  # not Linux
      return 'system malloc'
  return next((name for name in ALLOCATORS if f'lib{name}' in maps),
              'glibc malloc')


def preload_tcmalloc(module: str, argv: list[str]) -> None:
  """Re-executes `python -m module argv...` with tcmalloc preloaded, once.

  Returns without doing anything when an allocator other than glibc's is
  already loaded (tcmalloc, or one the user preloaded: their choice), when
  tcmalloc is not installed or is turned off, or when this process is the
  re-executed one. The process keeps its PID (execv), so launchers' signals
  still reach it.
  """
  if os.environ.get(_REEXECED) or allocator() != 'glibc malloc':
    return
  library = tcmalloc_library()
  if library is None:
    return
  env = dict(os.environ)
  env['LD_PRELOAD'] = ':'.join(
      p for p in (library, env.get('LD_PRELOAD', '')) if p)
  env[_REEXECED] = '1'
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, '-m', module, *argv[1:]], env)


def cache_dir(setting: str | None) -> str | None:
  """The compilation cache directory for config.compilation_cache_dir."""
  if not setting:
    return None
  if setting == 'auto':
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
        os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'multimodal', 'jax')
  return os.path.abspath(os.path.expanduser(setting))


def set_xla_flags(flags: str | None) -> None:
  """Appends `flags` to XLA_FLAGS; must run before the JAX backend starts."""
  if not flags:
    return
  import jax  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=protected-access
  if jax._src.xla_bridge.backends_are_initialized():
    raise RuntimeError(f'config.xla_flags={flags!r} came after JAX started '
                       'its backend; set XLA_FLAGS in the environment '
                       'instead.')
  current = os.environ.get('XLA_FLAGS', '')
  if flags not in current:
    os.environ['XLA_FLAGS'] = f'{current} {flags}'.strip()


def enable_compilation_cache(
    setting: str | None,
    min_compile_secs: float = MIN_COMPILE_SECS) -> str | None:
  """Turns JAX's persistent compilation cache on; returns its directory.

  Programs that compile in less than `min_compile_secs` are not written (0
  caches every one; eager operations compile many tiny programs).
  """
  directory = cache_dir(setting)
  if directory is None:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    float(min_compile_secs))
  return directory


def prepare(config, module: str = 'multimodal.train') -> None:
  """All of the above, from an experiment config; first thing in main."""
  preload_tcmalloc(module, sys.argv)
  set_xla_flags(config.get('xla_flags', ''))
  enable_compilation_cache(
      config.get('compilation_cache_dir', 'auto'),
      config.get('compilation_cache_min_compile_secs', MIN_COMPILE_SECS))
