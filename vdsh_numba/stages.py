"""What each DVC stage does. ``pipeline/*.py`` and the ``vdsh`` command are thin wrappers.

Data flows one way: data/raw.npz -> data/features.npz -> models/<method>_<bits>.npz ->
codes/<method>_<bits>.npz -> reports/eval/<method>_<bits>.json -> reports/metrics.json.
Every output is written atomically (temp file + rename).
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from .io import save_npz, write_json, write_text

__all__ = ["RAW", "FEATURES", "model_path", "codes_path", "eval_path", "pr_path", "curve_path",
           "download", "features", "train", "encode", "evaluate", "report"]

RAW = Path("data/raw.npz")
FEATURES = Path("data/features.npz")


def model_path(method, bits):
    return Path("models") / f"{method}_{bits}.npz"


def codes_path(method, bits):
    return Path("codes") / f"{method}_{bits}.npz"


def eval_path(method, bits):
    return Path("reports/eval") / f"{method}_{bits}.json"


def pr_path(method, bits):
    return Path("reports/eval") / f"pr_{method}_{bits}.csv"


def curve_path(method, bits):
    return Path("reports/train") / f"{method}_{bits}.csv"


def _load(path, what):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the {what} stage first (dvc repro)")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


# --- download -----------------------------------------------------------------------------------
def download(params):
    from .datasets import load_dataset
    rd = load_dataset(params["dataset"], params["data_dir"], progress=True)
    if rd.info.get("subset") == "test-only":
        _say(f"{params['dataset']}: only the 10,000-image test set is available in "
             f"{params['data_dir']}: running on it alone (metrics record subset=test-only)")
    save_npz(RAW, images=rd.images, labels=rd.labels, info=np.str_(json.dumps(rd.info)))
    _say(f"download: {rd.info['n']} items of {params['dataset']} -> {RAW}")


# --- features -----------------------------------------------------------------------------------
def features(params):
    from .features import build_features, protocol_indices, resolve_protocol
    raw = _load(RAW, "download")
    info = json.loads(str(raw["info"]))
    proto = resolve_protocol(params["dataset"], params.get("protocol") or {})
    kind = params.get("features", "pixels")
    idx = protocol_indices(raw["labels"], proto, info, params["seed"])
    F = build_features(raw["images"], raw["labels"], info["max_value"], proto["queries_per_class"],
                       proto["train_per_class"], params["seed"], features=kind, indices=idx,
                       progress=True, standardize=proto.get("standardize", "global"))
    info = {**info, "protocol": proto, "features": kind, "n_query": int(F["y_query"].shape[0]),
            "n_db": int(F["y_db"].shape[0]), "n_train": int(F["y_train"].shape[0])}
    save_npz(FEATURES, info=np.str_(json.dumps(info)), **F)
    _say(f"features: {info['n_query']} queries, {info['n_db']} database, {info['n_train']} training "
         f"({F['X_train'].shape[1]} features) -> {FEATURES}")


# --- train --------------------------------------------------------------------------------------
def train(params, method, bits):
    from .base import make_method
    F = _load(FEATURES, "features")
    model = make_method(method, bits, params)
    model.fit(F["X_train"], F["y_train"])
    model.save(model_path(method, bits))
    hist = getattr(model, "history_", [])
    cols = [k for k in (hist[0] if hist else {}) if not isinstance(hist[0][k], (list, dict))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols or ["iteration"], extrasaction="ignore")
    w.writeheader()
    for row in hist:
        w.writerow(row)
    write_text(curve_path(method, bits), buf.getvalue())
    _say(f"train: {method} {bits} bits in {model.train_seconds_:.1f} s -> {model_path(method, bits)}")


# --- encode -------------------------------------------------------------------------------------
def encode(params, method, bits):
    from .base import load_model
    F = _load(FEATURES, "features")
    model = load_model(model_path(method, bits))
    save_npz(codes_path(method, bits), query=model.encode(F["X_query"]), db=model.encode(F["X_db"]),
             bits=np.int64(bits), train_seconds=np.float64(model.train_seconds_),
             backend=np.str_(getattr(model, "backend", "cpu")))
    _say(f"encode: {method} {bits} bits -> {codes_path(method, bits)}")


# --- evaluate -----------------------------------------------------------------------------------
def evaluate(params, method, bits):
    from .metrics import evaluate_codes
    F = _load(FEATURES, "features")
    C = _load(codes_path(method, bits), "encode")
    ev = params.get("evaluate") or {}
    scalars, pr = evaluate_codes(C["query"], C["db"], F["y_query"], F["y_db"], int(bits),
                                 radius=int(ev.get("radius", 2)), topk=ev.get("topk"))
    info = json.loads(str(F["info"]))
    out = {**{k: float(v) for k, v in scalars.items()}, "train_seconds": float(C["train_seconds"]),
           "backend": str(C["backend"]), "dataset": info["dataset"], "subset": info.get("subset", "full"),
           "n_query": info["n_query"], "n_db": info["n_db"], "n_train": info["n_train"]}
    write_json(eval_path(method, bits), out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["radius", "precision", "recall"], extrasaction="ignore")
    w.writeheader()
    for row in pr:
        w.writerow(row)
    write_text(pr_path(method, bits), buf.getvalue())
    _say(f"evaluate: {method} {bits} bits mAP {out['map']:.4f} -> {eval_path(method, bits)}")


# --- report -------------------------------------------------------------------------------------
def report(params):
    from .report import write_report
    write_report(params)
