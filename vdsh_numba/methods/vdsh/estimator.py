"""VDSH: a deep fully connected hashing network trained by layer-wise ADMM (no backpropagation).

See ``docs/algorithm.md`` for the derivation implemented here, equation by equation.

Network (``depth`` hidden layers of ``width`` nodes over fixed feature vectors ``x``)::

    z_1 = W_1 x + b_1,            a_1 = relu(z_1)
    z_h = W_h a_{h-1} + b_h,      a_h = a_{h-1} + relu(z_h)   (residual=True, h >= 2)
                                  a_h = relu(z_h)             (residual=False)
    u   = W_o a_L + b_o,          code = sign(u)

Objective (pointwise supervision, SDH-style regularized least squares, per sample)::

    min  1/n ||Y - B G||^2 + lam_G ||G||^2 + nu/n ||B - U||^2 + rho sum_h ||W_h||^2
    over B in {-1,+1}^{n x bits}, G, and the network,

with the network subproblem split by auxiliary variables ``z_h``, ``a_h`` (every hidden layer's
pre-activation and output for every sample) and scaled multipliers ``lam_h`` on ``z_h = W_h a_{h-1} + b_h``.

The estimator holds the hyperparameters and the fitted state; the training loop is
:func:`vdsh_numba.methods.vdsh.engine.train`, the same for both backends, which get their array
operations from :mod:`vdsh_numba.methods.vdsh.cpu_ops` or :mod:`vdsh_numba.methods.vdsh.cuda_ops`.
"""
from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from ...backend import check_backend
from ..base import HashingModel, label_matrix, register
from . import cpu_ops, engine
from .checkpoint import fingerprint

__all__ = ["VDSH", "TRAIN_DEFAULTS", "TRAIN_CHOICES", "TRAIN_MINIMUM", "check_train", "backend_ops",
           "forward"]

TRAIN_DEFAULTS = {
    "sweeps": 60,          # ADMM sweeps (outer iterations)
    "beta": 0.1,           # penalty on z_h = W_h a_{h-1} + b_h
    "gamma": 0.1,          # penalty on a_h = phi(a_{h-1}, z_h)
    "penalty_growth": 1.2, # beta, gamma *= growth after every sweep ...
    "penalty_max": 100.0,  # ... up to this factor of their start
    "rho": 1e-2,           # ridge on every weight matrix
    "prox": 0.0,           # proximal weight on W - W_previous (damps the local fits)
    "nu": 1e-2,            # weight of ||B - U||^2 in the code step
    "lam_G": 1.0,          # ridge on the code->label classifier G (chosen on fashion_mnist validation)
    "dcc_passes": 3,       # passes of discrete cyclic coordinate descent per sweep
    "residual": True,      # identity skips between equal-width hidden layers
    "resync": True,        # reset z, a to the forward pass at the start of every sweep
    "multipliers": True,   # scaled dual variables on the z constraints
    "init_scale": 1.0,     # std of the first layer = init_scale / sqrt(n_features)
    "input_clip": 3.0,     # clip features to [-c, c] inside the network (0: off)
    "init": "ridge",       # first layer: "random", or "ridge" (rows +-P, P = ridge map X -> labels)
    "skip_weight": 1000.0, # penalty on the skip path of a residual layer = skip_weight * gamma
    "first_width": 1024,   # units of the first hidden layer (0: width); layer 2 maps it to width (non-residual)
    "final_refit": False,  # after the last sweep, refit W_o, b_o to the codes on the final forward pass
    "checkpoint_every": 0, # save the whole loop state every N sweeps to fit(checkpoint_path=...) (0: off)
    "scheme": "sequential",  # update order: "sequential" (layer after layer, docs §4) | "consensus" (§10)
    "workers": 1,          # consensus: tasks at once (threads, or Dask workers of a LocalCluster)
    "scheduler": "serial", # consensus: where its tasks run, "serial" | "threads" | "distributed" (Dask)
    "eta": 1e-3,           # consensus: penalty on the local copies = global weights (grows with beta)
    "local": "split",      # consensus: local problem "split" (docs §10.2) | "through" (§10.3)
    "order": "local_first",  # consensus: "local_first" (local, aux, consensus, duals) | "aux_first"
}

#: the string parameters of TRAIN_DEFAULTS and their allowed values (checked by ``vdsh check``)
TRAIN_CHOICES = {"init": ("ridge", "random"), "scheme": ("sequential", "consensus"),
                 "scheduler": ("serial", "threads", "distributed"), "local": ("split", "through"),
                 "order": ("local_first", "aux_first")}
#: the integer parameters of TRAIN_DEFAULTS whose least value is not 0
TRAIN_MINIMUM = {"workers": 1}
#: where the consensus tasks run: not part of the result (every placement gives the same bits),
#: so not part of a checkpoint's fingerprint either (a fit may resume on other workers)
PLACEMENT_KEYS = ("workers", "scheduler")


def check_train(o):
    """``ValueError`` naming the parameter, its value and what was expected, for the choices
    and the combinations that :func:`vdsh_numba.params.validate_params` cannot see."""
    for key, choices in TRAIN_CHOICES.items():
        if o[key] not in choices:
            raise ValueError(f"vdsh.{key} must be one of {list(choices)}, got {o[key]!r}")
    for key, least in TRAIN_MINIMUM.items():
        v = o[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
            raise ValueError(f"vdsh.{key} must be an integer >= {least}, got {v!r}")
    if o["scheme"] == "consensus":
        if not o["multipliers"]:
            raise ValueError("vdsh.multipliers is False, but vdsh.scheme 'consensus' always "
                             "keeps the multipliers of the z constraints; use scheme 'sequential'")
        if o["prox"] != 0:
            raise ValueError(f"vdsh.prox is {o['prox']!r}, but vdsh.scheme 'consensus' has its own "
                             f"proximal term (vdsh.eta); set prox to 0")


def backend_ops(backend):
    """The array operations of ``backend`` ("cpu" or "cuda"); "cuda" without a GPU (or the
    simulator) raises ``RuntimeError`` saying what is missing, never falls back."""
    check_backend(backend)
    if backend == "cuda":
        from . import cuda_ops
        return cuda_ops
    return cpu_ops


def forward(X, Ws, bs, Wo, bo, residual, keep=False):
    """Forward pass on the CPU (host float32 arrays). Returns ``U`` or, with ``keep``,
    ``(U, A, Z)`` with every layer's ``a`` (``A[0] = X``) and ``z`` (``Z[0] = None``)."""
    ops = cpu_ops
    X = ops.to_device(X)
    A = [X] + [np.empty((X.shape[0], W.shape[0]), np.float32) for W in Ws]
    Z = [None] + [np.empty((X.shape[0], W.shape[0]), np.float32) for W in Ws]
    U = np.empty((X.shape[0], Wo.shape[0]), np.float32)
    engine.forward(ops, X, Ws, bs, Wo, bo, engine.residual_flags(residual, Ws), A, Z, U)
    return (U, A, Z) if keep else U


@register("vdsh")
class VDSH(HashingModel):
    """Very Deep Supervised Hashing trained by layer-wise ADMM.

    Parameters
    ----------
    bits : int
        Code length.
    depth, width : int
        Hidden layers and nodes per hidden layer (the first has ``first_width`` nodes).
    seed : int
        Every random choice (first-layer weights, initial codes) comes from it.
    backend : {"cpu", "cuda"}
        Where the training sweep and the forward pass run; the same loop either way.
    **train : see ``TRAIN_DEFAULTS``.

    Notes
    -----
    Zhang, Chen, Saligrama, "Efficient Training of Very Deep Neural Networks for Supervised
    Hashing", CVPR 2016 (arXiv:1511.04524). The update order and closed forms are derived in
    ``docs/algorithm.md``.
    """

    def __init__(self, bits, depth=2, width=256, seed=0, backend="cpu", progress=False, **train):
        super().__init__(bits, seed)
        self.depth = depth
        self.width = width
        self.backend = backend
        self.progress = progress
        unknown = set(train) - set(TRAIN_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown VDSH training parameter(s) {sorted(unknown)}; "
                             f"expected some of {sorted(TRAIN_DEFAULTS)}")
        self.train = {**TRAIN_DEFAULTS, **train}
        self.on_sweep = None  # optional callable(iteration, model) after every sweep (monitoring)
        self.client = None    # optional distributed.Client for vdsh.scheduler "distributed"

    @classmethod
    def from_params(cls, bits, params):
        """Build from params: ``depth``, ``width``, ``seed``, ``backend`` from the top level, the
        training knobs from the section ``vdsh:`` (missing keys: ``TRAIN_DEFAULTS``)."""
        return cls(bits=bits, depth=int(params["depth"]), width=int(params["width"]),
                   seed=int(params["seed"]), backend=params["backend"],
                   progress=True, **(params.get("vdsh") or {}))

    @classmethod
    def section_defaults(cls):
        """The knobs of the section ``vdsh:`` and their defaults (``TRAIN_DEFAULTS``)."""
        return dict(TRAIN_DEFAULTS)

    @classmethod
    def section_choices(cls):
        return dict(TRAIN_CHOICES)

    @classmethod
    def section_minimums(cls):
        """Every numeric knob is >= 0; ``TRAIN_MINIMUM`` names the ones with another least value."""
        return {k: TRAIN_MINIMUM.get(k, 0) for k, v in TRAIN_DEFAULTS.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def get_params(self):
        return {"bits": int(self.bits), "depth": int(self.depth), "width": int(self.width),
                "seed": int(self.seed), "backend": self.backend, **self.train}

    # --- what the pipeline asks of a method (vdsh_numba.methods.base.HashingModel) -----------------
    memory_advice = ("width, depth or protocol.train_per_class (memory grows as n x depth x width "
                     "and depth x width^2)")

    @property
    def checkpointing(self) -> bool:
        return int(self.train["checkpoint_every"]) > 0

    def blas_threads(self, n):
        """One BLAS thread while ``n * width**2 < config.BLAS_SMALL_PRODUCT``: waking threads
        for small products costs more than it saves (digits, 1,000 x 256: 0.20 s per sweep with
        one OpenBLAS thread against 0.69 s with two)."""
        from ... import config
        return None if n * self.width * self.width >= config.BLAS_SMALL_PRODUCT else 1

    def training_bytes(self, n, d, n_classes):
        """Peak bytes that :func:`vdsh_numba.methods.vdsh.engine.train` allocates (float32 unless said).

        Per hidden layer and sample the auxiliary variables ``a``, ``z`` and the multipliers
        ``lam`` (``3 * depth`` arrays of ``n x width``), plus a second ``a``, ``z`` set while the
        forward pass re-synchronises them (``2 * depth``) and about 7 ``n x width`` work buffers
        (the BLAS products, right-hand sides and targets of one layer update); the features
        (float64 checked copy, float32 copy, clipped copy and the float64 transposes of the
        ridge initialisation: 28 bytes per value); codes, code targets and outputs (5 float64
        ``n x bits``), labels (2 float64 ``n x n_classes``); the weights and the float64 normal
        equations of one layer (6 matrices of ``max(width, d)^2``). With a wide first layer
        (``first_width``) layer 1's arrays and the work buffers are ``n x first_width``. The
        consensus scheme adds the arrays of its steps (see the code; an estimate, not measured).
        """
        n, d, L, w, k, c = (int(v) for v in (n, d, self.depth, self.width, self.bits, n_classes))
        w1 = int(self.train["first_width"]) or w
        cols = w1 + max(L - 1, 0) * w                  # hidden units over all layers
        weights = 4 * (w1 * d + (w * w1 if L > 1 else 0) + max(L - 2, 0) * w * w + k * w)
        total = (4 * n * (5 * cols + 7 * max(w1, w)) + 28 * n * d + 40 * n * k + 16 * n * c
                 + weights + 48 * max(w1, w, d) ** 2)
        if self.train["scheme"] == "consensus":
            # the consensus step returns new a, z and multipliers for every layer while the old
            # ones are still referenced (3 more n x cols), each of `workers` running tasks holds
            # about 4 n x width temporaries, and every weight layer has up to two copies and two
            # duals (4 x the weights)
            total += 4 * n * (3 * cols + 4 * int(self.train["workers"]) * max(w1, w)) + 4 * weights
        return total

    def fit(self, X, y, checkpoint_path=None):
        """Train on ``X`` (n, d), labels ``y``.

        ``checkpoint_path`` (optional ``.npz``): with ``checkpoint_every = N > 0`` the whole loop
        state is saved there atomically every N sweeps and after the last one; if the file exists
        when ``fit`` starts, training resumes from it (same data, parameters and backend required)
        and the final model is bitwise equal to an uninterrupted run's.
        """
        self._checkpoint_path = None if checkpoint_path is None else os.fspath(checkpoint_path)
        try:
            return super().fit(X, y)
        finally:
            self._checkpoint_path = None

    def _fit(self, X, y):
        ops = backend_ops(self.backend)  # "cuda" without a GPU: a clear RuntimeError, no fallback
        for name in ("depth", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        check_train(self.train)
        X = self._clip(np.ascontiguousarray(X, dtype=np.float32))
        ck = self._checkpoint_path
        placed = {k: v for k, v in self.get_params().items() if k not in PLACEMENT_KEYS}
        fp = fingerprint(placed, X, y) if ck is not None else None

        def hook(it, Ws, bs, Wo, bo, G):
            self.W_, self.b_, self.Wo_, self.bo_, self.G_ = Ws, bs, Wo, bo, G
            self.on_sweep(it, self)

        with self._update_order(ops) as update:
            r = engine.train(ops, X, label_matrix(y), depth=int(self.depth), width=int(self.width),
                             bits=int(self.bits), seed=self.seed, o=self.train, history=self.history_,
                             checkpoint_path=ck, fingerprint=fp, progress=self.progress,
                             on_sweep=None if self.on_sweep is None else hook, update=update)
        self.W_, self.b_, self.Wo_, self.bo_, self.G_ = r.Ws, r.bs, r.Wo, r.bo, r.G
        self.B_train_ = r.B
        self.resumed_from_ = r.resumed_from

    @contextlib.contextmanager
    def _update_order(self, ops):
        """The engine's ``update`` for ``vdsh.scheme`` (the executor of the consensus tasks is
        opened here and closed after the fit; a LocalCluster started for it too)."""
        o = self.train
        if o["scheme"] == "sequential":
            yield engine.layerwise_sweep
            return
        from . import consensus
        from .executors import make_executor
        tasks = None
        if ops.NAME == "cuda":
            if o["scheduler"] != "serial":
                raise ValueError(f"vdsh.scheduler is {o['scheduler']!r}, but on backend 'cuda' the "
                                 f"consensus tasks run one after another on the device: use 'serial'")
            from . import gpu_consensus as tasks
        close = None
        client = self.client
        if o["scheduler"] == "distributed" and client is None:
            from ...search.distributed import local_cluster
            cluster, client = local_cluster(n_workers=int(o["workers"]))

            def close():
                client.close()
                cluster.close()
        executor = make_executor(o["scheduler"], int(o["workers"]), client)
        try:
            yield functools.partial(consensus.consensus_update, executor=executor, tasks=tasks)
        finally:
            executor.close()
            if close is not None:
                close()

    def _clip(self, X):
        c = float(self.train["input_clip"])
        return np.clip(X, -c, c) if c > 0 else X

    def _project(self, X):
        ops = backend_ops(self.backend)
        Xc = self._clip(np.ascontiguousarray(X, dtype=np.float32))
        return engine.project(ops, Xc, self.W_, self.b_, self.Wo_, self.bo_,
                              self.train["residual"]).astype(np.float64)

    def _state(self):
        st = {"Wo_": self.Wo_, "bo_": self.bo_, "G_": self.G_}
        for h, (W, b) in enumerate(zip(self.W_, self.b_)):
            st[f"W_{h}"] = W
            st[f"b_{h}"] = b
        return st

    def _set_state(self, d):
        self.n_features_in_ = int(d.pop("n_features_in_"))
        self.Wo_, self.bo_, self.G_ = d["Wo_"], d["bo_"], d["G_"]
        self.W_ = [d[f"W_{h}"] for h in range(self.depth)]
        self.b_ = [d[f"b_{h}"] for h in range(self.depth)]
