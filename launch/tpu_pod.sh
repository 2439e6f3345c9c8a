#!/usr/bin/env bash
# Pre-training on a Cloud TPU pod slice: the same command on every worker VM.
#   launch/tpu_pod.sh TPU_NAME ZONE WORKDIR [CONFIG] [extra flags...]
# The repository must already be installed on every worker (pip install -e ".[tpu]")
# at ~/vlsa_jax; WORKDIR should be a gs:// path or shared storage. jax.distributed finds
# the coordinator and each worker's process id itself on a TPU VM.
#
# Dry run: DRY_RUN=1 prints the gcloud line, the command every worker runs and the device
# and batch arithmetic (mesh, batch per chip and per host, steps, examples seen) and runs
# nothing. It needs the slice's type, ACCELERATOR_TYPE (what
# `gcloud compute tpus tpu-vm describe TPU_NAME --zone=ZONE --format='value(acceleratorType)'`
# prints). A config that does not fit the slice fails in one line naming the field:
#   ACCELERATOR_TYPE=v4-128 DRY_RUN=1 launch/tpu_pod.sh my-tpu us-central2-b gs://b/run
#
# TPU types: the number in the name counts TensorCores (v2, v3, v4, v5p) or chips (v5e,
# v6e); JAX has one device per chip, except on v2 and v3, one per TensorCore.
#   ACCELERATOR_TYPE   chips   JAX devices   chips per host (worker VM)
#   v2-N, v3-N         N/2     N             4
#   v4-N, v5p-N        N/2     N/2           4
#   v5litepod-N        N       N             4; N for N <= 8 (a single host)
#   v6e-N              N       N             4; N for N <= 8 (a single host)
# e.g. v4-128: 64 chips on 16 hosts; v5litepod-256: 256 chips on 64 hosts. CHIPS_PER_HOST
# overrides the last column.
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE WORKDIR [CONFIG] [flags...]}
zone=${2:?zone}
workdir=${3:?workdir}
config=${4:-configs/pretrain.py}
shift $(( $# >= 4 ? 4 : 3 ))

# shellcheck source=launch/quoting.sh
source "$(dirname "${BASH_SOURCE[0]}")/quoting.sh"

entry=(python -m vlsa_jax.main)
flags=(--distributed --config="$config" --workdir="$workdir" --config.dtype=bfloat16 "$@")
remote="cd ~/vlsa_jax && $(quoted "${entry[@]}" "${flags[@]}")"
launch=(gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$remote")

if [[ ${DRY_RUN:-0} == 0 ]]; then
  exec "${launch[@]}"
fi

fail() { echo "error: $*" >&2; exit 2; }
accelerator=${ACCELERATOR_TYPE:-}
[[ -n $accelerator ]] ||
  fail "the dry run needs ACCELERATOR_TYPE, the slice's type (e.g. v4-128): gcloud compute" \
    "tpus tpu-vm describe $tpu --zone=$zone --format='value(acceleratorType)'"
version=${accelerator%-*} count=${accelerator##*-}
[[ $accelerator == *-* && $count =~ ^[1-9][0-9]*$ ]] ||
  fail "ACCELERATOR_TYPE=$accelerator is not VERSION-COUNT (e.g. v4-128)"
case $version in
  v2|v3) chips=$(( count / 2 )) devices_per_chip=2 host_chips=4 device_kind=TensorCores ;;
  v4|v5p) chips=$(( count / 2 )) devices_per_chip=1 host_chips=4 device_kind=chips ;;
  v5litepod|v5e|v6e) chips=$count devices_per_chip=1 host_chips=$(( count <= 8 ? count : 4 ))
    device_kind=chips ;;
  *) fail "ACCELERATOR_TYPE=$accelerator: unknown TPU version $version (v2, v3, v4, v5p," \
       "v5litepod, v6e)" ;;
esac
chips_per_host=${CHIPS_PER_HOST:-$host_chips}
[[ $chips_per_host =~ ^[1-9][0-9]*$ ]] && (( chips > 0 && chips % chips_per_host == 0 )) ||
  fail "ACCELERATOR_TYPE=$accelerator: its $chips chips do not fill hosts of" \
    "$chips_per_host chips (CHIPS_PER_HOST)"
hosts=$(( chips / chips_per_host ))

arithmetic=$(python "$(dirname "${BASH_SOURCE[0]}")/dry_run.py" --hosts="$hosts" \
  --devices_per_host=$(( chips_per_host * devices_per_chip )) \
  --host_kind="TPU worker VMs, one process each" --device_kind="$device_kind" \
  --accelerator="$accelerator: $chips chips, $chips_per_host per host, JAX devices: $device_kind" \
  -- "${flags[@]}")
echo "dry run: nothing is run"
# The remote command in double quotes where that needs no escapes, as one types it.
shown="\"$remote\""
if [[ $remote == *[\"\$\`\\\!]* ]]; then shown=$(quoted "$remote"); fi
echo "gcloud, from this machine, runs the command on every worker:"
echo "  $(quoted "${launch[@]:0:${#launch[@]}-1}") --command=$shown"
echo "each worker (0..$(( hosts - 1 )), one process each) runs:"
echo "  $remote"
echo "$arithmetic"
