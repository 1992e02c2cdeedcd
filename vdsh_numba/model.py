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
"""
from __future__ import annotations

import json
import os
import sys
import time
import zlib

import numpy as np
import scipy.linalg as sla

from . import admm
from .base import HashingModel, label_matrix, register

__all__ = ["VDSH", "forward", "TRAIN_DEFAULTS", "TrainingDiverged"]

TRAIN_DEFAULTS = {
    "sweeps": 60,          # ADMM sweeps (outer iterations)
    "beta": 0.1,           # penalty on z_h = W_h a_{h-1} + b_h
    "gamma": 0.1,          # penalty on a_h = phi(a_{h-1}, z_h)
    "penalty_growth": 1.2, # beta, gamma *= growth after every sweep ...
    "penalty_max": 100.0,  # ... up to this factor of their start
    "rho": 1e-2,           # ridge on every weight matrix
    "prox": 0.0,           # proximal weight on W - W_previous (damps the local fits)
    "nu": 1e-2,            # weight of ||B - U||^2 in the code step
    "lam_G": 1e-2,         # ridge on the code->label classifier G
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
}


class TrainingDiverged(FloatingPointError):
    """A training variable or the objective became NaN/Inf.

    ``sweep`` (1-based) and ``layer`` (1-based hidden layer, ``"output"``, ``"codes"``, ``"forward"``
    or ``"objective"``) say where; ``checkpoint`` is the path of the last finite checkpoint
    (``None`` without checkpointing), which is never overwritten by non-finite state.
    """

    def __init__(self, sweep, layer, what, checkpoint=None):
        self.sweep, self.layer, self.what, self.checkpoint = sweep, layer, what, checkpoint
        where = f"hidden layer {layer}" if isinstance(layer, (int, np.integer)) else str(layer)
        msg = f"VDSH training diverged at sweep {sweep}, {where}: {what} is not finite"
        if checkpoint is not None:
            msg += f" (last finite checkpoint kept at {checkpoint})"
        super().__init__(msg)


def _is_residual(residual, h, W):
    """Layer ``h`` (0-based) has an identity skip: residual net, not the first layer, square W."""
    return bool(residual and h > 0 and W.shape[0] == W.shape[1])


def objective_terms(o, label, G, code_fit, regW):
    """The logged objective terms of one sweep (shared by the CPU and the CUDA trainers).

    ``objective`` is the one both blocks descend: the code step minimises label + reg_G +
    nu code_fit at a fixed network, the network step minimises code_fit + rho reg_W at fixed
    codes, so the network's weight decay enters the joint objective as nu * rho
    (docs/algorithm.md section 2); the unscaled sum is logged as ``objective_sdh``.
    """
    reg_G = o["lam_G"] * float((G ** 2).sum())
    return {"objective": label + reg_G + o["nu"] * (code_fit + o["rho"] * regW),
            "objective_sdh": label + reg_G + o["nu"] * code_fit + o["rho"] * regW,
            "network_objective": code_fit + o["rho"] * regW,
            "label_loss": label, "reg_G": reg_G, "code_fit": code_fit, "reg_W": o["rho"] * regW}


def forward(X, Ws, bs, Wo, bo, residual, keep=False):
    """Forward pass. Returns ``U`` or, with ``keep``, ``(U, A, Z)`` with every layer's a and z."""
    A, Z = [X], [None]
    a = X
    n = X.shape[0]
    for h in range(len(Ws)):
        p = a @ Ws[h].T
        z = np.empty_like(p) if keep else p
        a_new = np.empty_like(p)
        admm.bias_act(p, bs[h], a, _is_residual(residual, h, Ws[h]), z, a_new)
        if keep:
            A.append(a_new)
            Z.append(z)
        a = a_new
    U = a @ Wo.T + bo
    return (U, A, Z) if keep else U


class _DenseTimer:
    """Accumulates the seconds spent in dense (BLAS/LAPACK) calls, for the BLAS-floor benchmark."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, f, *args):
        t = time.perf_counter()
        r = f(*args)
        self.seconds += time.perf_counter() - t
        return r


def _ridge(T, A, beta, rho, prox, W_old, dense):
    """``min_{W,b} beta/n ||T - A W^T - 1 b^T||^2 + rho ||W||^2 + prox ||W - W_old||^2``."""
    muA = A.mean(axis=0, dtype=np.float64)
    muT = T.mean(axis=0, dtype=np.float64)
    return ridge_from_moments(dense(np.dot, A.T, A), dense(np.dot, T.T, A), muA, muT, A.shape[0],
                              beta, rho, prox, W_old, dense)


def ridge_from_moments(SAA, STA, muA, muT, n, beta, rho, prox, W_old, dense):
    """The host half of :func:`_ridge` from the raw moments ``A^T A``, ``T^T A`` and the column
    means (float64 centring and Cholesky solve); the CUDA trainer computes the moments on the
    device and calls this too."""
    CAA = SAA.astype(np.float64) / n - np.outer(muA, muA)
    CTA = STA.astype(np.float64) / n - np.outer(muT, muA)
    M = beta * CAA
    M[np.diag_indices_from(M)] += rho + prox
    R = beta * CTA + prox * W_old
    W = dense(lambda: sla.cho_solve(sla.cho_factor(M, lower=True, check_finite=False), R.T,
                                    check_finite=False).T)
    b = muT - W @ muA
    return np.ascontiguousarray(W, dtype=np.float32), b.astype(np.float32)


def class_codebook(n_classes, bits, rng, tries=256):
    """Random {-1,+1} codewords, one per class, the best of ``tries`` draws by
    (minimum, then mean) pairwise Hamming distance."""
    best, key = None, None
    for _ in range(tries):
        C = np.where(rng.standard_normal((n_classes, bits)) >= 0, 1.0, -1.0)
        D = (bits - C @ C.T) / 2
        off = D[~np.eye(n_classes, dtype=bool)]
        kk = (off.min() if off.size else 0, off.mean() if off.size else 0)
        if key is None or kk > key:
            best, key = C, kk
    return best


def _json_float(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _sym_inverse(M, dense):
    """Inverse of a symmetric positive definite matrix, float32 (float64 factorisation)."""
    c = dense(lambda: sla.cho_factor(M, lower=True, check_finite=False))
    return dense(lambda: sla.cho_solve(c, np.eye(M.shape[0]), check_finite=False)).astype(np.float32)


@register("vdsh")
class VDSH(HashingModel):
    """Very Deep Supervised Hashing trained by layer-wise ADMM.

    Parameters
    ----------
    bits : int
        Code length.
    depth, width : int
        Hidden layers and nodes per hidden layer.
    seed : int
        Every random choice (first-layer weights, initial codes) comes from it.
    backend : {"cpu"}
        Where the kernels run.
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

    @classmethod
    def from_params(cls, bits, params):
        return cls(bits=bits, depth=int(params.get("depth", 2)), width=int(params.get("width", 256)),
                   seed=int(params.get("seed", 0)), backend=params.get("backend", "cpu"),
                   progress=True, **(params.get("train") or {}))

    def get_params(self):
        return {"bits": int(self.bits), "depth": int(self.depth), "width": int(self.width),
                "seed": int(self.seed), "backend": self.backend, **self.train}

    # ------------------------------------------------------------------------------------------
    def _init(self, X, Y, rng):
        d, w, L, k = X.shape[1], self.width, self.depth, self.bits
        o = self.train
        w1 = int(o["first_width"]) or w
        W1 = rng.standard_normal((w1, d)) * (o["init_scale"] / np.sqrt(d))
        if o["init"] == "ridge":
            # closed-form layer-wise start: the first 2C units carry relu(+-P x), P the ridge map
            # from the inputs to the centred one-hot labels, so the net starts >= a linear hash
            c = Y.shape[1]
            if 2 * c <= w1:
                Xc = X - X.mean(0)
                Yc = Y - Y.mean(0)
                M = Xc.T.astype(np.float64) @ Xc + X.shape[0] * 1e-1 * np.eye(d)
                P = np.linalg.solve(M, Xc.T.astype(np.float64) @ Yc).T  # (C, d)
                P *= 1.0 / max(np.std(Xc @ P.T), 1e-12)
                W1[:c], W1[c:2 * c] = P, -P
        elif o["init"] != "random":
            raise ValueError(f"init must be 'random' or 'ridge', got {o['init']!r}")
        Ws = [W1.astype(np.float32)]
        bs = [np.zeros(w1, np.float32)]
        for h in range(1, L):
            if h == 1 and w1 != w:
                # wide first layer -> width: the first min(w, w1) units pass through (a_1 >= 0, so
                # relu keeps them: the ridge rows survive), the rest are He-scaled random
                W2 = rng.standard_normal((w, w1)) * np.sqrt(2.0 / w1)
                m = min(w, w1)
                W2[:m] = 0.0
                W2[np.arange(m), np.arange(m)] = 1.0
                Ws.append(W2.astype(np.float32))
            elif o["residual"]:
                Ws.append(np.zeros((w, w), np.float32))  # residual net starts equal to the shallow one
            else:
                Ws.append((rng.standard_normal((w, w)) * np.sqrt(2.0 / w)).astype(np.float32))
            bs.append(np.zeros(w, np.float32))
        # initial codes: class codewords far apart in Hamming distance, labels through them
        R = class_codebook(Y.shape[1], k, rng)
        B = np.where(Y @ R >= 0, 1.0, -1.0)
        return Ws, bs, B

    def fit(self, X, y, checkpoint_path=None):
        """Train on ``X`` (n, d), labels ``y``.

        ``checkpoint_path`` (optional ``.npz``): with ``checkpoint_every = N > 0`` the whole loop
        state is saved there atomically every N sweeps and after the last one; if the file exists
        when ``fit`` starts, training resumes from it (same data and parameters required) and the
        final model is bitwise equal to an uninterrupted run's.
        """
        self._checkpoint_path = None if checkpoint_path is None else os.fspath(checkpoint_path)
        try:
            return super().fit(X, y)
        finally:
            self._checkpoint_path = None

    # ------------------------------------------------------------------------------------------
    def _fingerprint(self, X, y):
        """What a checkpoint must match to be resumed: parameters (less the loop length and the
        checkpoint period) and a checksum of the data."""
        p = {k: v for k, v in self.get_params().items() if k not in ("sweeps", "checkpoint_every")}
        return {"params": p, "shape": list(X.shape),
                "crc": int(zlib.crc32(np.ascontiguousarray(X).view(np.uint8).ravel())
                           ^ zlib.crc32(np.ascontiguousarray(y, dtype=np.int64).view(np.uint8).ravel()))}

    def _save_checkpoint(self, path, S, fp):
        from .io import save_npz
        arrs = {"B": S["B"], "G": S["G"], "Wo": S["Wo"], "bo": S["bo"]}
        for h in range(self.depth):
            arrs[f"W_{h}"], arrs[f"b_{h}"], arrs[f"Lam_{h}"] = S["Ws"][h], S["bs"][h], S["Lam"][h]
        if S["A"] is not None:
            # with resync only the top layer's auxiliary output survives a sweep (the forward gap)
            keep = [self.depth] if self.train["resync"] else range(1, self.depth + 1)
            for h in keep:
                arrs[f"A_{h}"] = S["A"][h]
                if not self.train["resync"]:
                    arrs[f"Z_{h}"] = S["Z"][h]
        meta = {"sweep": S["sweep"], "beta": S["beta"], "gamma": S["gamma"], "fingerprint": fp,
                "rng": S["rng"].bit_generator.state, "history": self.history_,
                "elapsed": S["elapsed"]}
        save_npz(path, __meta__=np.str_(json.dumps(meta, default=_json_float)), **arrs)

    def _load_checkpoint(self, path, X, fp):
        with np.load(path, allow_pickle=False) as d:
            meta = json.loads(str(d["__meta__"]))
            if meta["fingerprint"] != json.loads(json.dumps(fp)):
                raise ValueError(f"checkpoint {path} was written for other data or parameters; "
                                 "remove it or pass another checkpoint_path")
            L = self.depth
            S = {"B": d["B"].copy(), "G": d["G"].copy(), "Wo": d["Wo"].copy(), "bo": d["bo"].copy(),
                 "Ws": [d[f"W_{h}"].copy() for h in range(L)], "bs": [d[f"b_{h}"].copy() for h in range(L)],
                 "Lam": [d[f"Lam_{h}"].copy() for h in range(L)],
                 "sweep": int(meta["sweep"]), "beta": float(meta["beta"]), "gamma": float(meta["gamma"]),
                 "elapsed": float(meta["elapsed"]), "A": None, "Z": None}
            if f"A_{L}" in d.files:
                S["A"] = [X] + [d[f"A_{h}"].copy() if f"A_{h}" in d.files else None for h in range(1, L + 1)]
                S["Z"] = [None] + [d[f"Z_{h}"].copy() if f"Z_{h}" in d.files else None for h in range(1, L + 1)]
        rng = np.random.default_rng(self.seed)
        rng.bit_generator.state = meta["rng"]
        S["rng"] = rng
        self.history_ = meta["history"]
        return S

    def _start(self, X, Y, rng):
        """The state before the first sweep (gradient-free initialisation)."""
        o, k = self.train, self.bits
        n = X.shape[0]
        Ws, bs, B = self._init(X, Y, rng)
        G = self._g_step(B, Y)
        dense = _DenseTimer()
        wt = Ws[-1].shape[0]
        a_top = forward(X, Ws, bs, np.zeros((k, wt), np.float32), np.zeros(k, np.float32),
                        o["residual"], keep=True)[1][-1]
        Wo, bo = _ridge(B.astype(np.float32), a_top, 1.0, o["rho"], 0.0, np.zeros((k, wt)), dense)
        return {"Ws": Ws, "bs": bs, "B": B, "G": G, "Wo": Wo, "bo": bo,
                "Lam": [np.zeros((n, W.shape[0]), np.float32) for W in Ws],
                "A": None, "Z": None, "beta": o["beta"], "gamma": o["gamma"], "sweep": 0,
                "rng": rng, "elapsed": 0.0}

    def _fit(self, X, y):
        from .backend import check_backend
        check_backend(self.backend)  # "cuda" without a GPU: a clear RuntimeError, no fallback
        for name in ("depth", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.backend == "cuda":  # the same sweep on the device (vdsh_numba/gpu_model.py)
            from .gpu_model import fit_vdsh_gpu
            fit_vdsh_gpu(self, self._clip(np.ascontiguousarray(X, dtype=np.float32)), label_matrix(y))
            return
        o = self.train
        ck_every = int(o["checkpoint_every"])
        ck_path = self._checkpoint_path
        X = self._clip(np.ascontiguousarray(X, dtype=np.float32))
        Y = label_matrix(y)
        n = X.shape[0]
        L, k = self.depth, self.bits
        fp = self._fingerprint(X, y) if ck_path is not None else None
        if ck_path is not None and os.path.exists(ck_path):
            S = self._load_checkpoint(ck_path, X, fp)
            self.resumed_from_ = S["sweep"]
        else:
            S = self._start(X, Y, np.random.default_rng(self.seed))
            self.resumed_from_ = 0
        Ws, bs, B, G, Wo, bo, Lam, A, Z = (S[v] for v in ("Ws", "bs", "B", "G", "Wo", "bo", "Lam", "A", "Z"))
        beta, gamma = S["beta"], S["gamma"]
        residual = [_is_residual(o["residual"], h, Ws[h]) for h in range(L)]
        dense = _DenseTimer()
        t_start = time.perf_counter() - S["elapsed"]
        n_sweeps = int(o["sweeps"])
        sweeps = range(S["sweep"], n_sweeps)
        if self.progress:
            from tqdm import tqdm
            sweeps = tqdm(sweeps, desc=f"VDSH {L}x{self.width} {k} bits", file=sys.stderr,
                          initial=S["sweep"], total=n_sweeps)

        def diverged(it, layer, what):
            last = ck_path if ck_path is not None and os.path.exists(ck_path) else None
            return TrainingDiverged(it + 1, layer, what, last)

        for it in sweeps:
            t0 = time.perf_counter()
            dense.seconds = 0.0
            # 1. re-synchronise the auxiliary variables with the forward pass
            U, A_f, Z_f = dense(forward, X, Ws, bs, Wo, bo, o["residual"], True)
            if not np.isfinite(U).all():
                bad = next((h for h in range(1, L + 1) if not np.isfinite(A_f[h]).all()), "output")
                raise diverged(it, bad, "the forward pass")
            gap = np.nan
            if A is not None and A[-1] is not None:
                gap = float(np.sqrt(admm.sq_dist(A[-1], A_f[-1]) / max(admm.sq_dist(A_f[-1], 0 * A_f[-1]), 1e-30)))
            if A is None or o["resync"]:
                A, Z = A_f, Z_f
            # 2. code step (discrete) and classifier step
            Q = Y @ G.T + o["nu"] * U
            flips = admm.dcc_codes(B, Q, G @ G.T, int(o["dcc_passes"]))
            G = self._g_step(B, Y)
            if not np.isfinite(G).all():
                raise diverged(it, "codes", "the classifier G")
            # 3. network: output layer, then hidden layers top-down
            Bf = B.astype(np.float32)
            Wo, bo = _ridge(Bf, A[L], 1.0, o["rho"], o["prox"], Wo, dense)
            if not (np.isfinite(Wo).all() and np.isfinite(bo).all()):
                raise diverged(it, "output", "the output layer W_o, b_o")
            rz, ra = np.zeros(L), np.zeros(L)
            for h in range(L, 0, -1):  # layer h: W[h-1], A[h], Z[h], Lam[h-1]
                li = h - 1
                if h == L:
                    q = dense(np.dot, Bf - bo, Wo)
                    M = (Wo.T @ Wo).astype(np.float64)
                    coef_q, skip = 1.0, 0.0
                    a_next = z_next = A[h]  # unused
                else:
                    s = np.empty_like(Z[h + 1])
                    admm.shift_target(Z[h + 1], Lam[h], bs[h], s)
                    q = dense(np.dot, s, Ws[h])
                    M = beta * dense(np.dot, Ws[h].T, Ws[h]).astype(np.float64)
                    coef_q, skip = beta, (o["skip_weight"] * gamma if residual[h] else 0.0)
                    a_next, z_next = A[h + 1], Z[h + 1]
                rhs = np.empty_like(A[h])
                admm.a_rhs(q, coef_q, a_next, z_next, skip, A[h - 1], Z[h], gamma, residual[li], rhs)
                M[np.diag_indices_from(M)] += gamma + skip
                if not np.isfinite(M).all():
                    raise diverged(it, h, "the a-step system")
                A[h] = dense(np.dot, rhs, _sym_inverse(M, dense))
                p = dense(np.dot, A[h - 1], Ws[li].T)
                znew = np.empty_like(p)
                admm.z_update(A[h], A[h - 1], p, bs[li], Lam[li], beta, gamma, residual[li], znew)
                Z[h] = znew
                T = Z[h] + Lam[li]
                Ws[li], bs[li] = _ridge(T, A[h - 1], 1.0, o["rho"] / beta, o["prox"] / beta, Ws[li], dense)
                p = dense(np.dot, A[h - 1], Ws[li].T)
                if o["multipliers"]:
                    rz[li] = admm.dual_update(Lam[li], Z[h], p, bs[li])
                else:
                    rz[li] = admm.dual_update(np.zeros_like(p), Z[h], p, bs[li])
                ra[li] = admm.a_residual(A[h], A[h - 1], Z[h], residual[li])
                # the residual sums cover a_h, z_h, W_h, b_h and Lam_h: one check per layer
                if not (np.isfinite(rz[li]) and np.isfinite(ra[li]) and np.isfinite(Ws[li]).all()
                        and np.isfinite(bs[li]).all()):
                    raise diverged(it, h, "a_h, z_h, W_h, b_h or the multipliers")
            # 4. log every objective term, the primal residuals and the seconds
            secs = time.perf_counter() - t0
            label = float(((Y - B @ G) ** 2).sum() / n)
            code_fit = float(((B - U) ** 2).sum() / n)
            regW = float(sum((W.astype(np.float64) ** 2).sum() for W in Ws) + (Wo.astype(np.float64) ** 2).sum())
            # the objective both blocks descend: the code step minimises label + reg_G + nu code_fit
            # at a fixed network, the network step minimises code_fit + rho reg_W (output weight 1)
            # at fixed codes, so the network's weight decay enters the joint objective as nu * rho
            # (docs/algorithm.md section 2); the old unscaled sum is logged as objective_sdh
            terms = objective_terms(o, label, G, code_fit, regW)
            objective = terms["objective"]
            if not np.isfinite(objective):
                raise diverged(it, "objective", "the objective")
            self.history_.append({
                "iteration": it + 1, "seconds": secs, "dense_seconds": dense.seconds,
                "elapsed": time.perf_counter() - t_start,
                **terms,
                "penalty_z": float(beta * rz.sum() / n), "penalty_a": float(gamma * ra.sum() / n),
                "primal_z": float(np.sqrt(rz.sum() / n)), "primal_a": float(np.sqrt(ra.sum() / n)),
                "primal_z_layers": (np.sqrt(rz / n)).tolist(), "primal_a_layers": (np.sqrt(ra / n)).tolist(),
                "forward_gap": gap, "bit_agreement": float(np.mean((U > 0) == (B > 0))),
                "bit_flips": int(flips), "beta": beta, "gamma": gamma,
            })
            growth = o["penalty_growth"]
            beta = min(beta * growth, o["beta"] * o["penalty_max"])
            gamma = min(gamma * growth, o["gamma"] * o["penalty_max"])
            if ck_path is not None and ck_every > 0 and ((it + 1) % ck_every == 0 or it + 1 == n_sweeps):
                S.update(Ws=Ws, bs=bs, B=B, G=G, Wo=Wo, bo=bo, Lam=Lam, A=A, Z=Z, beta=beta, gamma=gamma,
                         sweep=it + 1, elapsed=time.perf_counter() - t_start)
                self._save_checkpoint(ck_path, S, fp)
            if self.on_sweep is not None:
                self.W_, self.b_, self.Wo_, self.bo_, self.G_ = Ws, bs, Wo, bo, G
                self.on_sweep(it, self)
        if o["final_refit"] and n_sweeps > 0:
            # the last sweep moved the hidden layers after W_o was fitted: refit it on the forward pass
            a_top = forward(X, Ws, bs, Wo, bo, o["residual"], keep=True)[1][L]
            Wo, bo = _ridge(B.astype(np.float32), a_top, 1.0, o["rho"], 0.0, Wo, dense)
            if not (np.isfinite(Wo).all() and np.isfinite(bo).all()):
                raise diverged(n_sweeps - 1, "output", "the final refit of W_o, b_o")
        self.W_ = Ws
        self.b_ = bs
        self.Wo_, self.bo_, self.G_ = Wo, bo, G
        self.B_train_ = B

    def _g_step(self, B, Y):
        """``G = (B^T B + n lam_G I)^{-1} B^T Y`` (ridge, per-sample normalisation)."""
        k = B.shape[1]
        M = B.T @ B + B.shape[0] * self.train["lam_G"] * np.eye(k)
        return np.linalg.solve(M, B.T @ Y)

    def _clip(self, X):
        c = float(self.train["input_clip"])
        return np.clip(X, -c, c) if c > 0 else X

    def _project(self, X):
        if self.backend == "cuda":
            from .backend import require_cuda
            from .gpu_model import project_gpu
            require_cuda()
            return project_gpu(self._clip(np.ascontiguousarray(X, dtype=np.float32)), self.W_, self.b_,
                               self.Wo_, self.bo_, self.train["residual"]).astype(np.float64)
        return forward(self._clip(np.ascontiguousarray(X, dtype=np.float32)), self.W_, self.b_, self.Wo_, self.bo_,
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
