"""Multi-process (multi-host) start-up on top of JAX's own runtime.

Scale-out uses JAX's multi-controller model: every host runs the same
program, and `jax.distributed.initialize` connects the processes through a
small coordination service that process 0 hosts. This module decides *how* to
call it, from the `config.distributed` block, in this order:

  1. explicit:  `coordinator_address` (plus `num_processes`, `process_id`) in
                the config, e.g. `--config.distributed.coordinator_address=...`;
  2. env:       MULTIMODAL_COORDINATOR / MULTIMODAL_NUM_PROCESSES /
                MULTIMODAL_PROCESS_ID, set by `launch/local.py` and
                `launch/k8s_jobset.yaml` (a config value wins over its
                environment variable, field by field);
  3. auto:      a cluster JAX knows how to read by itself (Slurm with more than
                one task, Open MPI with more than one rank, a Cloud TPU VM, a
                Kubernetes indexed Job); then we call
                `jax.distributed.initialize()` and let JAX fill everything in;
  4. single:    none of the above: one process, nothing to do.

The trainer calls `initialize(config.distributed)` before anything touches a
JAX device (JAX refuses to initialize the distributed runtime afterwards).

Failure behaviour (measured with jax 0.10.2 on CPU; the mechanism is the same
coordination service on GPU and TPU):
  * A process that fails *before* connecting leaves its peers waiting in
    `initialize` for at most `initialization_timeout` seconds; they then abort
    with "Terminating process because the JAX distributed service detected
    fatal errors ... DEADLINE_EXCEEDED ... RegisterTask".
  * A peer that dies *after* start-up: a collective in flight fails at once
    with a JaxRuntimeError ("Gloo AllGather failed ... Connection closed by
    peer" on CPU); a process that is not in a collective, or whose peer hangs
    rather than exits, is aborted by the coordination service within about
    `heartbeat_timeout` seconds with "Terminating process because the JAX
    distributed service detected fatal errors. This most likely indicates
    that another task died". If process 0 (the service host) dies, the others
    abort within a second or two. The abort is a C++ fatal error (SIGABRT,
    exit status 134): Python `finally` blocks and atexit hooks do not run, so
    durable state must come from periodic checkpoints, not from clean-up code.
  * An uncaught exception: with `fail_fast` (default) the process prints it
    and exits at once; peers' next collective fails and they exit too, in
    seconds. Without it, the process waits in JAX's shutdown barrier while
    its peers wait for it in a collective, for `shutdown_timeout` seconds.
  * A process that finishes normally waits up to `shutdown_timeout` seconds at
    exit for the others to finish too.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections as mlc
import numpy as np

logger = logging.getLogger(__name__)

# Environment variables of our own. We do not reuse JAX_COORDINATOR_ADDRESS
# etc. because JAX reads some of those implicitly; ours are only read here, so
# what a launcher sets is exactly what this module logs.
ENV_COORDINATOR = 'MULTIMODAL_COORDINATOR'
ENV_NUM_PROCESSES = 'MULTIMODAL_NUM_PROCESSES'
ENV_PROCESS_ID = 'MULTIMODAL_PROCESS_ID'

# JAX's own defaults (jax 0.10: 300 / 100 / 300 seconds). Repeated here so a
# config file shows them and `--config.distributed.*` can change them.
_DEFAULTS = dict(
    auto=True,
    coordinator_address=None,
    num_processes=None,
    process_id=None,
    local_device_ids=None,
    cluster_detection_method=None,
    initialization_timeout=300,
    heartbeat_timeout=100,
    shutdown_timeout=300,
    fail_fast=True,
)

# Set once `initialize` has run, whatever it decided, so a second call is a
# no-op rather than an error from JAX.
_mode: str | None = None


def default_config() -> mlc.ConfigDict:
  """The `config.distributed` block, with every field at its default.

  Fields (all overridable as `--config.distributed.FIELD=VALUE`):
    auto: let JAX detect a cluster (Slurm, Open MPI, Cloud TPU, Kubernetes
      indexed Job) when no coordinator is given. False forces a single
      process unless a coordinator is configured or in the environment.
    coordinator_address: "host:port" of process 0's coordination service.
      Falls back to $MULTIMODAL_COORDINATOR.
    num_processes: total number of processes. Falls back to
      $MULTIMODAL_NUM_PROCESSES.
    process_id: this process's rank, 0..num_processes-1. Falls back to
      $MULTIMODAL_PROCESS_ID.
    local_device_ids: restrict this process to these local accelerators, as
      "0,1" (GPU only; JAX ignores it on TPU). Unset: all local devices,
      except that JAX picks one GPU per process under Slurm/Open MPI when
      there is one task per GPU.
    cluster_detection_method: force one of JAX's detectors ("slurm", "ompi",
      "mpi4py", ...) instead of probing; "mpi4py" is never probed for.
    initialization_timeout: seconds to wait for all processes to connect.
    heartbeat_timeout: seconds without a heartbeat after which a process is
      declared dead and every other process is aborted.
    shutdown_timeout: seconds a finished process waits at exit for the rest.
    fail_fast: on an uncaught exception, print it and end the process at
      once (os._exit(1)) instead of a normal interpreter exit. A normal exit
      waits in JAX's shutdown barrier for the peers, which are themselves
      blocked in a collective waiting for this process, so the whole job
      would sit idle for shutdown_timeout. Only active with >1 process.
  """
  c = mlc.ConfigDict()
  c.auto = _DEFAULTS['auto']
  # FieldReference(None, field_type=...) so `--config.distributed.x=...` can
  # set a field whose default is None (ml_collections needs the type).
  c.coordinator_address = mlc.FieldReference(None, field_type=str)
  c.num_processes = mlc.FieldReference(None, field_type=int)
  c.process_id = mlc.FieldReference(None, field_type=int)
  c.local_device_ids = mlc.FieldReference(None, field_type=str)
  c.cluster_detection_method = mlc.FieldReference(None, field_type=str)
  c.initialization_timeout = _DEFAULTS['initialization_timeout']
  c.heartbeat_timeout = _DEFAULTS['heartbeat_timeout']
  c.shutdown_timeout = _DEFAULTS['shutdown_timeout']
  c.fail_fast = _DEFAULTS['fail_fast']
  return c


def _get(cfg: Any, name: str) -> Any:
  """Reads a field from a ConfigDict / dict / None, falling back to default.

  Tolerates configs written before a field existed, so old experiment files
  keep working.
  """
  if cfg is None:
    return _DEFAULTS[name]
  if isinstance(cfg, Mapping):
    return cfg.get(name, _DEFAULTS[name])
  return getattr(cfg, name, _DEFAULTS[name])


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, '').strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'${name}={value!r} is not an integer.') from None


def _device_ids(value: Any) -> list[int] | None:
  """"0,1" / 3 / (0, 1) / None -> list of ints or None."""
  if value is None or value == '':
    return None
  if isinstance(value, int):
    return [value]
  if isinstance(value, str):
    return [int(v) for v in value.replace(' ', '').split(',') if v]
  if isinstance(value, Sequence):
    return [int(v) for v in value]
  raise TypeError(f'local_device_ids must be "0,1", an int or a list; got '
                  f'{value!r}.')


def _int_env_above_one(name: str) -> bool:
  try:
    return int(os.environ.get(name, '1')) > 1
  except ValueError:
    return False


def _on_cloud_tpu_vm() -> bool:
  """True on a Cloud TPU VM with a usable multi-host TPU environment.

  JAX records at import whether TPU chips are attached; the GCE/GKE cluster
  classes then confirm that the worker list can be read (metadata server or
  TPU_WORKER_HOSTNAMES). These are private JAX modules, so any failure to
  import them means "not detected" rather than a crash.
  """
  try:
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  if not getattr(cloud_tpu_init, 'running_in_cloud_tpu_vm', False):
    return False
  for name in ('GkeTpuCluster', 'GceTpuCluster'):
    cls = getattr(clusters, name, None)
    try:
      if cls is not None and cls.is_env_present():
        return True
    except Exception:  # pylint: disable=broad-except
      logger.debug('TPU cluster probe %s failed', name, exc_info=True)
  return False


def detect_cluster() -> str | None:
  """Names the cluster environment JAX would bootstrap from, or None.

  Mirrors the order JAX probes in (`jax._src.clusters`: Open MPI, Slurm,
  Cloud TPU on GKE/GCE, Kubernetes), but is stricter so that we only start
  the distributed runtime when there is more than one process to connect:
  a one-task `salloc` shell or an interactive pod stays single-process.
  """
  # Open MPI (mpirun): JAX reads OMPI_MCA_orte_hnp_uri and the world size.
  if 'OMPI_MCA_orte_hnp_uri' in os.environ:
    if _int_env_above_one('OMPI_COMM_WORLD_SIZE'):
      return 'ompi'
    return None
  # Slurm (srun): JAX needs all five variables; SLURM_STEP_NODELIST is only
  # set inside an srun step, so the batch script itself is not detected.
  slurm_vars = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS',
                'SLURM_PROCID', 'SLURM_LOCALID')
  if all(v in os.environ for v in slurm_vars):
    if _int_env_above_one('SLURM_NTASKS'):
      return 'slurm'
    return None
  if _on_cloud_tpu_vm():
    return 'tpu'
  # Kubernetes: JAX's detector asks the API server for the Job (needs the
  # `kubernetes` package and pod-read RBAC). Only an indexed Job qualifies;
  # our manifest sets MULTIMODAL_* instead, which is checked before this.
  if ('KUBERNETES_SERVICE_HOST' in os.environ and
      'JOB_COMPLETION_INDEX' in os.environ):
    try:
      # pylint: disable-next=g-import-not-at-top,unused-import
      import kubernetes  # noqa: F401
    except ImportError:
      logger.warning('Kubernetes indexed Job detected but the `kubernetes` '
                     'package is missing (pip install "jax[k8s]"); set '
                     '%s/%s/%s instead. Running single-process.',
                     ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
      return None
    return 'k8s'
  return None


def initialize(cfg: Any = None) -> str:
  """Starts JAX's multi-process runtime if this run has several processes.

  Must run before any JAX computation or device query. Safe to call more
  than once: later calls return the first decision without doing anything.

  Args:
    cfg: the `config.distributed` block (a ConfigDict, a dict, or None for
      all defaults); see `default_config` for the fields.

  Returns:
    The mode chosen: "explicit", "env", "auto:<cluster>", "auto:<method>"
    (with `cluster_detection_method`), "single", or "preinitialized" when
    jax.distributed had already been initialized by someone else.
  """
  global _mode
  if _mode is not None:
    return _mode
  if jax.distributed.is_initialized():
    _mode = 'preinitialized'
    logger.info('jax.distributed already initialized: process %d of %d.',
                jax.process_index(), jax.process_count())
    return _mode

  coordinator = _get(cfg, 'coordinator_address')
  num_processes = _get(cfg, 'num_processes')
  process_id = _get(cfg, 'process_id')
  from_config = coordinator is not None
  coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
  if num_processes is None:
    num_processes = _env_int(ENV_NUM_PROCESSES)
  if process_id is None:
    process_id = _env_int(ENV_PROCESS_ID)
  method = _get(cfg, 'cluster_detection_method')

  timeouts = dict(
      initialization_timeout=int(_get(cfg, 'initialization_timeout')),
      heartbeat_timeout_seconds=int(_get(cfg, 'heartbeat_timeout')),
      shutdown_timeout_seconds=int(_get(cfg, 'shutdown_timeout')),
  )
  local_device_ids = _device_ids(_get(cfg, 'local_device_ids'))

  if coordinator is not None:
    mode = 'explicit' if from_config else 'env'
    if num_processes is None or process_id is None:
      # JAX could fill the gaps from a detected cluster; without one its error
      # ("Number of processes must be defined") does not say where to set it.
      if method is None and detect_cluster() is None:
        raise ValueError(
            f'A coordinator ({coordinator}) is set but num_processes='
            f'{num_processes}, process_id={process_id}: set '
            '--config.distributed.num_processes/process_id or '
            f'${ENV_NUM_PROCESSES}/${ENV_PROCESS_ID}.')
    if method is None and None not in (num_processes, process_id):
      # Everything is known: stop JAX probing cluster environments anyway
      # (it does so whenever local_device_ids is unset, and its Kubernetes
      # probe needs API credentials a pod may not have).
      method = 'deactivate'
    kwargs = dict(coordinator_address=coordinator,
                  num_processes=num_processes, process_id=process_id,
                  cluster_detection_method=method)
  elif method is not None:
    mode = f'auto:{method}'
    kwargs = dict(num_processes=num_processes, process_id=process_id,
                  cluster_detection_method=method)
  elif _get(cfg, 'auto') and (cluster := detect_cluster()) is not None:
    mode = f'auto:{cluster}'
    kwargs = dict(num_processes=num_processes, process_id=process_id)
  else:
    _mode = 'single'
    logger.info('distributed: single process (no coordinator configured, no '
                'multi-process cluster detected).')
    return _mode

  # Printed rather than logged: the trainer runs with absl verbosity WARNING,
  # and a multi-host start-up that stalls is debugged from exactly this line.
  _say(f'mode={mode} coordinator={coordinator or "<auto>"} '
       f'num_processes={_or_auto(num_processes)} '
       f'process_id={_or_auto(process_id)} '
       f'local_device_ids={local_device_ids} ' +
       ' '.join(f'{k}={v}' for k, v in timeouts.items()))
  jax.distributed.initialize(local_device_ids=local_device_ids, **kwargs,
                             **timeouts)
  _mode = mode
  if _get(cfg, 'fail_fast'):
    _install_fail_fast_hook()
  # Read back what JAX settled on (auto mode fills it in) without calling
  # jax.process_index(), which would start the backends: the trainer may
  # still want to change JAX config that only applies before that.
  # pylint: disable-next=g-import-not-at-top
  from jax._src import distributed as jax_distributed
  state = jax_distributed.global_state
  _say(f'connected as process {state.process_id} of '
       f'{state.num_processes}; if a peer dies this process is aborted '
       f'within ~{timeouts["heartbeat_timeout_seconds"]}s.')
  return _mode


def _install_fail_fast_hook() -> None:
  """Makes an uncaught exception end this process immediately.

  Measured with jax 0.10: after an uncaught exception the interpreter's exit
  waits in the distributed shutdown barrier while the peers wait in their
  next collective for this process (whose heartbeats keep it "alive"): the
  job idles for shutdown_timeout (300 s by default). Exiting with os._exit
  closes the connections, so peers in a collective fail at once (and exit the
  same way), and the others are aborted within heartbeat_timeout.
  """
  previous = sys.excepthook

  def hook(exc_type, exc, tb):
    try:
      previous(exc_type, exc, tb)
      _say(f'uncaught {exc_type.__name__} in a multi-process run: exiting '
           'now so the other processes stop too (fail_fast).')
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(1)

  sys.excepthook = hook


def _or_auto(value: Any) -> str:
  return '<auto>' if value is None else str(value)


def _say(msg: str) -> None:
  print(f'[distributed] {msg}', file=sys.stderr, flush=True)


def is_coordinator() -> bool:
  """True on process 0, the one that writes logs, configs and summaries."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Barrier: returns once every process has reached `sync(name)`.

  All processes must call it with the same name (a mismatch raises). Free in
  a single-process run, where it skips the tiny collective it compiles.
  """
  if jax.process_count() == 1:
    return
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental import multihost_utils
  multihost_utils.sync_global_devices(name)


def fetch(x: jax.Array) -> np.ndarray:
  """The whole value of a (possibly multi-process) global array, as NumPy.

  Every process gets the same array; for a batch split over processes this
  gathers the other processes' rows (in global order).
  """
  if x.is_fully_addressable:
    return np.asarray(x)
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicate(x: np.ndarray, mesh) -> jax.Array:
  """A global array replicated on every device of `mesh`, from host data
  that every process holds identically (e.g. class prompts)."""
  return jax.make_array_from_process_local_data(
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), x,
      x.shape)
