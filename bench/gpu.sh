#!/usr/bin/env bash
# The GPU check of issue 5, for one H200, in under 8 minutes; installs nothing.
#   bench/gpu.sh [RESULTS_DIR]      (default: $OUT if set, else reports/)
# 1. the CUDA test suite on the real GPU (tests/cuda without the simulator) and the PTX check,
# 2. bench/gpu.py: parity of training and search with the CPU backend, and the timings
#    (ADMM sweep at depth 64 x width 1024 on 10,000 samples; Hamming top-1000, 10,000 queries x 1M codes).
# Everything goes to one file, RESULTS_DIR/gpu_bench.txt (the JSON numbers also to gpu_bench.json).
set -uo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-${OUT:-reports}}"
mkdir -p "$DIR"
RES="$DIR/gpu_bench.txt"
unset NUMBA_ENABLE_CUDASIM
export DVC_NO_ANALYTICS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi missing"
  python -c "import numba, numba_cuda; print('numba', numba.__version__, 'numba-cuda', numba_cuda.__version__)" 2>&1
  python -c "import cupy; print('cupy', cupy.__version__)" 2>&1 || echo "cupy: not installed (tiled numba GEMM)"
  echo "== tests/cuda on the GPU + PTX"
  timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda tests/cuda_ptx 2>&1 | tail -25
  echo "tests rc=${PIPESTATUS[0]}"
  echo "== bench/gpu.py"
  timeout 300 python bench/gpu.py --out "$DIR/gpu_bench.json" 2>&1 | tail -40
  echo "bench rc=${PIPESTATUS[0]}"
} > "$RES" 2>&1
cat "$RES"
