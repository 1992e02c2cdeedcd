"""Quick experiment harness: fit VDSH on a protocol split, print mAP at checkpoints.

    python bench/exp.py mnist '{"depth":8,"sweeps":60,"bits":12}' [--every 10] [--seed 0]

mAP is over the whole Hamming ranking of the database (ties broken by database order), query
and database codes by a forward pass.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vdsh_numba.datasets import load_dataset  # noqa: E402
from vdsh_numba.features import build_features  # noqa: E402
from vdsh_numba.vdsh import VDSH  # noqa: E402


def mean_ap(Uq, Ud, yq, yd):
    """mAP over the whole Hamming ranking (sign codes, stable tie order)."""
    bq = np.where(Uq > 0, 1, -1).astype(np.int32)
    bd = np.where(Ud > 0, 1, -1).astype(np.int32)
    D = (bq.shape[1] - bq @ bd.T) // 2
    order = np.argsort(D, axis=1, kind="stable")
    rel = (yd[order] == yq[:, None]).astype(np.float64)
    c = np.cumsum(rel, axis=1)
    prec = c / np.arange(1, rel.shape[1] + 1)
    return float(((prec * rel).sum(1) / np.maximum(rel.sum(1), 1)).mean())


_CACHE = {}


def features(ds, seed=0):
    if (ds, seed) not in _CACHE:
        r = load_dataset(ds, "/work/shared/data/mnist", progress=False)
        qpc, tpc = (100, 500) if ds == "mnist" else (20, 100)
        _CACHE[ds, seed] = build_features(r.images, r.labels, r.info["max_value"], qpc, tpc, seed)
    return _CACHE[ds, seed]


def run(ds, kw, every=0, seed=0, verbose=True):
    """Fit and evaluate; returns a dict with mAP (and the checkpoint curve)."""
    kw = dict(kw)
    bits = kw.pop("bits", 12)
    F = features(ds)
    m = VDSH(bits, seed=seed, **kw)
    curve = []
    if every:
        def cb(it, mm):
            if (it + 1) % every == 0:
                curve.append((it + 1, round(mean_ap(mm._project(F["X_query"]), mm._project(F["X_db"]),
                                                   F["y_query"], F["y_db"]), 4)))
                if verbose:
                    h = mm.history_[-1]
                    print(f"  sweep {it+1}: mAP {curve[-1][1]} gap {h['forward_gap']:.3f} "
                          f"obj {h['objective']:.4f} agree {h['bit_agreement']:.3f} "
                          f"{h['seconds']:.2f}s", flush=True)
        m.on_sweep = cb
    t = time.time()
    m.fit(F["X_train"], F["y_train"])
    tt = time.time() - t
    mp = mean_ap(m.project(F["X_query"]), m.project(F["X_db"]), F["y_query"], F["y_db"])
    h = m.history_
    extra = {}
    if not m.train["final_refit"]:  # what the final output refit would give (no retraining)
        from vdsh_numba.vdsh import cpu_ops, forward
        from vdsh_numba.vdsh.engine import ridge
        Xc = m._clip(np.ascontiguousarray(F["X_train"], dtype=np.float32))
        a_top = forward(Xc, m.W_, m.b_, m.Wo_, m.bo_, m.train["residual"], keep=True)[1][-1]
        Wo, bo = m.Wo_, m.bo_
        m.Wo_, m.bo_ = ridge(cpu_ops, m.B_train_.astype(np.float32), a_top, 1.0, m.train["rho"], 0.0, Wo)
        extra["mAP_refit"] = round(mean_ap(m.project(F["X_query"]), m.project(F["X_db"]), F["y_query"], F["y_db"]), 4)
        m.Wo_, m.bo_ = Wo, bo
    out = {"ds": ds, "bits": bits, "seed": seed, **kw, "mAP": round(mp, 4), **extra, "train_s": round(tt, 1),
           "s_per_sweep": round(float(np.mean([x["seconds"] for x in h])), 3) if h else None,
           "gap_first": h[1]["forward_gap"] if len(h) > 1 else None,
           "gap_last": h[-1]["forward_gap"] if h else None,
           "obj_first": h[0]["objective"] if h else None, "obj_last": h[-1]["objective"] if h else None,
           "curve": curve}
    if verbose:
        print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("ds")
    ap.add_argument("kw", nargs="+")
    ap.add_argument("--every", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for k in a.kw:
        run(a.ds, json.loads(k), a.every, a.seed)
