#!/usr/bin/env bash
# Pre-training on a Cloud TPU pod slice: the same command on every worker VM.
#   launch/tpu_pod.sh TPU_NAME ZONE WORKDIR [CONFIG] [extra flags...]
# The repository must already be installed on every worker (pip install -e ".[tpu]")
# at ~/vlsa_jax; WORKDIR should be a gs:// path or shared storage.
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE WORKDIR [CONFIG] [flags...]}
zone=${2:?zone}
workdir=${3:?workdir}
config=${4:-configs/pretrain.py}
shift $(( $# >= 4 ? 4 : 3 ))
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="\
  cd ~/vlsa_jax && python -m vlsa_jax.main --distributed --config='$config' \
  --workdir='$workdir' --config.dtype=bfloat16 $extra"
