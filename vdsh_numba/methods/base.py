"""The contract every hashing method follows, and the registry that names them.

scikit-learn conventions (as umap does): ``__init__`` stores hyperparameters only,
``fit`` validates and returns ``self``, fitted state ends in ``_``, models save to
``.npz`` (never pickle). A method maps feature vectors to ``bits`` real outputs
(:meth:`HashingModel.project`); its hash code is their sign, packed by
:func:`vdsh_numba.codes.pack_codes`.
"""
from __future__ import annotations

import json
import time

import numpy as np

from ..codes import pack_codes
from ..io import save_npz

__all__ = ["HashingModel", "register", "METHODS", "make_method", "load_model",
           "check_features", "check_labels", "label_matrix"]

#: name -> class; filled by :func:`register` when :mod:`vdsh_numba.methods` imports the methods
#: (a package's ``__init__`` runs before any of its modules, so the registry is always full)
METHODS: dict[str, type] = {}


def register(name):
    """Class decorator: make a :class:`HashingModel` subclass available as method ``name``."""
    def deco(cls):
        cls.method_name = name
        METHODS[name] = cls
        return cls
    return deco


def make_method(name: str, bits: int, params: dict) -> "HashingModel":
    """Build method ``name`` for ``bits`` from the full params.yaml dictionary."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name].from_params(bits, params)


def load_model(path) -> "HashingModel":
    """Load any saved model; the ``.npz`` records which method it is."""
    with np.load(path, allow_pickle=False) as f:
        d = {k: f[k] for k in f.files}
    name = str(d.pop("__method__"))
    if name not in METHODS:
        raise ValueError(f"{path}: saved method {name!r} is not one of {sorted(METHODS)}")
    hyper = json.loads(str(d.pop("__params__")))
    m = METHODS[name](**hyper)
    m.train_seconds_ = float(d.pop("__train_seconds__", np.nan))
    m._set_state(d)
    return m


def check_features(X, name="X", n_features=None) -> np.ndarray:
    """Validate a feature matrix: 2-D, real, finite. Returns a C-contiguous float64 copy/view."""
    if not isinstance(X, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array, got dtype {X.dtype}")
    if X.shape[0] < 1:
        raise ValueError(f"{name} has no rows")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features; the model was fitted on {n_features}")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.all(np.isfinite(X)):
        bad = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{name} contains NaN or Inf (first at row {bad[0]}, column {bad[1]})")
    return X


def check_labels(y, n, name="y") -> np.ndarray:
    """Validate labels: 1-D non-negative ints (single-label) or a 2-D 0/1 matrix (multi-label)."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(y).__name__}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (classes) or 2-D (multi-label 0/1), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but X has {n}")
    if y.ndim == 1:
        if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
            raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
        y = y.astype(np.int64)
        if y.min() < 0:
            raise ValueError(f"{name} has a negative label ({y.min()}); labels must be 0..C-1")
        return y
    if y.ndim == 2:
        if not np.all((y == 0) | (y == 1)):
            raise ValueError(f"multi-label {name} must be a 0/1 matrix")
        return y.astype(np.uint8)
    raise ValueError(f"{name} must be 1-D (classes) or 2-D (multi-label 0/1), got shape {y.shape}")


def label_matrix(y, n_classes=None) -> np.ndarray:
    """One-hot (single-label) or the 0/1 matrix itself (multi-label), as float64 ``(n, C)``."""
    if y.ndim == 2:
        return y.astype(np.float64)
    c = int(y.max()) + 1 if n_classes is None else int(n_classes)
    Y = np.zeros((y.shape[0], c))
    Y[np.arange(y.shape[0]), y] = 1.0
    return Y


class HashingModel:
    """Base class. Subclasses set ``method_name`` (via :func:`register`) and implement
    ``_fit(X, y)``, ``_project(X) -> (n, bits) float``, ``_state() -> dict`` and
    ``_set_state(dict)``; ``get_params()`` returns the ``__init__`` keyword arguments.
    """

    method_name = "base"
    #: what a method needs the pipeline to know, declared by the method itself (the train stage
    #: and the memory check read these; no stage names a method)
    memory_advice = "protocol.train_per_class or the method's size parameters"

    @property
    def checkpointing(self) -> bool:
        """Whether ``fit(X, y, checkpoint_path=...)`` saves and resumes its state."""
        return False

    def blas_threads(self, n: int):
        """BLAS threads for fitting on ``n`` items: 1 (every product is small) or ``None``
        (the library default)."""
        return 1

    def training_bytes(self, n: int, d: int, n_classes: int) -> int:
        """Peak bytes of ``fit`` on ``n`` items of ``d`` features: a rough bound (4 float64
        copies of the features and ``n x max(width, 1000)`` float64 values: SDH's anchor
        features, the mini-batch networks' buffers)."""
        w = int(getattr(self, "width", 0) or 0)
        L, k = int(getattr(self, "depth", 1) or 1), int(self.bits)
        weights = 4 * (w * d + max(L - 1, 0) * w * w + k * w)
        return 32 * n * d + 8 * n * max(w, 1000) + weights

    def __init__(self, bits: int, seed: int = 0):
        self.bits = bits
        self.seed = seed

    # --- construction -------------------------------------------------------
    @classmethod
    def from_params(cls, bits: int, params: dict) -> "HashingModel":
        return cls(bits=bits, seed=int(params["seed"]))

    @classmethod
    def section_defaults(cls) -> dict:
        """The knobs of the method's params.yaml section ``<method>:`` and their defaults."""
        return {}

    @classmethod
    def section_choices(cls) -> dict:
        """Knob -> the values it may take (string knobs with a fixed vocabulary)."""
        return {}

    @classmethod
    def section_minimums(cls) -> dict:
        """Knob -> its least allowed value (numeric knobs that have one)."""
        return {}

    def get_params(self) -> dict:
        return {"bits": int(self.bits), "seed": int(self.seed)}

    # --- public API ---------------------------------------------------------
    def fit(self, X, y):
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or self.bits < 1:
            raise ValueError(f"bits must be an integer >= 1, got {self.bits!r}")
        X = check_features(X, "X")
        y = check_labels(y, X.shape[0])
        self.n_features_in_ = X.shape[1]
        self.history_ = []
        t0 = time.perf_counter()
        self._fit(X, y)
        self.train_seconds_ = time.perf_counter() - t0
        return self

    def project(self, X) -> np.ndarray:
        """Real-valued outputs ``(n, bits)`` whose signs are the codes."""
        self._check_fitted()
        X = check_features(X, "X", self.n_features_in_)
        return self._project(X)

    def encode(self, X) -> np.ndarray:
        """Packed ``uint8`` codes ``(n, ceil(bits/8))`` of ``X`` (a forward pass)."""
        return pack_codes(self.project(X))

    def save(self, path) -> None:
        self._check_fitted()
        state = self._state()
        state["n_features_in_"] = np.int64(self.n_features_in_)
        save_npz(path, __method__=np.str_(self.method_name),
                 __params__=np.str_(json.dumps(self.get_params())),
                 __train_seconds__=np.float64(getattr(self, "train_seconds_", np.nan)),
                 **state)

    @classmethod
    def load(cls, path) -> "HashingModel":
        return load_model(path)

    # --- to implement -------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "n_features_in_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X, y) first")

    def _set_state(self, d: dict) -> None:
        self.n_features_in_ = int(d.pop("n_features_in_"))
        for k, v in d.items():
            setattr(self, k, v)

    def _fit(self, X, y):  # pragma: no cover
        raise NotImplementedError

    def _project(self, X):  # pragma: no cover
        raise NotImplementedError

    def _state(self) -> dict:  # pragma: no cover
        raise NotImplementedError
