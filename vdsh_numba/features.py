"""The retrieval protocol (query / database / training split) and the feature vectors.

Split (per class, all draws from ``seed``): ``queries_per_class`` queries; the database is
everything else; ``train_per_class`` training items drawn from the database. Features are the
pixels scaled to [0, 1] and standardized with the *training* items' statistics only.
"""
from __future__ import annotations

import numpy as np

from .gist import gist

__all__ = ["gist", "split_indices", "Standardizer", "build_features", "PROTOCOL_DEFAULTS",
           "resolve_protocol"]

#: per-dataset defaults used where params.yaml says ``auto``
PROTOCOL_DEFAULTS = {
    "digits": {"queries_per_class": 20, "train_per_class": 100},
    "mnist": {"queries_per_class": 100, "train_per_class": 500},
}


def resolve_protocol(dataset: str, protocol: dict) -> dict:
    out = dict(protocol)
    for k, v in PROTOCOL_DEFAULTS.get(dataset, {}).items():
        if out.get(k, "auto") in ("auto", None):
            out[k] = v
    return out


def split_indices(labels, queries_per_class: int, train_per_class: int, seed: int):
    """Return sorted ``(query_idx, db_idx, train_idx)``; ``train_idx`` is a subset of ``db_idx``.

    Labels are 1-D class ids. Raises ``ValueError`` naming the class when a class holds fewer
    than ``queries_per_class + train_per_class`` items.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    q, t = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        need = queries_per_class + train_per_class
        if members.size < need:
            raise ValueError(f"class {c} has {members.size} items, fewer than queries_per_class + "
                             f"train_per_class = {queries_per_class} + {train_per_class}")
        perm = rng.permutation(members)
        q.append(perm[:queries_per_class])
        t.append(perm[queries_per_class:need])
    query_idx = np.sort(np.concatenate(q))
    train_idx = np.sort(np.concatenate(t))
    mask = np.ones(labels.shape[0], bool)
    mask[query_idx] = False
    db_idx = np.flatnonzero(mask)
    return query_idx, db_idx, train_idx


class Standardizer:
    """Per-column ``(x - mean) / std`` with training statistics; constant columns get std 1
    (so they map to 0 instead of dividing by zero)."""

    def fit(self, X):
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.constant_ = std < 1e-12
        self.std_ = np.where(self.constant_, 1.0, std)
        return self

    def transform(self, X):
        return ((np.asarray(X, dtype=np.float64) - self.mean_) / self.std_).astype(np.float32)


def build_features(images, labels, max_value, queries_per_class, train_per_class, seed):
    """Split and featurize. Returns a dict of arrays, ready to save as the features stage output."""
    X = images.reshape(images.shape[0], -1).astype(np.float64) / float(max_value)
    query_idx, db_idx, train_idx = split_indices(labels, queries_per_class, train_per_class, seed)
    st = Standardizer().fit(X[train_idx])
    F = st.transform(X)
    return {
        "X_query": F[query_idx], "y_query": labels[query_idx],
        "X_db": F[db_idx], "y_db": labels[db_idx],
        "X_train": F[train_idx], "y_train": labels[train_idx],
        "query_idx": query_idx, "db_idx": db_idx, "train_idx": train_idx,
        "mean": st.mean_, "std": st.std_,
    }
