"""Checkpoints of VDSH training: the whole loop state in one ``.npz``, written atomically.

The file holds host arrays only (the engine copies device state down before saving and up
after loading) so a checkpoint does not depend on where its arrays lived, and a ``__meta__``
JSON string: sweep counter, penalties, the generator state, ``history_``, the elapsed seconds
and a fingerprint of the parameters and data that a resume must match.
"""
from __future__ import annotations

import json
import zlib

import numpy as np

from ...io import save_npz

__all__ = ["fingerprint", "save_checkpoint", "load_checkpoint"]


def fingerprint(params, X, y):
    """What a checkpoint must match to be resumed: ``params`` less the loop length and the
    checkpoint period, the data's shape and a CRC of ``X`` (as trained on) and ``y``."""
    p = {k: v for k, v in params.items() if k not in ("sweeps", "checkpoint_every")}
    return {"params": p, "shape": list(X.shape),
            "crc": int(zlib.crc32(np.ascontiguousarray(X).view(np.uint8).ravel())
                       ^ zlib.crc32(np.ascontiguousarray(y, dtype=np.int64).view(np.uint8).ravel()))}


def json_default(o):
    """``json.dumps`` ``default=`` for numpy scalars."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` (name -> host array) and ``meta`` (JSON-able) to ``path`` atomically."""
    save_npz(path, __meta__=np.str_(json.dumps(meta, default=json_default)), **arrays)


def load_checkpoint(path, fp):
    """``(arrays, meta)`` from ``path``; ``ValueError`` unless its fingerprint is ``fp``."""
    with np.load(path, allow_pickle=False) as d:
        meta = json.loads(str(d["__meta__"]))
        if meta["fingerprint"] != json.loads(json.dumps(fp, default=json_default)):
            raise ValueError(f"checkpoint {path} was written for other data or parameters; "
                             "remove it or pass another checkpoint_path")
        arrays = {k: d[k].copy() for k in d.files if k != "__meta__"}
    return arrays, meta
