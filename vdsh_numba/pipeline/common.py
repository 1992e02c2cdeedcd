"""What several stages share: loading a stage's output, the finite/label checks, messages."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

__all__ = ["load_output", "check_finite", "check_features_file", "say", "dask_client", "row_shards",
           "ENCODE_ROWS"]

#: rows encoded (and scanned for NaN/Inf) at a time: the float64 copy of the input and the
#: forward pass's buffers stay O(ENCODE_ROWS x max(n_features, width)) whatever the database
#: size, and an ``np.memmap`` database is read chunk by chunk
ENCODE_ROWS = 8192


def say(msg) -> None:
    """A progress line on stderr (stdout stays free for the commands' own output)."""
    print(msg, file=sys.stderr, flush=True)


def load_output(path, what, keys=None) -> dict:
    """The arrays of an earlier stage's ``.npz`` output (``keys``: only those); a missing file
    names the stage that makes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the {what} stage first (dvc repro)")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if keys is None or k in keys}


def check_finite(X, name) -> None:
    """``X`` is a 2-D real array without NaN/Inf (scanned in row chunks: no float64 copy)."""
    if X.ndim != 2 or X.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a 2-D real array, got {X.dtype} of shape {X.shape}")
    for s in range(0, X.shape[0], ENCODE_ROWS):
        bad = ~np.isfinite(X[s:s + ENCODE_ROWS])
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"{name} contains NaN or Inf (first at row {s + r}, column {c}); "
                             f"fix the raw data and rerun the features stage")


def check_features_file(F, where) -> None:
    """The loaded parts of the features file ``where``: finite features, valid labels, and every
    class among queries and database trained on."""
    from ..methods.base import check_labels
    from ..data.features import check_split
    for part in ("query", "db", "train"):
        if f"X_{part}" in F:
            check_finite(F[f"X_{part}"], f"{where}: X_{part}")
            check_labels(F[f"y_{part}"], F[f"X_{part}"].shape[0], f"{where}: y_{part}")
    check_split(F["y_query"], F["y_db"], F["y_train"], str(where))


def dask_client(params):
    """``(client, close, shards)`` when ``evaluate.scheduler`` is ``distributed``, else ``None``."""
    ev = params["evaluate"]
    if ev["scheduler"] != "distributed":
        return None
    from ..search.distributed import get_client
    client, close = get_client(ev["address"])
    say(f"dask: {'scheduler ' + ev['address'] if ev['address'] else 'LocalCluster'} "
        f"with {len(client.scheduler_info()['workers'])} workers")
    return client, close, ev["shards"]


def row_shards(n, shards):
    """``shards`` contiguous ``(start, end)`` row ranges covering ``n`` rows (none empty)."""
    edges = np.linspace(0, n, min(shards, max(n, 1)) + 1).astype(int)
    return [(s, e) for s, e in zip(edges[:-1], edges[1:]) if e > s]
