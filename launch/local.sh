#!/usr/bin/env bash
# One process on this machine: launch/local.sh [CONFIG] [extra embres.train flags...]
#   launch/local.sh configs/lowrank.py --config.adapter.rank=64 --workdir=workdirs/r64
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-configs/lowrank.py}"
shift || true
if [[ ! -f "${config%%:*}" ]]; then
  echo "launch/local.sh: config file '${config%%:*}' not found (expected configs/<name>.py)" >&2
  exit 2
fi
cmd=(python -m embres.train "--config=${config}" "$@")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"
