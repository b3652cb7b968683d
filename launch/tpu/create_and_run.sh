#!/usr/bin/env bash
# Creates a Cloud TPU VM pod slice, installs the project on every worker, and starts the same
# training command on all of them (JAX finds its peers from the TPU metadata).
#
#   launch/tpu/create_and_run.sh NAME ZONE ACCELERATOR CONFIG WORKDIR [--config.a.b=v ...]
#   CORPUS_BUCKET=BUCKET launch/tpu/create_and_run.sh sc8b us-east5-a v5p-128 configs/pretrain.py:8b gs://BUCKET/runs/sc8b
#
# WORKDIR should be a gs:// path (every worker writes its checkpoint shards there). Rerunning the
# last command after a preemption resumes from the newest checkpoint. Needs gcloud, a project with
# TPU quota, and the corpus/tokenizer paths of the config readable from the VMs. Corpora are read
# through gcsfuse (ArrayRecord opens local files only): with CORPUS_BUCKET=B every worker mounts
# gs://B read-only at /gcs/B, and the config names corpora /gcs/B/... (configs/pretrain.py:8b does).
set -euo pipefail
NAME=$1 ZONE=$2 ACCELERATOR=$3 CONFIG=$4 WORKDIR=$5
shift 5
VERSION=${TPU_SOFTWARE_VERSION:-v2-alpha-tpuv5}
REPO=${REPO_URL:-$(git config --get remote.origin.url)}
BRANCH=${BRANCH:-$(git rev-parse --abbrev-ref HEAD)}

gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" >/dev/null 2>&1 ||
  gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR" \
    --version="$VERSION"

ssh_all() { gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"; }

# Same checkout and environment on every worker.
ssh_all "set -e; test -d seedcoder-jax || git clone -b $BRANCH $REPO seedcoder-jax;
  cd seedcoder-jax && git fetch -q && git checkout -q $BRANCH && git pull -q;
  python3.12 -m venv .venv && .venv/bin/pip install -q -r requirements.txt -r requirements-tpu.txt &&
  .venv/bin/pip install -q --no-deps -r requirements-data.txt && .venv/bin/pip install -q --no-deps -e ."

if [[ -n "${CORPUS_BUCKET:-}" ]]; then
  ssh_all "set -e; command -v gcsfuse >/dev/null || { echo \"gcsfuse is not installed on \$(hostname)\"; exit 1; };
    sudo mkdir -p /gcs/$CORPUS_BUCKET && sudo chown \$USER /gcs/$CORPUS_BUCKET;
    mountpoint -q /gcs/$CORPUS_BUCKET || gcsfuse --implicit-dirs -o ro $CORPUS_BUCKET /gcs/$CORPUS_BUCKET"
fi

# One command on all workers; maybe_initialize_distributed() joins them into one JAX run.
ssh_all "cd seedcoder-jax && nohup .venv/bin/python launch/train.py --config=$CONFIG \
  --workdir=$WORKDIR $* > train.log 2>&1 &"
echo "started on every worker of $NAME; follow with:"
echo "  gcloud compute tpus tpu-vm ssh $NAME --zone=$ZONE --worker=0 --command='tail -f seedcoder-jax/train.log'"
