#!/usr/bin/env bash
# N processes on this machine over 127.0.0.1 with CPU collectives (gloo): the way multi-host
# runs are tested here. Each process gets EMBRES_DEVICES_PER_PROCESS fake CPU devices
# (default 4) and its own slice of the data; process 0 writes logs, the others log to files.
#   launch/multiprocess.sh 2                                   # configs/lowrank.py, 2 x 4 devices
#   launch/multiprocess.sh 2 configs/lowrank.py:runlocal --workdir=/tmp/mp
# Environment: EMBRES_DEVICES_PER_PROCESS (4), EMBRES_PORT (a free port),
#   EMBRES_LOG_DIR (where processes 1..N-1 log; default: a new temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch/multiprocess.sh N [CONFIG] [embres.train flags...]  (N = processes, >= 1)" >&2
  exit 2
fi
n="$1"; shift
config="${1:-configs/lowrank.py}"
shift || true
if [[ ! -f "${config%%:*}" ]]; then
  echo "launch/multiprocess.sh: config file '${config%%:*}' not found (expected configs/<name>.py)" >&2
  exit 2
fi
per="${EMBRES_DEVICES_PER_PROCESS:-4}"
if [[ ! "$per" =~ ^[1-9][0-9]*$ ]]; then
  echo "launch/multiprocess.sh: EMBRES_DEVICES_PER_PROCESS='$per' must be a positive integer" >&2
  exit 2
fi
port="${EMBRES_PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
logs="${EMBRES_LOG_DIR:-$(mktemp -d -t embres_multiprocess.XXXXXX)}"
mkdir -p "$logs"
cmd=(python -m embres.train --multihost "--config=${config}" "$@")
echo "+ ${n} processes x ${per} CPU devices, coordinator 127.0.0.1:${port}, logs of 1..$((n - 1)) in ${logs}"
echo "+ EMBRES_COORDINATOR=127.0.0.1:${port} EMBRES_NUM_PROCESSES=${n} EMBRES_PROCESS_ID=<i>" \
  "JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=${per} ${cmd[*]}"

# Drop any device count already in XLA_FLAGS (e.g. from a test run): ours must win.
xla_flags="$(echo "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g')"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
for ((i = 0; i < n; i++)); do
  env EMBRES_COORDINATOR="127.0.0.1:${port}" EMBRES_NUM_PROCESSES="$n" EMBRES_PROCESS_ID="$i" \
    JAX_PLATFORMS=cpu XLA_FLAGS="${xla_flags} --xla_force_host_platform_device_count=${per}" \
    "${cmd[@]}" > >(if ((i == 0)); then cat; else cat >"${logs}/process_${i}.log"; fi) 2>&1 &
  pids+=("$!")
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "launch/multiprocess.sh: process $i failed$( ((i > 0)) && echo " (log: ${logs}/process_${i}.log)")" >&2
    status=1
    cleanup
  fi
done
trap - EXIT
exit "$status"
