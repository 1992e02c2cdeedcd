"""GPU benchmark: parity of the CUDA backend with the CPU backend, and timings, in one run.

    python bench/gpu.py --out reports/gpu_bench.json [--quick]

Measures on this machine, same data for both backends:

* parity: a small VDSH training (codes agreement, objectives) and Hamming search/range search
  (exact equality of D and I);
* one ADMM sweep at depth 64 x width 1024 on 10,000 samples, CPU vs CUDA backend (the second
  CUDA sweep, after compilation), the GPU's GEMM rate inside the sweep against the rate of one
  large product through the same ``gpu_admm.gemm`` (and the nominal H200 fp32 peak);
* Hamming top-1000 for 10,000 queries over 1M 64-bit codes, CPU index vs CUDA index.

Goals (issue 5): sweep >= 20x, GEMM part >= 50% of the fp32 GEMM rate, search >= 10x.
Writes one JSON file; prints it too. Installs nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vdsh_numba import gpu_admm, gpu_model  # noqa: E402
from vdsh_numba.backend import cupy_or_none, require_cuda, simulated  # noqa: E402
from vdsh_numba.base import label_matrix  # noqa: E402
from vdsh_numba.hamming import HammingIndex  # noqa: E402
from vdsh_numba.model import VDSH  # noqa: E402

H200_FP32_PEAK_TFLOPS = 67.0  # SXM, non-tensor FP32 (NVIDIA datasheet)


def synthetic(n, d, classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.standard_normal((classes, d))
    X = centers[y] + 2.0 * rng.standard_normal((n, d))
    return (X / X.std()).astype(np.float64), y


def fit(backend, X, y, **kw):
    m = VDSH(**kw)
    if backend == "cpu":
        return m.fit(X, y)
    m.n_features_in_, m.history_ = X.shape[1], []
    gpu_model.fit_vdsh_gpu(m, m._clip(np.ascontiguousarray(X, dtype=np.float32)), label_matrix(y))
    return m


class GemmMeter:
    """Wraps gpu_admm.gemm inside gpu_model: synchronised seconds and flops of every product."""

    def __init__(self):
        from numba import cuda
        self.cuda, self.orig, self.seconds, self.flops = cuda, gpu_admm.gemm, 0.0, 0.0

    def __call__(self, A, B, out, transA=False, transB=False, alpha=1.0, beta=0.0):
        K = A.shape[0] if transA else A.shape[1]
        self.cuda.synchronize()
        t = time.perf_counter()
        r = self.orig(A, B, out, transA, transB, alpha, beta)
        self.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        self.flops += 2.0 * out.shape[0] * out.shape[1] * K
        return r


def gemm_rate(n=8192, repeats=3):
    from numba import cuda
    rng = np.random.default_rng(0)
    A = cuda.to_device(rng.standard_normal((n, n)).astype(np.float32))
    B = cuda.to_device(rng.standard_normal((n, n)).astype(np.float32))
    C = cuda.device_array((n, n), np.float32)
    gpu_admm.gemm(A, B, C)
    cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        gpu_admm.gemm(A, B, C)
        cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return 2.0 * n ** 3 / min(ts) / 1e12


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/gpu_bench.json")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test of this script)")
    a = ap.parse_args(argv)
    require_cuda()
    from numba import cuda
    res = {"gemm_path": "cupy/cuBLAS" if cupy_or_none() is not None else "numba tiled shared-memory",
           "device": "simulator" if simulated() else str(cuda.get_current_device().name)}
    q = a.quick
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(key, value):
        res[key] = value
        out.write_text(json.dumps(res, indent=1, default=float))
        print(key, json.dumps(value, default=float), flush=True)

    # --- parity: training
    X, y = synthetic(300 if q else 2000, 64, 10, 0)
    kw = dict(bits=32, depth=3, width=32 if q else 128, seed=0, sweeps=3)
    cpu, gpu = fit("cpu", X, y, **kw), fit("cuda", X, y, **kw)
    save("parity_train", {
        "config": kw, "n": len(y),
        "train_bits_agree": float(np.mean(cpu.B_train_ == gpu.B_train_)),
        "encode_bits_agree": float(np.mean((cpu._project(X) > 0) ==
                                           (gpu_model.project_gpu(gpu._clip(X.astype(np.float32)), gpu.W_, gpu.b_,
                                                                  gpu.Wo_, gpu.bo_, True) > 0))),
        "objective_cpu": [h["objective"] for h in cpu.history_],
        "objective_cuda": [h["objective"] for h in gpu.history_]})

    # --- parity + timing: Hamming search
    rng = np.random.default_rng(1)
    n_db, nq, k = (20_000, 500, 100) if q else (1_000_000, 10_000, 1000)
    db = rng.integers(0, 256, (n_db, 8), dtype=np.uint8)
    qs = rng.integers(0, 256, (nq, 8), dtype=np.uint8)
    ic, ig = HammingIndex(64), HammingIndex(64, backend="cuda")
    ic.add(db)
    ig.add(db)
    ig.search(qs[:10], k)  # compile + copy the database
    ic.search(qs[:10], k)
    t = time.perf_counter()
    Dg, Ig = ig.search(qs, k)
    tg = time.perf_counter() - t
    t = time.perf_counter()
    Dc, Ic = ic.search(qs, k)
    tc = time.perf_counter() - t
    lr_g = ig.range_search(qs[:200], 20)
    lr_c = ic.range_search(qs[:200], 20)
    save("hamming", {"n_db": n_db, "nq": nq, "k": k, "bits": 64, "cpu_s": tc, "cuda_s": tg, "speedup": tc / tg,
                     "goal_speedup": 10, "D_equal": bool((Dg == Dc).all()), "I_equal": bool((Ig == Ic).all()),
                     "range_equal": all(bool(np.array_equal(u, v)) for u, v in zip(lr_g, lr_c))})

    # --- timing: one ADMM sweep, depth 64 x width 1024, 10,000 samples
    save("gemm_rate_tflops", {"n": 2048 if q else 8192, "measured": gemm_rate(2048 if q else 8192),
                              "nominal_h200_fp32": H200_FP32_PEAK_TFLOPS})
    X, y = synthetic(1000 if q else 10_000, 512, 10, 2)
    kw = dict(bits=64, depth=8 if q else 64, width=256 if q else 1024, seed=0)
    meter = GemmMeter()
    gpu_model.ga.gemm = meter
    try:
        fit("cuda", X[:200], y[:200], **{**kw, "depth": 2, "width": 32, "sweeps": 1})  # compile
        meter.seconds = meter.flops = 0.0
        g = fit("cuda", X, y, **kw, sweeps=2)
    finally:
        gpu_model.ga.gemm = meter.orig
    fit("cpu", X[:200], y[:200], **{**kw, "depth": 2, "width": 32, "sweeps": 1})  # compile the CPU kernels
    c = fit("cpu", X, y, **kw, sweeps=1)
    cs, gs = c.history_[0]["seconds"], g.history_[1]["seconds"]
    save("admm_sweep", {"config": kw, "n": len(y), "cpu_sweep_s": cs, "cuda_sweep_s": gs, "speedup": cs / gs,
                        "goal_speedup": 20, "cuda_dense_s": g.history_[1]["dense_seconds"],
                        "cuda_gemm_s_all": meter.seconds, "cuda_gemm_tflops": meter.flops / max(meter.seconds, 1e-12) / 1e12,
                        "cuda_gemm_fraction_of_measured_rate": meter.flops / max(meter.seconds, 1e-12) / 1e12
                        / res["gemm_rate_tflops"]["measured"],
                        "cuda_gemm_fraction_of_nominal": meter.flops / max(meter.seconds, 1e-12) / 1e12
                        / H200_FP32_PEAK_TFLOPS,
                        "goal_gemm_fraction": 0.5, "objective_cpu_1": c.history_[0]["objective"],
                        "objective_cuda_1": g.history_[0]["objective"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
