#!/usr/bin/env bash
# Pre-train on this machine's devices (CPU, one GPU host or one TPU VM).
#   launch/local.sh WORKDIR [CONFIG] [extra flags...]
#   launch/local.sh workdirs/base configs/pretrain.py:variant=base --config.train.batch_size=256
set -euo pipefail
workdir=${1:?usage: launch/local.sh WORKDIR [CONFIG] [flags...]}
config=${2:-configs/pretrain.py}
shift $(( $# >= 2 ? 2 : 1 ))
exec python -m vlsa_jax.main --config="$config" --workdir="$workdir" "$@"
