"""What each DVC stage does. ``pipeline/*.py`` and the ``vdsh`` command are thin wrappers.

Data flows one way: data/raw.npz -> data/features.npz -> models/<method>_<bits>.npz ->
codes/<method>_<bits>.npz -> reports/eval/<method>_<bits>.json -> reports/metrics.json.
Every output is written atomically (temp file + rename), and every input is checked before
any output is written: a refused input leaves the stage's outputs as they were.
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
           "download", "features", "train", "encode", "evaluate", "report", "check_data"]

RAW = Path("data/raw.npz")
FEATURES = Path("data/features.npz")
#: rows encoded (and scanned for NaN/Inf) at a time: the float64 copy of the input and the
#: forward pass's buffers stay O(ENCODE_ROWS x max(n_features, width)) whatever the database
#: size, and an ``np.memmap`` database is read chunk by chunk
ENCODE_ROWS = 8192


def model_path(method, bits):
    return Path("models") / f"{method}_{bits}.npz"


def codes_path(method, bits):
    return Path("codes") / f"{method}_{bits}.npz"


def eval_path(method, bits):
    return Path("reports/eval") / f"{method}_{bits}.json"


def pr_path(method, bits):
    return Path("reports/eval") / f"pr_{method}_{bits}.csv"


def checkpoint_path(method, bits):
    """Training checkpoints live outside DVC's outputs (DVC deletes a stage's outputs before
    rerunning it, which would throw the checkpoint away); removed once the model is saved."""
    return Path(".checkpoints") / f"{method}_{bits}.npz"


def curve_path(method, bits):
    return Path("reports/train") / f"{method}_{bits}.csv"


def _load(path, what, keys=None):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the {what} stage first (dvc repro)")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if keys is None or k in keys}


def _check_finite(X, name):
    """``X`` is a 2-D real array without NaN/Inf (scanned in row chunks: no float64 copy)."""
    if X.ndim != 2 or X.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a 2-D real array, got {X.dtype} of shape {X.shape}")
    for s in range(0, X.shape[0], ENCODE_ROWS):
        bad = ~np.isfinite(X[s:s + ENCODE_ROWS])
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"{name} contains NaN or Inf (first at row {s + r}, column {c}); "
                             f"fix the raw data and rerun the features stage")


def _check_features_file(F):
    """The loaded parts of the features file: finite features, valid labels, and every class
    among queries and database trained on."""
    from .base import check_labels
    from .features import check_split
    for part in ("query", "db", "train"):
        if f"X_{part}" in F:
            _check_finite(F[f"X_{part}"], f"{FEATURES}: X_{part}")
            check_labels(F[f"y_{part}"], F[f"X_{part}"].shape[0], f"{FEATURES}: y_{part}")
    check_split(F["y_query"], F["y_db"], F["y_train"], str(FEATURES))


def _encode_rows(model, X):
    """Packed codes of ``X``, ``ENCODE_ROWS`` rows per forward pass."""
    from .codes import code_bytes
    out = np.empty((X.shape[0], code_bytes(model.bits)), dtype=np.uint8)
    for s in range(0, X.shape[0], ENCODE_ROWS):
        out[s:s + ENCODE_ROWS] = model.encode(X[s:s + ENCODE_ROWS])
    return out


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


# --- download -----------------------------------------------------------------------------------
def download(params):
    from .datasets import check_raw, load_dataset
    rd = load_dataset(params["dataset"], params["data_dir"], progress=True)
    check_raw(rd.images, rd.labels, rd.info, f"{params['dataset']} in {params['data_dir']}")
    if rd.info.get("subset") == "test-only":
        _say(f"{params['dataset']}: only the 10,000-image test set is available in "
             f"{params['data_dir']}: running on it alone (metrics record subset=test-only)")
    save_npz(RAW, images=rd.images, labels=rd.labels, info=np.str_(json.dumps(rd.info)))
    _say(f"download: {rd.info['n']} items of {params['dataset']} -> {RAW}")


# --- features -----------------------------------------------------------------------------------
def features(params):
    from .datasets import check_raw
    from .features import build_features, check_split, protocol_indices, resolve_protocol
    raw = _load(RAW, "download")
    info = json.loads(str(raw["info"]))
    check_raw(raw["images"], raw["labels"], info, str(RAW))
    proto = resolve_protocol(params["dataset"], params.get("protocol") or {})
    kind = params.get("features", "pixels")
    idx = protocol_indices(raw["labels"], proto, info, params["seed"])
    F = build_features(raw["images"], raw["labels"], info["max_value"], proto["queries_per_class"],
                       proto["train_per_class"], params["seed"], features=kind, indices=idx,
                       progress=True, standardize=proto.get("standardize", "global"))
    check_split(F["y_query"], F["y_db"], F["y_train"], f"the {proto.get('name', 'standard')} split")
    info = {**info, "protocol": proto, "features": kind, "n_query": int(F["y_query"].shape[0]),
            "n_db": int(F["y_db"].shape[0]), "n_train": int(F["y_train"].shape[0])}
    save_npz(FEATURES, info=np.str_(json.dumps(info)), **F)
    _say(f"features: {info['n_query']} queries, {info['n_db']} database, {info['n_train']} training "
         f"({F['X_train'].shape[1]} features) -> {FEATURES}")


# --- train --------------------------------------------------------------------------------------
def train(params, method, bits):
    from .base import make_method
    from .memory import check_training_memory
    F = _load(FEATURES, "features", ("X_train", "y_train", "y_query", "y_db"))
    _check_features_file(F)
    model = make_method(method, bits, params)
    (n, d), y = F["X_train"].shape, F["y_train"]
    check_training_memory(method, n, d, params["depth"], params["width"], bits,
                          y.shape[1] if y.ndim == 2 else int(y.max(initial=0)) + 1,
                          first_width=(params.get("train") or {}).get("first_width"))
    from threadpoolctl import threadpool_limits
    ck = checkpoint_path(method, bits) if (params.get("train") or {}).get("checkpoint_every", 0) and \
        method == "vdsh" else None
    with threadpool_limits(limits=blas_threads(method, n, params["width"])):
        if ck is None:
            model.fit(F["X_train"], F["y_train"])
        else:  # resumes from the checkpoint a killed run left behind
            ck.parent.mkdir(parents=True, exist_ok=True)
            model.fit(F["X_train"], F["y_train"], checkpoint_path=ck)
    model.save(model_path(method, bits))
    if ck is not None:
        ck.unlink(missing_ok=True)
    hist = getattr(model, "history_", [])
    cols = [k for k in (hist[0] if hist else {}) if not isinstance(hist[0][k], (list, dict))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols or ["iteration"], extrasaction="ignore")
    w.writeheader()
    for row in hist:
        w.writerow(row)
    write_text(curve_path(method, bits), buf.getvalue())
    _say(f"train: {method} {bits} bits in {model.train_seconds_:.1f} s -> {model_path(method, bits)}")


def blas_threads(method, n, width):
    """BLAS threads for training: 1 where every product is small (the minibatch methods, and
    VDSH with ``n * width**2`` below ``config.BLAS_SMALL_PRODUCT``), else the library default.

    Waking BLAS threads for small products costs more than it saves: VDSH on digits
    (1,000 x 256) ran 0.20 s per sweep with one OpenBLAS thread against 0.69 s with two.
    """
    from . import config
    if method == "vdsh" and n * width * width >= config.BLAS_SMALL_PRODUCT:
        return None
    return 1


# --- encode -------------------------------------------------------------------------------------
def _dask(params):
    """``(client, close, shards)`` when ``evaluate.scheduler`` is ``distributed``, else ``None``."""
    ev = params.get("evaluate") or {}
    if ev.get("scheduler", "local") != "distributed":
        return None
    from .distributed import get_client
    client, close = get_client(ev.get("address"))
    _say(f"dask: {'scheduler ' + ev['address'] if ev.get('address') else 'LocalCluster'} "
         f"with {len(client.scheduler_info()['workers'])} workers")
    return client, close, int(ev.get("shards", 4))


def _row_shards(n, shards):
    edges = np.linspace(0, n, min(shards, max(n, 1)) + 1).astype(int)
    return [(s, e) for s, e in zip(edges[:-1], edges[1:]) if e > s]


def encode(params, method, bits):
    from .base import load_model
    F = _load(FEATURES, "features", ("X_query", "X_db"))
    for part in ("X_query", "X_db"):
        _check_finite(F[part], f"{FEATURES}: {part}")
    model = load_model(model_path(method, bits))
    dask = _dask(params)
    if dask is None:
        db = _encode_rows(model, F["X_db"])
    else:  # the database shard by shard on the workers, the model broadcast once
        import dask.array as da
        from .distributed import encode_sharded
        client, close, shards = dask
        try:
            X = da.from_array(F["X_db"], chunks=(max(1, -(-F["X_db"].shape[0] // shards)), -1))
            futs, _ = encode_sharded(model, X, client)
            db = np.ascontiguousarray(np.concatenate(client.gather(futs)))
        finally:
            close()
    save_npz(codes_path(method, bits), query=_encode_rows(model, F["X_query"]), db=db,
             bits=np.int64(bits), train_seconds=np.float64(model.train_seconds_),
             backend=np.str_(getattr(model, "backend", "cpu")))
    _say(f"encode: {method} {bits} bits -> {codes_path(method, bits)}")


# --- evaluate -----------------------------------------------------------------------------------
def evaluate(params, method, bits):
    from .metrics import evaluate_codes
    F = _load(FEATURES, "features")
    C = _load(codes_path(method, bits), "encode")
    ev = params.get("evaluate") or {}
    dask = _dask(params)
    if dask is None:
        scalars, pr = evaluate_codes(C["query"], C["db"], F["y_query"], F["y_db"], int(bits),
                                     radius=int(ev.get("radius", 2)), topk=ev.get("topk"))
    else:  # one HammingIndex per shard on the workers; rankings merged exactly
        from .distributed import ShardedHammingIndex
        client, close, shards = dask
        try:
            index = ShardedHammingIndex(int(bits), client)
            for s, e in _row_shards(C["db"].shape[0], shards):
                index.add(C["db"][s:e], labels=F["y_db"][s:e])
            scalars, pr = index.evaluate(C["query"], F["y_query"], radius=int(ev.get("radius", 2)))
            scalars["scheduler"] = "distributed"
            scalars["shards"] = index.nshards
        finally:
            close()
    info = json.loads(str(F["info"]))
    out = {**{k: (v if isinstance(v, str) else float(v)) for k, v in scalars.items()}, "train_seconds": float(C["train_seconds"]),
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


# --- check (no stage: `vdsh check`) ---------------------------------------------------------------
def check_data(params):
    """The data checks of ``vdsh check``, on whatever data is already there; writes nothing.

    Raw data (``data/raw.npz``, or the embedded digits set when it is not there yet): one
    label per image, finite values, labels inside the declared classes, and the protocol's
    per-class counts fit every class. Features (``data/features.npz`` when present): finite
    values, valid labels, every class among queries and database has a training example.

    Returns
    -------
    problems : list of str
        What is wrong (empty when everything checked is fine).
    checked : list of str
        What was checked, or skipped and why.
    """
    from .datasets import DataError, check_raw, load_dataset
    from .features import protocol_indices, resolve_protocol
    problems, checked = [], []
    raw = None
    if RAW.exists():
        raw = _load(RAW, "download")
        info, where = json.loads(str(raw["info"])), str(RAW)
        if info.get("dataset") != params["dataset"]:
            checked.append(f"{RAW} holds {info.get('dataset')!r}, params say {params['dataset']!r}: "
                           f"not checked (the download stage will replace it)")
            raw = None
    elif params["dataset"] == "digits":
        rd = load_dataset("digits", None, progress=False)
        raw, info, where = {"images": rd.images, "labels": rd.labels}, rd.info, "digits (embedded)"
    else:
        checked.append(f"{RAW} not found: raw data not checked (run the download stage first)")
    if raw is not None:
        try:
            check_raw(raw["images"], raw["labels"], info, where)
            proto = resolve_protocol(params["dataset"], params.get("protocol") or {})
            q, db, tr = protocol_indices(raw["labels"], proto, info, params["seed"])
            checked.append(f"{where}: {len(raw['labels'])} items; protocol "
                           f"{proto.get('name', 'standard')} gives {len(q)} queries, {len(db)} "
                           f"database, {len(tr)} training")
        except (DataError, ValueError) as e:
            problems.append(str(e) if str(e).startswith(where) else f"{where}: {e}")
    if FEATURES.exists():
        try:
            _check_features_file(_load(FEATURES, "features"))
            checked.append(f"{FEATURES}: finite features, valid labels, every class trained on")
        except (TypeError, ValueError) as e:
            problems.append(str(e))
    return problems, checked
