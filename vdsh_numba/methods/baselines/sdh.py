"""SDH: supervised discrete hashing (Shen, Shen, Liu, Shen, CVPR 2015).

Features: RBF kernel on ``m`` anchors drawn from the training set,
``φ(x)_a = exp(−‖x − a‖² / (2σ²))`` with ``σ`` the mean training-to-anchor distance,
centred with the training mean (an unpenalised bias). With one-hot labels ``Y (n × C)``,
codes ``B ∈ {±1}^{n × L}``, classifier ``W (L × C)`` and hash projection ``P (m × L)``::

    min ‖Y − B W‖² + λ‖W‖² + ν‖B − φ P‖² + δ‖P‖²

alternating ``n_iter`` (5) times, from random ``B``:

* G-step ``W = (BᵀB + λI)⁻¹ Bᵀ Y``
* F-step ``P = (φᵀφ + δI)⁻¹ φᵀ B``
* B-step: discrete cyclic coordinate descent, bit by bit, with ``Q = Y Wᵀ + ν φ P``:
  ``b_k = sign(q_k − B'_k W'_k w_kᵀ)`` (``'`` = without bit ``k``), sweeps until no bit changes
  (at most ``dcc_iter``).

A final F-step fits ``P`` to the final codes; ``h(x) = sign(φ(x) P)``. (The paper writes
these with samples as columns: ``W = (BBᵀ + λI)⁻¹ B Yᵀ``, ``P = (φφᵀ + δI)⁻¹ φ Bᵀ``.)
"""
from __future__ import annotations

import numpy as np

from ..base import HashingModel, label_matrix, register
from ._common import ParamsMixin, check_nonnegative, check_positive, signs

__all__ = ["SDH", "rbf_features", "sdh_g_step", "sdh_f_step", "sdh_b_step", "sdh_objective"]


def _sq_dists(X, A):
    d2 = (X * X).sum(1)[:, None] - 2.0 * X @ A.T + (A * A).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def rbf_features(X, anchors, sigma):
    """``exp(−‖x − a‖² / (2σ²))`` for every row of ``X`` and anchor, shape ``(n, m)``."""
    return np.exp(-_sq_dists(X, anchors) / (2.0 * sigma * sigma))


def sdh_g_step(B, Y, lam):
    """``W = (BᵀB + λI)⁻¹ BᵀY`` (``L × C``)."""
    L = B.shape[1]
    return np.linalg.solve(B.T @ B + lam * np.eye(L), B.T @ Y)


def sdh_f_step(Phi, B, delta):
    """``P = (φᵀφ + δI)⁻¹ φᵀB`` (``m × L``)."""
    m = Phi.shape[1]
    return np.linalg.solve(Phi.T @ Phi + delta * np.eye(m), Phi.T @ B)


def sdh_b_step(B, Q, W, max_sweeps=10):
    """Discrete cyclic coordinate descent on ``min_B ‖BW‖² − 2 tr(BᵀQ)`` over ``{±1}``.

    Each bit ``k`` is set to its exact minimiser with the other bits fixed,
    ``b_k = sign(q_k − B'_k W'_k w_kᵀ)`` (0 -> −1, the packing rule). Returns a new array.
    """
    B = B.copy()
    WWt = W @ W.T  # (L, L)
    for _ in range(max_sweeps):
        changed = False
        for k in range(B.shape[1]):
            # B'_k W'_k w_kᵀ = B (W w_kᵀ) − b_k ‖w_k‖²
            z = Q[:, k] - (B @ WWt[:, k] - B[:, k] * WWt[k, k])
            new = signs(z)
            if not changed and np.any(new != B[:, k]):
                changed = True
            B[:, k] = new
        if not changed:
            break
    return B


def sdh_objective(B, Y, W, Phi, P, lam, nu, delta):
    """The SDH objective ``‖Y − BW‖² + λ‖W‖² + ν‖B − φP‖² + δ‖P‖²``."""
    return float(((Y - B @ W) ** 2).sum() + lam * (W * W).sum()
                 + nu * ((B - Phi @ P) ** 2).sum() + delta * (P * P).sum())


@register("sdh")
class SDH(ParamsMixin, HashingModel):
    """SDH with RBF anchor features. ``n_anchors`` (1000), ``lam`` λ (1), ``nu`` ν (1e-5),
    ``delta`` δ (0.01, the F-step ridge of the authors' code), ``n_iter`` outer iterations (5),
    ``dcc_iter`` maximum DCC sweeps per B-step (10)."""

    def __init__(self, bits, n_anchors=1000, lam=1.0, nu=1e-5, delta=1e-2, n_iter=5,
                 dcc_iter=10, seed=0):
        self.bits = bits
        self.n_anchors = n_anchors
        self.lam = lam
        self.nu = nu
        self.delta = delta
        self.n_iter = n_iter
        self.dcc_iter = dcc_iter
        self.seed = seed

    def _features(self, X):
        return rbf_features(X, self.anchors_, self.sigma_) - self.phi_mean_

    def _fit(self, X, y):
        check_positive("n_anchors", self.n_anchors, integer=True)
        check_nonnegative("lam", self.lam)
        check_nonnegative("nu", self.nu)
        check_positive("delta", self.delta)
        check_nonnegative("n_iter", self.n_iter, integer=True)
        check_positive("dcc_iter", self.dcc_iter, integer=True)
        rng = np.random.default_rng(self.seed)
        n = X.shape[0]
        m = min(self.n_anchors, n)
        self.anchors_ = X[np.sort(rng.choice(n, m, replace=False))]
        self.sigma_ = float(np.sqrt(_sq_dists(X, self.anchors_)).mean())
        if self.sigma_ <= 0:
            raise ValueError("sdh: all training rows coincide with the anchors (sigma = 0)")
        Phi = rbf_features(X, self.anchors_, self.sigma_)
        self.phi_mean_ = Phi.mean(axis=0)
        Phi -= self.phi_mean_
        Y = label_matrix(y)
        B = signs(rng.standard_normal((n, self.bits)))
        P = sdh_f_step(Phi, B, self.delta)
        for it in range(self.n_iter):
            W = sdh_g_step(B, Y, self.lam)
            P = sdh_f_step(Phi, B, self.delta)
            Q = Y @ W.T + self.nu * (Phi @ P)
            B = sdh_b_step(B, Q, W, self.dcc_iter)
            self.history_.append({"iteration": it, "loss": sdh_objective(
                B, Y, W, Phi, P, self.lam, self.nu, self.delta)})
        self.P_ = sdh_f_step(Phi, B, self.delta)
        self.W_ = sdh_g_step(B, Y, self.lam)

    def _project(self, X):
        return self._features(X) @ self.P_

    def _state(self):
        return {"anchors_": self.anchors_, "sigma_": np.float64(self.sigma_),
                "phi_mean_": self.phi_mean_, "P_": self.P_, "W_": self.W_}

    def _set_state(self, d):
        super()._set_state(d)
        self.sigma_ = float(self.sigma_)
