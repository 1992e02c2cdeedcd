"""GPU check of the CUDA backend, one step per call, for one H200 (bench/gpu.sh runs them all).

    python3 bench/gpu.py STEP --out DIR        STEP: smoke | mnist | admm | hamming

Every step writes ``DIR/gpu_<step>.json`` (rewritten as each result comes) and prints each
result as one line. ``VDSH_BENCH_TINY=1`` shrinks every size (and the launch parameters) so
the script runs under numba's simulator in a few minutes (tests/cuda/test_bench_gpu.py).

* ``smoke``: the CUDA target is usable, one kernel against its CPU twin, one tiny VDSH fit on
  both backends (codes compared). Non-zero exit on any failure: bench/gpu.sh stops there.
* ``mnist``: VDSH with the default params.yaml (depth, width, train.*: first_width 1024 ->
  width 256, 60 sweeps) on MNIST (the t10k images in ``--data``, protocol standard: 1,000
  queries, 9,000 database, 5,000 training), ``--bits`` (32), trained with ``backend="cuda"``
  and with ``backend="cpu"``: mAP (vdsh_numba.search.metrics.evaluate_codes, whole ranking) and
  training seconds of each, and how many training codes agree.
* ``admm``: seconds of one ADMM sweep (depth 16 x width 1024, 10,000 samples) on both
  backends (the CUDA figure is the second sweep: the first compiles), the GEMM rate inside the
  CUDA sweep against one large product through the same GEMM, measured in the same run.
* ``hamming``: top-1000 of 2,000 queries over 1M 64-bit codes, CPU index vs CUDA index
  (seconds, D and I equal).

Each JSON holds ``os.getloadavg()`` at its start (CPU figures at a load above 0.5 per core
are unreliable). Installs nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vdsh_numba import config  # noqa: E402
from vdsh_numba.backend import cupy_or_none, require_cuda, simulated  # noqa: E402

TINY = os.environ.get("VDSH_BENCH_TINY") == "1"


def shrink_launch():
    """Launch parameters that keep the simulator's thread count (its cost) small."""
    config.CUDA_THREADS_PER_BLOCK, config.CUDA_GEMM_TILE, config.CUDA_MAX_BLOCKS = 16, 16, 2
    config.CUDA_HAMMING_QUERIES_PER_BLOCK = 3
    config.CUDA_HAMMING_TARGET_THREADS = 64
    config.CUDA_HAMMING_MIN_SEGMENT_ROWS = 64


class Results:
    """One JSON file per step, rewritten after every result; each result printed at once."""

    def __init__(self, out, step):
        self.path = Path(out) / f"gpu_{step}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.res = {"step": step, "tiny": TINY, "simulator": simulated(),
                    "loadavg": list(os.getloadavg()), "cpus": os.cpu_count()}
        self.save("started", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def save(self, key, value):
        self.res[key] = value
        self.path.write_text(json.dumps(self.res, indent=1, default=float))
        print(f"{self.path.stem}.{key}:", json.dumps(value, default=float), flush=True)


def synthetic(n, d, classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = 3.0 * rng.standard_normal((classes, d))[y] + rng.standard_normal((n, d))
    return (X / X.std()).astype(np.float64), y


def vdsh(backend, **kw):
    from vdsh_numba.methods.vdsh import VDSH
    return VDSH(backend=backend, **kw)


def timed_fit(backend, X, y, **kw):
    t = time.perf_counter()
    m = vdsh(backend, **kw).fit(X, y)
    return m, time.perf_counter() - t


# --------------------------------------------------------------------------------------- steps
def smoke(r, a):
    from numba import cuda
    from vdsh_numba.methods.vdsh import admm, gpu_admm
    require_cuda()
    r.save("device", "simulator" if simulated() else str(cuda.get_current_device().name))
    r.save("gemm_path", "cupy/cuBLAS" if cupy_or_none() is not None else "numba tiled shared-memory")
    rng = np.random.default_rng(0)
    p, b, ap = (rng.standard_normal(s).astype(np.float32) for s in ((6, 5), (5,), (6, 5)))
    z, act = np.empty_like(p), np.empty_like(p)
    admm.bias_act(p, b, ap, True, z, act)
    zd, ad = cuda.device_array_like(p), cuda.device_array_like(p)
    gpu_admm.bias_act(cuda.to_device(p), cuda.to_device(b), cuda.to_device(ap), True, zd, ad)
    ok_kernel = bool(np.array_equal(ad.copy_to_host(), act) and np.array_equal(zd.copy_to_host(), z))
    r.save("kernel_equal_cpu", ok_kernel)
    X, y = synthetic(48, 10, 4, 0)
    kw = dict(bits=8, depth=3, width=8, first_width=12, seed=0, sweeps=2, final_refit=True)
    g, tg = timed_fit("cuda", X, y, **kw)
    c, tc = timed_fit("cpu", X, y, **kw)
    agree = float(np.mean(g.B_train_ == c.B_train_))
    r.save("tiny_fit", {"cuda_s": tg, "cpu_s": tc, "train_codes_agree": agree,
                        "objective_cuda": g.history_[-1]["objective"], "objective_cpu": c.history_[-1]["objective"]})
    if not ok_kernel or agree < 0.99 or not np.isfinite(g.history_[-1]["objective"]):
        raise SystemExit("smoke: the CUDA backend disagrees with the CPU (see above)")


def mnist_features(data_dir, seed):
    from vdsh_numba.data.datasets import load_mnist
    from vdsh_numba.data.features import build_features, protocol_indices, resolve_protocol
    rd = load_mnist(data_dir, progress=False, download=False)
    proto = resolve_protocol("mnist", {"name": "standard"})
    if TINY:
        proto = {**proto, "queries_per_class": 2, "train_per_class": 4}
    idx = protocol_indices(rd.labels, proto, rd.info, seed)
    F = build_features(rd.images, rd.labels, rd.info["max_value"], proto["queries_per_class"],
                       proto["train_per_class"], seed, features="pixels", indices=idx, progress=False,
                       standardize=proto.get("standardize", "global"))
    if TINY:  # 49 of the 784 pixels, 300 database items: the simulator's GEMMs stay small
        F = {k: (v[:, ::16] if k.startswith("X_") else v) for k, v in F.items()}
        F["X_db"], F["y_db"] = F["X_db"][:300], F["y_db"][:300]
    return F


def mnist(r, a):
    from vdsh_numba.search.metrics import evaluate_codes
    from vdsh_numba.pipeline.params import load_params
    require_cuda()
    p = load_params(ROOT / "params.yaml")
    F = mnist_features(a.data, p["seed"])
    r.save("data", {k: list(v.shape) for k, v in F.items() if k.startswith("X_")})
    kw = dict(bits=a.bits, depth=p["depth"], width=p["width"], seed=p["seed"], **p["vdsh"])
    if TINY:
        kw.update(depth=2, width=8, first_width=12, sweeps=2)
    r.save("params", kw)
    B = {}
    for backend in ("cuda", "cpu"):
        m, secs = timed_fit(backend, F["X_train"], F["y_train"], **kw)
        s, _ = evaluate_codes(m.encode(F["X_query"]), m.encode(F["X_db"]), F["y_query"], F["y_db"], a.bits)
        r.save(backend, {"mAP": s["map"], "train_s": secs, "s_per_sweep": secs / max(kw["sweeps"], 1),
                         "objective_last": m.history_[-1]["objective"]})
        B[backend] = m.B_train_
    r.save("train_codes_agree", float(np.mean(B["cuda"] == B["cpu"])))


def gemm_rate(n, repeats=3):
    from numba import cuda
    from vdsh_numba.methods.vdsh import cuda_ops
    rng = np.random.default_rng(0)
    A = cuda.to_device(rng.standard_normal((n, n)).astype(np.float32))
    B = cuda.to_device(rng.standard_normal((n, n)).astype(np.float32))
    C = cuda.device_array((n, n), np.float32)
    cuda_ops.gemm(A, B, C)
    cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        cuda_ops.gemm(A, B, C)
        cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return 2.0 * n ** 3 / min(ts) / 1e12


class GemmMeter:
    """Replaces ``cuda_ops.gemm`` (which the engine calls): synchronised seconds and flops."""

    def __init__(self, cuda_ops):
        from numba import cuda
        self.cuda, self.ops, self.orig, self.seconds, self.flops = cuda, cuda_ops, cuda_ops.gemm, 0.0, 0.0

    def __call__(self, A, B, out, transA=False, transB=False):
        K = A.shape[0] if transA else A.shape[1]
        self.cuda.synchronize()
        t = time.perf_counter()
        res = self.orig(A, B, out, transA, transB)
        self.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        self.flops += 2.0 * out.shape[0] * out.shape[1] * K
        return res

    def __enter__(self):
        self.ops.gemm = self
        return self

    def __exit__(self, *exc):
        self.ops.gemm = self.orig


def admm_sweep(r, a):
    from vdsh_numba.methods.vdsh import cuda_ops
    require_cuda()
    n, d, L, w = (60, 16, 3, 8) if TINY else (10_000, 512, 16, 1024)
    rate = gemm_rate(32 if TINY else 8192)
    r.save("gemm_rate_tflops", rate)
    X, y = synthetic(n, d, 10, 2)
    kw = dict(bits=64 if not TINY else 8, depth=L, width=w, first_width=0, seed=0)
    tiny = {**kw, "depth": 2, "width": 8, "sweeps": 1}
    timed_fit("cuda", X[:40], y[:40], **tiny)  # compile the kernels
    with GemmMeter(cuda_ops) as meter:
        g, _ = timed_fit("cuda", X, y, **kw, sweeps=2)
    gs = g.history_[1]["seconds"]
    r.save("cuda", {"n": n, "depth": L, "width": w, "sweep_s": gs, "dense_s": g.history_[1]["dense_seconds"],
                    "gemm_s_both_sweeps": meter.seconds,
                    "gemm_tflops": meter.flops / max(meter.seconds, 1e-12) / 1e12})
    timed_fit("cpu", X[:40], y[:40], **tiny)  # compile the CPU kernels
    c, _ = timed_fit("cpu", X, y, **kw, sweeps=1)
    cs = c.history_[0]["seconds"]
    r.save("cpu", {"sweep_s": cs, "dense_s": c.history_[0]["dense_seconds"]})
    r.save("ratio", {"cpu_over_cuda_sweep": cs / gs,
                     "cuda_gemm_rate_over_large_gemm": r.res["cuda"]["gemm_tflops"] / max(rate, 1e-12),
                     "objective_sweep1_cpu": c.history_[0]["objective"],
                     "objective_sweep1_cuda": g.history_[0]["objective"]})


def hamming(r, a):
    from vdsh_numba.search.hamming import HammingIndex
    require_cuda()
    rng = np.random.default_rng(1)
    n_db, nq, k = (300, 6, 10) if TINY else (1_000_000, 2_000, 1000)
    db = rng.integers(0, 256, (n_db, 8), dtype=np.uint8)
    qs = rng.integers(0, 256, (nq, 8), dtype=np.uint8)
    ic, ig = HammingIndex(64), HammingIndex(64, backend="cuda")
    ic.add(db)
    ig.add(db)
    ig.search(qs[:2], k)  # compile + copy the database
    ic.search(qs[:2], k)
    t = time.perf_counter()
    Dg, Ig = ig.search(qs, k)
    tg = time.perf_counter() - t
    t = time.perf_counter()
    Dc, Ic = ic.search(qs, k)
    tc = time.perf_counter() - t
    r.save("search", {"n_db": n_db, "nq": nq, "k": k, "bits": 64, "cpu_s": tc, "cuda_s": tg,
                      "cpu_over_cuda": tc / tg, "D_equal": bool((Dg == Dc).all()),
                      "I_equal": bool((Ig == Ic).all())})


STEPS = {"smoke": smoke, "mnist": mnist, "admm": admm_sweep, "hamming": hamming}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=sorted(STEPS))
    ap.add_argument("--out", default=os.environ.get("OUT", "reports"))
    ap.add_argument("--data", default=None, help="MNIST folder (default: shared/data/mnist, else ../shared/data/mnist)")
    ap.add_argument("--bits", type=int, default=32)
    a = ap.parse_args(argv)
    if a.data is None:
        cands = [ROOT / "shared/data/mnist", ROOT.parent / "shared/data/mnist"]
        a.data = str(next((c for c in cands if c.is_dir()), cands[-1]))
    if TINY:
        shrink_launch()
    STEPS[a.step](Results(a.out, a.step), a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
