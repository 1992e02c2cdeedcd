"""Stage ``encode``: packed codes of the queries and the database -> ``codes/<method>_<bits>.npz``."""
from __future__ import annotations

import numpy as np

from ..methods.base import load_model
from ..codes import code_bytes
from ..io import save_npz
from .common import ENCODE_ROWS, check_finite, dask_client, load_output, say
from .layout import Layout
from .params import as_config

__all__ = ["run", "encode_rows"]


def encode_rows(model, X):
    """Packed codes of ``X``, ``ENCODE_ROWS`` rows per forward pass."""
    out = np.empty((X.shape[0], code_bytes(model.bits)), dtype=np.uint8)
    for s in range(0, X.shape[0], ENCODE_ROWS):
        out[s:s + ENCODE_ROWS] = model.encode(X[s:s + ENCODE_ROWS])
    return out


def run(params, method, bits, layout=Layout()):
    params = as_config(params)
    F = load_output(layout.features, "features", ("X_query", "X_db"))
    for part in ("X_query", "X_db"):
        check_finite(F[part], f"{layout.features}: {part}")
    model = load_model(layout.model(method, bits))
    dask = dask_client(params)
    if dask is None:
        db = encode_rows(model, F["X_db"])
    else:  # the database shard by shard on the workers, the model broadcast once
        import dask.array as da
        from ..search.distributed import encode_sharded
        client, close, shards = dask
        try:
            X = da.from_array(F["X_db"], chunks=(max(1, -(-F["X_db"].shape[0] // shards)), -1))
            futs, _ = encode_sharded(model, X, client)
            db = np.ascontiguousarray(np.concatenate(client.gather(futs)))
        finally:
            close()
    save_npz(layout.codes(method, bits), query=encode_rows(model, F["X_query"]), db=db,
             bits=np.int64(bits), train_seconds=np.float64(model.train_seconds_),
             backend=np.str_(getattr(model, "backend", "cpu")))
    say(f"encode: {method} {bits} bits -> {layout.codes(method, bits)}")
