#!/usr/bin/env bash
# The GPU check of the CUDA backend (issue 14) for one H200, in under 5 minutes; installs nothing.
#   bench/gpu.sh [RESULTS_DIR]        (default: $OUT if set, else reports/)
# Steps (bench/gpu.py STEP), each under `timeout -k 10 N` (a process inside a CUDA call can
# ignore SIGTERM); the limits sum to 275 s:
#   smoke    60 s  import, one kernel vs its CPU twin, one tiny fit on both backends; the script
#                  stops here if it fails
#   mnist   120 s  VDSH with the default params.yaml on MNIST (t10k), backend cuda next to cpu:
#                  mAP and seconds
#   admm     50 s  one ADMM sweep, depth 16 x width 1024, 10,000 samples: cpu vs cuda, GEMM rate
#   hamming  45 s  top-1000, 2,000 queries x 1M 64-bit codes: cpu vs cuda
# Results are printed as they come and written to RESULTS_DIR/gpu_<step>.json (small files) and
# RESULTS_DIR/gpu_bench.log. MNIST: MNIST_DIR, else shared/data/mnist, else ../shared/data/mnist.
# The device machine has python3 (a venv) but no `python`: PYTHON defaults to python3.
# VDSH_BENCH_TINY=1 shrinks every size (tests/cuda/test_bench_gpu.py runs this script under the
# simulator that way, with the limits raised through T_SMOKE, T_MNIST, T_ADMM, T_HAMMING).
set -uo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-${OUT:-reports}}"
mkdir -p "$DIR"
LOG="$DIR/gpu_bench.log"
PY="${PYTHON:-python3}"
[ "${VDSH_BENCH_TINY:-0}" = 1 ] || unset NUMBA_ENABLE_CUDASIM
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA=()
[ -n "${MNIST_DIR:-}" ] && DATA=(--data "$MNIST_DIR")

say() { echo "$@" | tee -a "$LOG"; }

step() {  # step NAME LIMIT: run one step, its output printed and logged as it comes
  local name=$1 limit=$2 extra=()
  [ "$name" = mnist ] && extra=("${DATA[@]}")
  say "== $name (limit ${limit}s) $(date -u +%T)"
  timeout -k 10 "$limit" "$PY" bench/gpu.py "$name" --out "$DIR" "${extra[@]}" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  say "== $name rc=$rc $(date -u +%T)"
  return "$rc"
}

: > "$LOG"
say "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git) load $(cut -d' ' -f1-3 /proc/loadavg)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG" || true
if ! step smoke "${T_SMOKE:-60}"; then
  say "smoke step failed: stopping"
  exit 1
fi
fail=0
step mnist "${T_MNIST:-120}" || fail=1
step admm "${T_ADMM:-50}" || fail=1
step hamming "${T_HAMMING:-45}" || fail=1
say "== done $(date -u +%T) fail=$fail"
exit "$fail"
