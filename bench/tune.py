"""Tuning on the validation split of docs/protocols.md ("Tuning budget"), never on the queries.

    python bench/tune.py vdsh_backprop --depth 8 --bits 12,32 --grid '{"lr": [1e-4, 3e-4, 1e-3]}'

The split: the protocol's MNIST training set (500 images per class, drawn from the database
with params ``seed``) is cut per class into 100 validation queries and 400 images that are
both the training set and the validation database, standardized with their own statistics
(``vdsh_numba.features.build_features`` on that subset). Every setting of the grid (the
product of the lists) is fitted once per code length with the method's params.yaml defaults
(``baselines:`` / ``train:``) overridden by the setting, and scored by mAP over the whole
ranking (ties by index) with the project's evaluator. Each result is printed and appended to
reports/tuning.jsonl.
"""
import argparse
import itertools
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from vdsh_numba import metrics  # noqa: E402
from vdsh_numba.base import make_method  # noqa: E402
from vdsh_numba.datasets import load_dataset  # noqa: E402
from vdsh_numba.features import build_features, split_indices  # noqa: E402
from vdsh_numba.params import load_params  # noqa: E402

RUNS = os.path.join(ROOT, "reports", "tuning.jsonl")


def validation_split(data_dir, seed=0, queries_per_class=100, train_per_class=500):
    """Validation features carved from the protocol's training images (see the module doc)."""
    r = load_dataset("mnist", data_dir, progress=False)
    _, _, train_idx = split_indices(r.labels, queries_per_class, train_per_class, seed)
    imgs, labs = r.images[train_idx], r.labels[train_idx]
    per = train_per_class - queries_per_class
    return build_features(imgs, labs, r.info["max_value"], queries_per_class, per, seed)


def _commit():
    import subprocess
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() or None


def with_setting(params, method, depth, width, setting):
    """params.yaml with depth/width and the method's section (train: or baselines:) overridden."""
    p = json.loads(json.dumps(params))
    p["depth"], p["width"] = depth, width
    section = p["train"] if method == "vdsh" else p["baselines"].setdefault(method, {})
    section.update(setting)
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("method")
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--bits", default="12,32")
    ap.add_argument("--grid", default="{}", help="JSON: parameter -> list of values")
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist"))
    a = ap.parse_args()
    params = load_params(os.path.join(ROOT, "params.yaml"))
    depth = params["depth"] if a.depth is None else a.depth
    width = params["width"] if a.width is None else a.width
    F = validation_split(a.data_dir, params["seed"])
    assert len(np.intersect1d(F["query_idx"], F["db_idx"])) == 0
    grid = json.loads(a.grid)
    keys = sorted(grid)
    for values in itertools.product(*[grid[k] for k in keys]):
        setting = dict(zip(keys, values))
        for bits in [int(b) for b in a.bits.split(",")]:
            m = make_method(a.method, bits, with_setting(params, a.method, depth, width, setting))
            t = time.perf_counter()
            m.fit(F["X_train"], F["y_train"])
            secs = time.perf_counter() - t
            q, db = m.encode(F["X_query"]), m.encode(F["X_db"])
            mp = metrics.mean_average_precision(q, db, F["y_query"], F["y_db"], bits=bits)
            rec = {"method": a.method, "split": "validation (100 q / 400 train=db per class)",
                   "commit": _commit(),
                   "depth": depth, "width": width, "bits": bits, **setting,
                   "val_mAP": round(mp, 4), "train_seconds": round(secs, 1)}
            print(json.dumps(rec), flush=True)
            with open(RUNS, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
