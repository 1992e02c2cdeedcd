"""Bring your own features: a dataset given as one ``.npz`` file (``dataset: npz``,
``data_dir: path/to/file.npz``).

The file holds ``X`` (``n x d`` real feature vectors, used as given and standardized with the
training items' statistics like every dataset), ``y`` (``n`` integer class ids, or an ``n x C``
0/1 label matrix for multi-label data: relevance = at least one shared label) and optionally
``test`` (``n`` booleans: the official test rows, the queries of ``protocol.name: test-train``;
with it the ``standard`` protocol still draws from all rows). Rows are stored training rows
first, then test rows (``info["official_split"]``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .raw import DataError, RawDataset

__all__ = ["load_npz"]


def load_npz(data_dir, progress=False) -> RawDataset:
    path = Path(data_dir)
    if path.is_dir() or path.suffix != ".npz":
        raise DataError(f"dataset 'npz' reads one .npz file: set data_dir to its path (got {path})")
    if not path.exists():
        raise DataError(f"{path} does not exist; dataset 'npz' needs a file with X (n x d) and y")
    try:
        with np.load(path, allow_pickle=False) as f:
            parts = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot be read as .npz ({e})") from e
    missing = [k for k in ("X", "y") if k not in parts]
    if missing:
        raise DataError(f"{path}: array(s) {missing} missing; expected X (n x d features), "
                        f"y (n class ids or n x C 0/1 labels) and optionally test (n booleans)")
    X, y = parts["X"], parts["y"]
    if X.ndim != 2 or X.dtype.kind not in "fiu" or X.shape[0] == 0:
        raise DataError(f"{path}: X must be a non-empty 2-D real array, got {X.dtype} {X.shape}")
    if y.shape[0] != X.shape[0] or y.ndim not in (1, 2):
        raise DataError(f"{path}: y has shape {y.shape}; expected ({X.shape[0]},) class ids or "
                        f"({X.shape[0]}, C) 0/1 labels")
    if y.ndim == 1 and y.dtype.kind not in "iu":
        raise DataError(f"{path}: y must hold integer class ids, got dtype {y.dtype}")
    info = {"dataset": "npz", "source": str(path), "n": int(X.shape[0]), "shape": [int(X.shape[1])],
            "max_value": 1, "subset": "full", "kind": "vectors"}
    if "test" in parts:
        t = parts["test"]
        if t.dtype != np.bool_ or t.shape != (X.shape[0],):
            raise DataError(f"{path}: test must be {X.shape[0]} booleans, got {t.dtype} {t.shape}")
        order = np.concatenate([np.flatnonzero(~t), np.flatnonzero(t)])
        X, y = X[order], y[order]
        n_train = int((~t).sum())
        info["official_split"] = {"train": [0, n_train], "test": [n_train, int(X.shape[0])]}
    X = X.astype(np.float64) if X.dtype.kind in "iu" else X
    return RawDataset(np.ascontiguousarray(X), np.asarray(y, dtype=np.int64 if y.ndim == 1 else np.uint8),
                      info)
