"""The retrieval protocol (query / database / training split) and the feature vectors.

Protocols (docs/protocols.md): ``standard`` (per class, all draws from ``seed``):
``queries_per_class`` queries; the database is everything else; ``train_per_class`` training
items drawn from the database. For multi-label data (2-D 0/1 labels, NUS-WIDE) "per class" is
"per concept": for each concept in turn, that many items carrying it that are not drawn yet.
For a dataset with an official test set whose ``standard`` queries come from it
(``query_pool: test``, Fashion-MNIST): the queries are drawn per class from the test images, the
database is every training image, the training items are drawn from the database.
``test-train`` (CIFAR-10, Fashion-MNIST, full MNIST): the official test images are the queries, the
training images are both the database and the training set.
``validation: true`` (any protocol): the protocol's training items alone are cut into validation
queries (:func:`validation_indices`) and the rest, which is both the training set and the database;
the test queries are not touched. Hyperparameters are chosen on this split (docs/protocols.md).

Features: ``pixels`` (the raw values scaled to [0, 1]: pixels, or NUS-WIDE's published vectors)
or ``gist`` (:func:`vdsh_numba.data.gist.gist`, 512-d), standardized with the *training* items'
statistics only.
"""
from __future__ import annotations

import numpy as np

from .datasets import DATASETS
from .gist import gist

__all__ = ["gist", "split_indices", "Standardizer", "build_features",
           "resolve_protocol", "protocol_indices", "PROTOCOLS", "FEATURES", "check_split",
           "validation_indices", "VALIDATION_MAX_QUERIES_PER_CLASS"]

#: protocol names (params ``protocol.name``); ``standard`` when absent
PROTOCOLS = ("standard", "test-train")
#: feature kinds (params ``features``); ``pixels`` when absent
FEATURES = ("pixels", "gist")



#: at most this many validation queries per class (``protocol.validation``)
VALIDATION_MAX_QUERIES_PER_CLASS = 100


def resolve_protocol(dataset: str, protocol: dict) -> dict:
    out = dict(protocol)
    out["validation"] = bool(out.get("validation", False))
    if out.get("name") == "test-train":  # the official split: no per-class counts
        return {**out, "queries_per_class": None, "train_per_class": None}
    spec = DATASETS.get(dataset)  # the per-dataset ``auto`` values
    for k, v in (spec.protocol if spec is not None else {}).items():
        if out.get(k, "auto") in ("auto", None):
            out[k] = v
    return out


def split_indices(labels, queries_per_class: int, train_per_class: int, seed: int):
    """Return sorted ``(query_idx, db_idx, train_idx)``; ``train_idx`` is a subset of ``db_idx``.

    Labels are 1-D class ids. Raises ``ValueError`` naming the class when a class holds fewer
    than ``queries_per_class + train_per_class`` items. For 2-D 0/1 labels (multi-label) see
    :func:`_split_multilabel`.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return _split_multilabel(labels, queries_per_class, train_per_class, seed)
    rng = np.random.default_rng(seed)
    q, t = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        need = queries_per_class + train_per_class
        if members.size < need:
            raise ValueError(f"class {c} has {members.size} items, fewer than queries_per_class + "
                             f"train_per_class = {queries_per_class} + {train_per_class}; lower "
                             f"protocol.queries_per_class or protocol.train_per_class")
        perm = rng.permutation(members)
        q.append(perm[:queries_per_class])
        t.append(perm[queries_per_class:need])
    query_idx = np.sort(np.concatenate(q))
    train_idx = np.sort(np.concatenate(t))
    mask = np.ones(labels.shape[0], bool)
    mask[query_idx] = False
    db_idx = np.flatnonzero(mask)
    return query_idx, db_idx, train_idx


def _split_multilabel(labels, queries_per_class, train_per_class, seed):
    """Per concept (column) in order: ``queries_per_class`` queries drawn among the items that
    carry the concept and are not queries yet; then likewise ``train_per_class`` training items
    among the non-query items not drawn yet. So there are exactly ``C * queries_per_class``
    queries and ``C * train_per_class`` training items; an item may carry concepts other than the
    one it was drawn for. The database is every non-query item (rows without any concept too)."""
    Y = labels != 0
    n, C = Y.shape
    rng = np.random.default_rng(seed)
    taken = np.zeros(n, bool)
    out = []
    for count, what in ((queries_per_class, "queries"), (train_per_class, "training items")):
        picked = np.zeros(n, bool)
        for c in range(C):
            cand = np.flatnonzero(Y[:, c] & ~taken & ~picked)
            if cand.size < count:
                raise ValueError(f"concept {c} has {cand.size} items left for {what}, fewer than "
                                 f"{count} (queries_per_class = {queries_per_class}, "
                                 f"train_per_class = {train_per_class}); lower them in params.yaml")
            picked[rng.choice(cand, count, replace=False)] = True
        out.append(np.flatnonzero(picked))
        taken |= picked
    query_idx, train_idx = out
    db_mask = np.ones(n, bool)
    db_mask[query_idx] = False
    return query_idx, np.flatnonzero(db_mask), train_idx


def _official(info, what):
    sp = info.get("official_split")
    if not sp:
        raise ValueError(f"{what} needs the dataset's official train/test split; "
                         f"{info.get('dataset')!r} does not provide one here (use protocol 'standard')")
    return np.arange(*sp["train"]), np.arange(*sp["test"])


def validation_indices(labels, train_idx, seed: int):
    """Cut the training items ``train_idx`` into ``(query_idx, db_idx, train_idx)`` of validation.

    Per class (concept), ``v = min(VALIDATION_MAX_QUERIES_PER_CLASS, m // 5)`` validation queries
    are drawn (``m``: the smallest class among the training items; at least 1); the remaining
    training items are both the validation database and the training set. The draw uses
    ``seed + 1`` so that it is independent of the protocol's own draw.
    """
    labels = np.asarray(labels)
    sub = labels[train_idx]
    counts = sub.sum(axis=0) if sub.ndim == 2 else np.bincount(sub)[np.unique(sub)]
    v = max(1, min(VALIDATION_MAX_QUERIES_PER_CLASS, int(counts.min()) // 5))
    q, rest, _ = split_indices(sub, v, 0, seed + 1)
    return train_idx[q], train_idx[rest], train_idx[rest]


def protocol_indices(labels, protocol: dict, info: dict, seed: int):
    """``(query_idx, db_idx, train_idx)`` for a resolved protocol (:func:`resolve_protocol`)."""
    name = protocol.get("name") or "standard"
    if name == "standard" and protocol.get("query_pool", "all") == "test":
        train, test = _official(info, "protocol 'standard' with queries from the test set")
        q, _, _ = split_indices(labels[test], protocol["queries_per_class"], 0, seed)
        _, _, t = split_indices(labels[train], 0, protocol["train_per_class"], seed)
        out = test[q], train, train[t]
    elif name == "standard":
        out = split_indices(labels, protocol["queries_per_class"], protocol["train_per_class"], seed)
    elif name == "test-train":
        train, test = _official(info, "protocol 'test-train'")
        out = test, train, train
    else:
        raise ValueError(f"unknown protocol {name!r}; expected one of {list(PROTOCOLS)}")
    if protocol.get("validation"):
        out = validation_indices(labels, out[2], seed)
    return out


def check_split(y_query, y_db, y_train, where="the split") -> None:
    """Every class (concept) among the queries and the database has a training example.

    A model never shown a class cannot learn a code for it; its queries would be ranked by
    chance. Raises ``ValueError`` naming the classes and ``where``.
    """
    if y_train.ndim == 2:
        seen = np.flatnonzero(y_train.any(axis=0))
        used = np.flatnonzero(np.asarray(y_query).any(axis=0) | np.asarray(y_db).any(axis=0))
    else:
        seen = np.unique(y_train)
        used = np.union1d(np.unique(y_query), np.unique(y_db))
    missing = np.setdiff1d(used, seen)
    if missing.size:
        raise ValueError(f"{where}: class(es) {missing.tolist()} have queries or database items "
                         f"but no training example; raise protocol.train_per_class or fix the labels")


#: ``protocol.standardize`` values
SCALINGS = ("global", "column")


class Standardizer:
    """``(x - mean) / std`` with training statistics only.

    ``mode="global"`` (default): per-column means, one standard deviation over all training
    values. ``mode="column"``: per-column standard deviations, as scikit-learn's
    ``StandardScaler``; constant columns get std 1 (they map to 0 instead of dividing by zero).

    Notes
    -----
    Per-column scaling of pixels amplifies the near-constant border pixels: on the MNIST test
    split 39 training columns have a std below 0.01, so one stray database pixel there becomes a
    value in the thousands (max |x| = 3441 measured) and dominates distances, random projections
    and first layers. Global scaling keeps pixels' relative intensities; LSH, ITQ and SDH reach
    their published floors with it (docs/baselines.md), which they miss with per-column scaling.
    """

    def __init__(self, mode="global"):
        if mode not in SCALINGS:
            raise ValueError(f"standardize mode must be one of {SCALINGS}, got {mode!r}")
        self.mode = mode

    def fit(self, X):
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        if self.mode == "column":
            std = X.std(axis=0)
        else:
            std = np.full(X.shape[1], np.sqrt(((X - self.mean_) ** 2).mean()))
        self.constant_ = std < 1e-12
        self.std_ = np.where(self.constant_, 1.0, std)
        return self

    def transform(self, X):
        return ((np.asarray(X, dtype=np.float64) - self.mean_) / self.std_).astype(np.float32)


def build_features(images, labels, max_value, queries_per_class, train_per_class, seed, *,
                   features="pixels", indices=None, progress=False, standardize="global"):
    """Split and featurize. Returns a dict of arrays, ready to save as the features stage output.

    ``indices``: a ``(query_idx, db_idx, train_idx)`` split to use instead of the per-class one
    (:func:`protocol_indices`). ``features``: ``pixels`` (values / ``max_value``) or ``gist``
    (needs images ``(n, H, W)`` or ``(n, H, W, 3)``). 2-D labels are kept as 0/1 ``uint8``.
    """
    if features == "pixels":
        X = images.reshape(images.shape[0], -1).astype(np.float64) / float(max_value)
    elif features == "gist":
        if images.ndim not in (3, 4):
            raise ValueError(f"features 'gist' needs images (n, H, W[, 3]); these data are {images.shape} "
                             f"vectors (use features 'pixels')")
        X = gist(images, progress=progress)
    else:
        raise ValueError(f"unknown features {features!r}; expected one of {list(FEATURES)}")
    if labels.ndim == 2:
        labels = (labels != 0).astype(np.uint8)
    if indices is None:
        indices = split_indices(labels, queries_per_class, train_per_class, seed)
    query_idx, db_idx, train_idx = indices
    st = Standardizer(standardize).fit(X[train_idx])
    F = st.transform(X)
    return {
        "X_query": F[query_idx], "y_query": labels[query_idx],
        "X_db": F[db_idx], "y_db": labels[db_idx],
        "X_train": F[train_idx], "y_train": labels[train_idx],
        "query_idx": query_idx, "db_idx": db_idx, "train_idx": train_idx,
        "mean": st.mean_, "std": st.std_,
    }
