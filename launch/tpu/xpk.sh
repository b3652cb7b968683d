#!/usr/bin/env bash
# The same run as a GKE workload with xpk (https://github.com/AI-Hypercomputer/xpk): one container
# per TPU VM host, all running launch/train.py; xpk restarts the workload after a preemption and
# the trainer resumes from WORKDIR's newest checkpoint.
#
#   launch/tpu/xpk.sh CLUSTER TPU_TYPE NUM_SLICES IMAGE CONFIG WORKDIR [--config.a.b=v ...]
#   launch/tpu/xpk.sh my-cluster v5p-128 2 gcr.io/PROJECT/seedcoder-jax configs/pretrain.py:8b gs://BUCKET/runs/sc8b
#
# NUM_SLICES > 1: the mesh's data axis spans the slices over DCN (config.mesh.dcn_data=-1, the
# default); fsdp and tensor stay inside each slice. xpk mounts no corpus: mount the bucket in the
# pod at the /gcs/BUCKET path the config names, or put the corpus in the image.
#
# IMAGE is a container with this repository at /app and its requirements (+ requirements-tpu.txt)
# installed; WORKDIR must be a gs:// path.
set -euo pipefail
CLUSTER=$1 TPU_TYPE=$2 NUM_SLICES=$3 IMAGE=$4 CONFIG=$5 WORKDIR=$6
shift 6
xpk workload create --cluster="$CLUSTER" --workload="seedcoder-$(date +%Y%m%d-%H%M%S)" \
  --tpu-type="$TPU_TYPE" --num-slices="$NUM_SLICES" --docker-image="$IMAGE" --max-restarts=10 \
  --command="cd /app && python launch/train.py --config=$CONFIG --workdir=$WORKDIR $*"
