"""Cost of one VDSH ADMM sweep: linear in depth, <= quadratic in width, close to the BLAS floor.

    python bench/admm.py                 # full: n=5000, depth {8,16,32,64} x 256, width {256,512,1024} x 8,
                                         #       and depth 64 x width 1024 against its dense products
    python bench/admm.py --quick         # n=1000, smaller grid (smoke test)

Inputs are random (the cost does not depend on the data); every fit runs ``--sweeps`` sweeps
and the seconds of all but the first sweep are averaged. "dense" is the time of the sweep's
BLAS/LAPACK calls alone (matrix products, Gram matrices, Cholesky solves) accumulated inside
the sweep (``history_[i]['dense_seconds']``); the ratio sweep / dense says how far the whole
iteration is above the BLAS floor.

On a shared machine run it single-threaded (``NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``):
with more runnable threads than cores every ``prange`` kernel waits for all its threads to be
scheduled, and a depth-16 sweep measured 17 s with 2 threads vs 1.5 s with 1 (load average ~12).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vdsh_numba.methods.vdsh import VDSH  # noqa: E402


def sweep_seconds(n, d, depth, width, sweeps, bits=32, seed=0, first_width=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 10, n)
    m = VDSH(bits, depth=depth, width=width, seed=seed, sweeps=sweeps, first_width=first_width).fit(X, y)
    h = m.history_[1:] if len(m.history_) > 1 else m.history_
    return float(np.mean([x["seconds"] for x in h])), float(np.mean([x["dense_seconds"] for x in h]))


def linfit(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    A = np.c_[x, np.ones_like(x)]
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    r2 = 1 - ((y - A @ coef) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return coef, float(r2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--d", type=int, default=784)
    ap.add_argument("--sweeps", type=int, default=3)
    ap.add_argument("--depths", default="8,16,32,64")
    ap.add_argument("--widths", default="256,512,1024")
    ap.add_argument("--width-depth", type=int, default=8, help="depth of the width scan")
    ap.add_argument("--floor", default="64x1024", help="depth x width of the BLAS-floor check ('' skips)")
    ap.add_argument("--floor-n", type=int, default=0, help="samples of the BLAS-floor check (0: --n)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the measurements here")
    a = ap.parse_args()
    if a.quick:
        a.n, a.depths, a.widths, a.floor, a.width_depth = 1000, "2,4,8", "64,128,256", "8x256", 4
    out = {"n": a.n, "depth": [], "width": []}
    depths = [int(v) for v in a.depths.split(",") if v]
    for L in depths:
        s, dn = sweep_seconds(a.n, a.d, L, 256, a.sweeps)
        out["depth"].append({"depth": L, "width": 256, "seconds": s, "dense_seconds": dn})
        print(f"depth {L:3d} x width 256: {s:8.3f} s/sweep (dense {dn:.3f} s)", flush=True)
    (slope, icpt), r2 = linfit(depths, [r["seconds"] for r in out["depth"]])
    print(f"fit seconds/sweep = {slope:.4f} * depth + {icpt:.4f}   R^2 = {r2:.4f}", flush=True)
    out["depth_fit"] = {"slope": slope, "intercept": icpt, "r2": r2}
    widths = [int(v) for v in a.widths.split(",") if v]
    for w in widths:
        s, dn = sweep_seconds(a.n, a.d, a.width_depth, w, a.sweeps)
        out["width"].append({"depth": a.width_depth, "width": w, "seconds": s, "dense_seconds": dn})
        print(f"depth {a.width_depth:3d} x width {w:4d}: {s:8.3f} s/sweep (dense {dn:.3f} s)", flush=True)
    k, lc = np.polyfit(np.log(widths), np.log([r["seconds"] for r in out["width"]]), 1)
    print(f"fit seconds/sweep ~ width^{k:.3f}   (goal: exponent <= 2)", flush=True)
    out["width_fit"] = {"exponent": float(k)}
    if a.floor:
        L, w = (int(v) for v in a.floor.split("x"))
        fn = a.floor_n or a.n
        s, dn = sweep_seconds(fn, a.d, L, w, a.sweeps)
        print(f"BLAS floor, depth {L} x width {w}, n={fn}: {s:.3f} s/sweep, dense products alone "
              f"{dn:.3f} s, ratio {s / dn:.3f}   (goal <= 1.5)", flush=True)
        out["floor"] = {"n": fn, "depth": L, "width": w, "seconds": s, "dense_seconds": dn, "ratio": s / dn}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
