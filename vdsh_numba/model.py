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

import sys
import time

import numpy as np
import scipy.linalg as sla

from . import admm
from .base import HashingModel, label_matrix, register

__all__ = ["VDSH", "forward", "TRAIN_DEFAULTS"]

TRAIN_DEFAULTS = {
    "sweeps": 30,          # ADMM sweeps (outer iterations)
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
    "skip_weight": 20.0,   # penalty on the skip path of a residual layer = skip_weight * gamma
}


def forward(X, Ws, bs, Wo, bo, residual, keep=False):
    """Forward pass. Returns ``U`` or, with ``keep``, ``(U, A, Z)`` with every layer's a and z."""
    A, Z = [X], [None]
    a = X
    n = X.shape[0]
    for h in range(len(Ws)):
        p = a @ Ws[h].T
        z = np.empty_like(p) if keep else p
        a_new = np.empty_like(p)
        admm.bias_act(p, bs[h], a, bool(residual and h > 0), z, a_new)
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
    n = A.shape[0]
    muA = A.mean(axis=0, dtype=np.float64)
    muT = T.mean(axis=0, dtype=np.float64)
    CAA = dense(np.dot, A.T, A).astype(np.float64) / n - np.outer(muA, muA)
    CTA = dense(np.dot, T.T, A).astype(np.float64) / n - np.outer(muT, muA)
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
        W1 = rng.standard_normal((w, d)) * (o["init_scale"] / np.sqrt(d))
        if o["init"] == "ridge":
            # closed-form layer-wise start: the first 2C units carry relu(+-P x), P the ridge map
            # from the inputs to the centred one-hot labels, so the net starts >= a linear hash
            c = Y.shape[1]
            if 2 * c <= w:
                Xc = X - X.mean(0)
                Yc = Y - Y.mean(0)
                M = Xc.T.astype(np.float64) @ Xc + X.shape[0] * 1e-1 * np.eye(d)
                P = np.linalg.solve(M, Xc.T.astype(np.float64) @ Yc).T  # (C, d)
                P *= 1.0 / max(np.std(Xc @ P.T), 1e-12)
                W1[:c], W1[c:2 * c] = P, -P
        elif o["init"] != "random":
            raise ValueError(f"init must be 'random' or 'ridge', got {o['init']!r}")
        Ws = [W1.astype(np.float32)]
        bs = [np.zeros(w, np.float32)]
        for _ in range(1, L):
            if o["residual"]:
                Ws.append(np.zeros((w, w), np.float32))  # residual net starts equal to the shallow one
            else:
                Ws.append((rng.standard_normal((w, w)) * np.sqrt(2.0 / w)).astype(np.float32))
            bs.append(np.zeros(w, np.float32))
        # initial codes: class codewords far apart in Hamming distance, labels through them
        R = class_codebook(Y.shape[1], k, rng)
        B = np.where(Y @ R >= 0, 1.0, -1.0)
        return Ws, bs, B

    def _fit(self, X, y):
        if self.backend != "cpu":
            raise ValueError(f"backend={self.backend!r} is not available for VDSH; expected 'cpu'")
        for name in ("depth", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        o = self.train
        rng = np.random.default_rng(self.seed)
        X = self._clip(np.ascontiguousarray(X, dtype=np.float32))
        Y = label_matrix(y)
        n = X.shape[0]
        L, k = self.depth, self.bits
        Ws, bs, B = self._init(X, Y, rng)
        residual = [bool(o["residual"] and h > 0) for h in range(L)]
        Lam = [np.zeros((n, self.width), np.float32) for _ in range(L)]
        dense = _DenseTimer()
        G = self._g_step(B, Y)
        Wo, bo = _ridge(B.astype(np.float32), forward(X, Ws, bs, np.zeros((k, self.width), np.float32),
                                                      np.zeros(k, np.float32), o["residual"], keep=True)[1][-1],
                        1.0, o["rho"], 0.0, np.zeros((k, self.width)), dense)
        A = Z = None
        beta, gamma = o["beta"], o["gamma"]
        t_start = time.perf_counter()
        sweeps = range(int(o["sweeps"]))
        if self.progress:
            from tqdm import tqdm
            sweeps = tqdm(sweeps, desc=f"VDSH {L}x{self.width} {k} bits", file=sys.stderr)
        for it in sweeps:
            t0 = time.perf_counter()
            dense.seconds = 0.0
            # 1. re-synchronise the auxiliary variables with the forward pass
            U, A_f, Z_f = dense(forward, X, Ws, bs, Wo, bo, o["residual"], True)
            gap = np.nan
            if A is not None:
                gap = float(np.sqrt(admm.sq_dist(A[-1], A_f[-1]) / max(admm.sq_dist(A_f[-1], 0 * A_f[-1]), 1e-30)))
            if A is None or o["resync"]:
                A, Z = A_f, Z_f
            # 2. code step (discrete) and classifier step
            Q = Y @ G.T + o["nu"] * U
            flips = admm.dcc_codes(B, Q, G @ G.T, int(o["dcc_passes"]))
            G = self._g_step(B, Y)
            # 3. network: output layer, then hidden layers top-down
            Bf = B.astype(np.float32)
            Wo, bo = _ridge(Bf, A[L], 1.0, o["rho"], o["prox"], Wo, dense)
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
            # 4. log every objective term, the primal residuals and the seconds
            secs = time.perf_counter() - t0
            label = float(((Y - B @ G) ** 2).sum() / n)
            code_fit = float(((B - U) ** 2).sum() / n)
            regW = float(sum((W.astype(np.float64) ** 2).sum() for W in Ws) + (Wo.astype(np.float64) ** 2).sum())
            self.history_.append({
                "iteration": it + 1, "seconds": secs, "dense_seconds": dense.seconds,
                "elapsed": time.perf_counter() - t_start,
                "objective": label + o["lam_G"] * float((G ** 2).sum()) + o["nu"] * code_fit + o["rho"] * regW,
                "label_loss": label, "reg_G": o["lam_G"] * float((G ** 2).sum()),
                "code_fit": code_fit, "reg_W": o["rho"] * regW,
                "penalty_z": float(beta * rz.sum() / n), "penalty_a": float(gamma * ra.sum() / n),
                "primal_z": float(np.sqrt(rz.sum() / n)), "primal_a": float(np.sqrt(ra.sum() / n)),
                "primal_z_layers": (np.sqrt(rz / n)).tolist(), "primal_a_layers": (np.sqrt(ra / n)).tolist(),
                "forward_gap": gap, "bit_agreement": float(np.mean((U > 0) == (B > 0))),
                "bit_flips": int(flips), "beta": beta, "gamma": gamma,
            })
            if self.on_sweep is not None:
                self.W_, self.b_, self.Wo_, self.bo_, self.G_ = Ws, bs, Wo, bo, G
                self.on_sweep(it, self)
            growth = o["penalty_growth"]
            beta = min(beta * growth, o["beta"] * o["penalty_max"])
            gamma = min(gamma * growth, o["gamma"] * o["penalty_max"])
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
