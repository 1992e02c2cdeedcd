"""PCA-ITQ: iterative quantization (Gong & Lazebnik, CVPR 2011; TPAMI 2013).

Project centred data on the top ``bits`` principal directions, ``V = (X − μ) P``, then
alternate ``n_iter`` times (from a random orthogonal ``R``)::

    B = sign(V R)                      (fix R, update codes)
    Bᵀ V = S Ω Ŝᵀ  (SVD),  R = Ŝ Sᵀ     (fix B, orthogonal Procrustes: min_R ‖B − V R‖_F)

as in the authors' ``ITQ.m``. ``h(x) = sign((x − μ) P R)``. Labels are not used.
"""
from __future__ import annotations

import numpy as np

from ..base import HashingModel, register
from ._common import ParamsMixin, check_nonnegative, signs

__all__ = ["ITQ", "itq_rotation", "pca_directions"]


def pca_directions(Xc, k):
    """Top-``k`` principal directions (``d × k``) of centred ``Xc``, by decreasing variance,
    each with its largest-magnitude entry positive (a deterministic sign). Uses the
    ``d × d`` scatter matrix's eigenvectors when ``d ≤ n`` (cheaper than an SVD of ``Xc``)."""
    n, d = Xc.shape
    if d <= n:
        w, V = np.linalg.eigh(Xc.T @ Xc)
        P = V[:, np.argsort(w)[::-1][:k]]
    else:
        _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
        P = Vt[:k].T
    flip = np.sign(P[np.abs(P).argmax(axis=0), np.arange(k)])
    return P * flip


def itq_rotation(V, B):
    """Orthogonal ``R`` minimising ``‖B − V R‖_F`` (ITQ's R-step)."""
    S, _, Sh_t = np.linalg.svd(B.T @ V)
    return Sh_t.T @ S.T


@register("itq")
class ITQ(ParamsMixin, HashingModel):
    """PCA followed by ``n_iter`` (50) ITQ rotations."""

    def __init__(self, bits, n_iter=50, seed=0):
        self.bits = bits
        self.n_iter = n_iter
        self.seed = seed

    def _fit(self, X, y):
        check_nonnegative("n_iter", self.n_iter, integer=True)
        if self.bits > min(X.shape):
            raise ValueError(f"itq: bits={self.bits} exceeds min(n_samples, n_features) = "
                             f"{min(X.shape)} (PCA cannot give that many directions)")
        rng = np.random.default_rng(self.seed)
        self.mean_ = X.mean(axis=0)
        self.pca_ = pca_directions(X - self.mean_, self.bits)
        V = (X - self.mean_) @ self.pca_
        R, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        for it in range(self.n_iter):
            B = signs(V @ R)
            R = itq_rotation(V, B)
            self.history_.append({"iteration": it,
                                  "loss": float(((signs(V @ R) - V @ R) ** 2).sum())})
        self.R_ = R

    def _project(self, X):
        return (X - self.mean_) @ self.pca_ @ self.R_

    def _state(self):
        return {"mean_": self.mean_, "pca_": self.pca_, "R_": self.R_}
