#!/usr/bin/env bash
# Pre-train on this machine's devices (CPU, one GPU host or one TPU VM).
#   launch/local.sh WORKDIR [CONFIG] [extra flags...]
#   launch/local.sh workdirs/base configs/pretrain.py:variant=base --config.train.batch_size=256
#
# Dry run: DRY_RUN=1 prints the command and the device and batch arithmetic (mesh, batch
# per device and per host, steps, examples seen) and runs nothing. The devices are those
# JAX finds here, or NUM_DEVICES. A config that does not fit them fails in one line
# naming the field, as the run would:
#   DRY_RUN=1 launch/local.sh workdirs/base configs/pretrain.py
#   NUM_DEVICES=8 DRY_RUN=1 launch/local.sh workdirs/base configs/pretrain.py
set -euo pipefail
workdir=${1:?usage: launch/local.sh WORKDIR [CONFIG] [flags...]}
config=${2:-configs/pretrain.py}
shift $(( $# >= 2 ? 2 : 1 ))
entry=(python -m vlsa_jax.main)
flags=(--config="$config" --workdir="$workdir" "$@")

if [[ ${DRY_RUN:-0} == 0 ]]; then
  exec "${entry[@]}" "${flags[@]}"
fi

# shellcheck source=launch/quoting.sh
source "$(dirname "${BASH_SOURCE[0]}")/quoting.sh"

arithmetic=$(python "$(dirname "${BASH_SOURCE[0]}")/dry_run.py" --hosts=1 \
  ${NUM_DEVICES:+"--devices_per_host=$NUM_DEVICES"} --host_kind="this machine" \
  -- "${flags[@]}")
echo "dry run: nothing is run"
echo "command:"
echo "  $(quoted "${entry[@]}" "${flags[@]}")"
echo "$arithmetic"
