"""DPSH: deep pairwise-supervised hashing (Li, Wang, Kang, IJCAI 2016), on the shared MLP.

Loss of a minibatch ``I`` against all ``n`` training items (the authors' PyTorch port)::

    Θ_ij = u_iᵀ u_j / 2,        s_ij = 1 if i and j share a label else 0
    L = [ Σ_{i∈I, j} (log(1 + e^{Θ_ij}) − s_ij Θ_ij)  +  λ Σ_{i∈I} ‖b_i − u_i‖² ] / (|I| n)

with ``b_i = sign(u_i)`` held fixed and ``u_j`` taken from a buffer of every training item's
latest output (refreshed with each minibatch, held fixed in the gradient), as in the port.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..base import register
from ._common import check_nonnegative, signs
from .mlp import DeepHashingModel, mlp_forward

__all__ = ["DPSH", "dpsh_loss", "similarity", "pair_loss_grad"]


def similarity(Ya, Yb) -> np.ndarray:
    """``s_ij = 1`` where rows share at least one label (one-hot or multi-label matrices)."""
    return (Ya @ Yb.T > 0).astype(np.float64)


@nb.njit(cache=True)
def pair_loss_grad(theta, S):
    """``Σ (log(1 + e^Θ) − sΘ)`` and its gradient ``σ(Θ) − s`` in one fused, overflow-free pass
    (one ``exp`` and one ``log1p`` per pair)."""
    G = np.empty_like(theta)
    total = 0.0
    for i in range(theta.shape[0]):
        for j in range(theta.shape[1]):
            t = theta[i, j]
            e = np.exp(-abs(t))
            total += max(t, 0.0) + np.log1p(e) - S[i, j] * t
            sig = 1.0 / (1.0 + e) if t >= 0 else e / (1.0 + e)
            G[i, j] = sig - S[i, j]
    return total, G


def dpsh_loss(U, U_all, S, lam):
    """Loss and ``dL/dU`` of a minibatch ``U (b, bits)`` against ``U_all (n, bits)`` (constant).

    Notes
    -----
    Li, Wang, Kang (IJCAI 2016), Eq. (3)/(4) relaxed; normalisation by ``b n`` as in the
    authors' port (``logloss.sum() / (num_train * batch)``).
    """
    b, n = U.shape[0], U_all.shape[0]
    theta = 0.5 * (U @ U_all.T)
    B = signs(U)
    R = B - U
    pair, G = pair_loss_grad(theta, S)
    loss = pair + lam * (R * R).sum()
    dU = 0.5 * (G @ U_all) - 2.0 * lam * R
    return loss / (b * n), dU / (b * n)


@register("dpsh")
class DPSH(DeepHashingModel):
    """DPSH on the shared MLP. ``lam``: quantization weight λ (10, the authors' port)."""

    def __init__(self, bits, depth=2, width=256, residual=False, epochs=40, batch_size=128,
                 lr=1e-3, weight_decay=0.0, lam=10.0, seed=0):
        super().__init__(bits, depth, width, residual, epochs, batch_size, lr, weight_decay,
                         seed)
        self.lam = lam

    def _setup(self, X, Y, rng):
        check_nonnegative("lam", self.lam)
        self._U_all = mlp_forward(self.params_, X, self.residual)[0]

    def _batch_loss(self, U, idx):
        self._U_all[idx] = U
        S = similarity(self._Y[idx], self._Y)
        loss, dU = dpsh_loss(U, self._U_all, S, self.lam)
        return loss, dU, ()

    def _fit(self, X, y):
        super()._fit(X, y)
        del self._U_all
