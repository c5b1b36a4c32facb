#!/usr/bin/env bash
# The same embres.train command on every worker of a Cloud TPU VM slice (JAX finds the
# coordinator from the TPU metadata), started from your workstation with gcloud:
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_vm.sh configs/lowrank.py --workdir=gs://b/w
# Environment: TPU_NAME, ZONE (required); PROJECT (default: gcloud's); EMBRES_REMOTE_DIR
# (the checkout on each worker, default ~/embres); EMBRES_DRY_RUN=1 prints and stops.
# The workdir must be shared by the workers (a gs:// bucket or a shared mount).
set -euo pipefail
cd "$(dirname "$0")/.."
for var in TPU_NAME ZONE; do
  if [[ -z "${!var:-}" ]]; then
    echo "launch/tpu_vm.sh: $var is not set (e.g. TPU_NAME=my-v4-32 ZONE=us-central2-b" \
      "launch/tpu_vm.sh configs/lowrank.py ...)" >&2
    exit 2
  fi
done
config="${1:-configs/lowrank.py}"
shift || true
if [[ ! -f "${config%%:*}" ]]; then
  echo "launch/tpu_vm.sh: config file '${config%%:*}' not found here (expected configs/<name>.py;" \
    "workers run the same path under EMBRES_REMOTE_DIR)" >&2
  exit 2
fi
remote_dir="${EMBRES_REMOTE_DIR:-~/embres}"
train="cd ${remote_dir} && python -m embres.train --multihost --config=${config}"
for arg in "$@"; do train+=" $(printf '%q' "$arg")"; done
cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" "--zone=$ZONE" --worker=all "--command=$train")
[[ -n "${PROJECT:-}" ]] && cmd+=("--project=$PROJECT")
echo "+ ${cmd[*]}"
[[ -n "${EMBRES_DRY_RUN:-}" ]] && exit 0
if ! command -v gcloud >/dev/null; then
  echo "launch/tpu_vm.sh: gcloud not found; install the Google Cloud CLI" >&2
  exit 2
fi
exec "${cmd[@]}"
