#!/usr/bin/env bash
# Trains on a Cloud TPU VM (one host or a multi-host pod slice).
#
#   TPU_NAME=my-v5e-16 ZONE=us-west4-a ACCELERATOR_TYPE=v5litepod-16 \
#   CONFIG=projects/digits/configs/contrastive.py WORKDIR=gs://my-bucket/runs/r1 \
#   launch/tpu_vm.sh --create -- --config.total_steps=1000
#
# Steps (each host of the slice is a "worker"; gcloud --worker=all reaches all):
#   1. --create: gcloud compute tpus tpu-vm create (otherwise the TPU must exist);
#   2. ship the code to ~/multimodal on every worker: a git clone of REPO_URL at
#      REPO_REF, or (default) a tarball of this checkout's tracked and
#      untracked-but-not-ignored files, copied with tpu-vm scp --worker=all;
#   3. make a Python venv on every worker and pip install -e . plus jax[tpu];
#   4. optionally run PREPARE_CMD on every worker (e.g. build a dataset);
#   5. start the same training command on every worker at once.
# JAX finds the other hosts of the slice by itself (multimodal.distributed
# detects the TPU VM and calls jax.distributed.initialize() with no
# arguments), so no coordinator address is needed.
#
# Settings: environment variables, or the flags below (flags win).
#   TPU_NAME          --name              TPU VM name (required)
#   ZONE              --zone              e.g. us-central2-b (required)
#   PROJECT           --project           gcloud project (default: gcloud's)
#   ACCELERATOR_TYPE  --accelerator-type  e.g. v4-32, v5litepod-16 (--create)
#   RUNTIME_VERSION   --version           TPU software version (--create);
#                                         default picked from ACCELERATOR_TYPE
#   CONFIG            --config            experiment, e.g. experiments/x.py:variant
#   WORKDIR           --workdir           run directory; use gs://... on a pod
#                                         slice: every worker must see the same
#                                         checkpoints
#   EXTRA_ARGS                            more trainer flags (word-split), plus
#                                         anything after "--"
#   REPO_URL, REPO_REF --repo-url/--ref   clone this instead of copying the tree
#   PYTHON_VERSION                        default 3.11 (the TPU images ship 3.10;
#                                         uv fetches a standalone build)
#   PREPARE_CMD                           shell run in ~/multimodal on every
#                                         worker, in the venv, before training
#   CREATE=1          --create            create the TPU VM first
#   SKIP_SETUP=1      --skip-setup        reuse code and venv already there
#   DETACH=1          --detach            train under nohup, log to
#                                         ~/multimodal_train.log on each worker
#   DRY_RUN=1         --dry-run           print the gcloud commands, run nothing
set -euo pipefail

TPU_NAME="${TPU_NAME:-}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
CONFIG="${CONFIG:-}"
WORKDIR="${WORKDIR:-}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
REPO_URL="${REPO_URL:-}"
REPO_REF="${REPO_REF:-main}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
PREPARE_CMD="${PREPARE_CMD:-}"
CREATE="${CREATE:-0}"
SKIP_SETUP="${SKIP_SETUP:-0}"
DETACH="${DETACH:-0}"
DRY_RUN="${DRY_RUN:-0}"

# Where things live on the workers. Relative to the remote home directory.
readonly REMOTE_DIR='multimodal'
readonly REMOTE_VENV='multimodal-venv'
readonly REMOTE_LOG='multimodal_train.log'

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
  echo "tpu_vm.sh: $*" >&2
  exit 2
}

while (($#)); do
  case "$1" in
    --name) TPU_NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --accelerator-type) ACCELERATOR_TYPE="$2"; shift 2 ;;
    --version) RUNTIME_VERSION="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --repo-url) REPO_URL="$2"; shift 2 ;;
    --ref) REPO_REF="$2"; shift 2 ;;
    --create) CREATE=1; shift ;;
    --skip-setup) SKIP_SETUP=1; shift ;;
    --detach) DETACH=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (trainer flags go after --; see --help)" ;;
  esac
done
# Whatever is left (after --) is passed to the trainer verbatim.
TRAIN_ARGS=("$@")

[[ -n "$TPU_NAME" ]] || die "set TPU_NAME or --name"
[[ -n "$ZONE" ]] || die "set ZONE or --zone"
[[ -n "$CONFIG" ]] || die "set CONFIG or --config"
[[ -n "$WORKDIR" ]] || die "set WORKDIR or --workdir"
if [[ "$WORKDIR" != gs://* ]]; then
  # A local path works on a single-host TPU but on a pod slice each worker
  # would write its own, diverging checkpoints.
  echo "tpu_vm.sh: warning: WORKDIR=$WORKDIR is not gs://; fine for one" \
    "host, wrong for a multi-host slice." >&2
fi

# Runtime (OS image) per TPU generation, from the Cloud TPU docs.
default_runtime() {
  case "$1" in
    v6e-*) echo 'v2-alpha-tpuv6e' ;;
    v5litepod-*|v5e-*) echo 'v2-alpha-tpuv5-lite' ;;
    v5p-*) echo 'v2-alpha-tpuv5' ;;
    *) echo 'tpu-ubuntu2204-base' ;;
  esac
}

GCLOUD_FLAGS=(--zone="$ZONE")
if [[ -n "$PROJECT" ]]; then
  GCLOUD_FLAGS+=(--project="$PROJECT")
fi

# Prints a command (quoted so it can be pasted) and runs it unless DRY_RUN=1.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "$DRY_RUN" != 1 ]]; then
    "$@"
  fi
}

# Runs one shell command line on every worker of the slice.
on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    --worker=all --command="$1"
}

if [[ "$CREATE" == 1 ]]; then
  [[ -n "$ACCELERATOR_TYPE" ]] || die "--create needs ACCELERATOR_TYPE"
  RUNTIME_VERSION="${RUNTIME_VERSION:-$(default_runtime "$ACCELERATOR_TYPE")}"
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
fi

if [[ "$SKIP_SETUP" != 1 ]]; then
  if [[ -n "$REPO_URL" ]]; then
    on_all_workers "set -e; rm -rf ~/$REMOTE_DIR; \
git clone --quiet $(printf '%q' "$REPO_URL") ~/$REMOTE_DIR; \
cd ~/$REMOTE_DIR; git checkout --quiet $(printf '%q' "$REPO_REF")"
  else
    # Ship exactly what git would (tracked + untracked, not ignored): no
    # .venv, data or workdirs, but uncommitted edits do go along.
    repo_root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
    tarball="$(mktemp "${TMPDIR:-/tmp}/multimodal-src.XXXXXX")"
    trap 'rm -f "$tarball"' EXIT
    (cd "$repo_root" && git ls-files -z --cached --others --exclude-standard |
      tar --null -T - -czf "$tarball")
    run gcloud compute tpus tpu-vm scp "$tarball" \
      "$TPU_NAME:multimodal-src.tar.gz" "${GCLOUD_FLAGS[@]}" --worker=all
    on_all_workers "set -e; rm -rf ~/$REMOTE_DIR; mkdir -p ~/$REMOTE_DIR; \
tar -xzf ~/multimodal-src.tar.gz -C ~/$REMOTE_DIR"
  fi
  # uv provides a Python newer than the image's and a fast resolver; jax[tpu]
  # pulls the matching libtpu from PyPI. Pinned to the jax range in setup.cfg.
  on_all_workers "set -e; python3 -m pip install --quiet --user --upgrade uv; \
export PATH=\$HOME/.local/bin:\$PATH; \
uv venv --quiet --allow-existing --python $(printf '%q' "$PYTHON_VERSION") \
~/$REMOTE_VENV; \
cd ~/$REMOTE_DIR; \
uv pip install --quiet --python ~/$REMOTE_VENV/bin/python -e . \
'jax[tpu]>=0.10,<0.11'"
fi

if [[ -n "$PREPARE_CMD" ]]; then
  on_all_workers "set -e; cd ~/$REMOTE_DIR; . ~/$REMOTE_VENV/bin/activate; \
$PREPARE_CMD"
fi

# The trainer command line, quoted for the remote shell. EXTRA_ARGS is
# word-split on purpose (it is a flat list of --flag=value strings).
train_cmd="python -m multimodal.train --config $(printf '%q' "$CONFIG")"
train_cmd+=" --workdir $(printf '%q' "$WORKDIR")"
if [[ -n "$EXTRA_ARGS" ]]; then
  train_cmd+=" $EXTRA_ARGS"
fi
if ((${#TRAIN_ARGS[@]})); then
  train_cmd+="$(printf ' %q' "${TRAIN_ARGS[@]}")"
fi

prefix="cd ~/$REMOTE_DIR && . ~/$REMOTE_VENV/bin/activate &&"
if [[ "$DETACH" == 1 ]]; then
  # Survives the ssh session ending (a laptop going to sleep); follow with
  #   gcloud compute tpus tpu-vm ssh NAME --zone Z --worker=0 \
  #     --command 'tail -f ~/multimodal_train.log'
  on_all_workers "$prefix nohup $train_cmd > ~/$REMOTE_LOG 2>&1 < /dev/null &"
  echo "tpu_vm.sh: training started on every worker; logs in ~/$REMOTE_LOG."
else
  # Foreground: all workers' output streams here, and a failure on any
  # worker makes this script fail.
  on_all_workers "$prefix $train_cmd"
fi
