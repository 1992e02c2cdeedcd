"""DTSH: deep supervised hashing with triplet labels (Wang, Shi, Kitani, ACCV 2016).

Every triplet ``(q, p, n)`` of the minibatch with ``q ≠ p`` similar and ``n`` dissimilar::

    Θ_ij = u_iᵀ u_j / 2
    L = mean_{(q,p,n)} −log σ(Θ_qp − Θ_qn − α)   +   η mean_{i,k} (u_ik − sign(u_ik))²

margin ``α = bits / 2`` by default; the triplet sum runs in a compiled loop.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..base import register
from ._common import check_nonnegative, signs
from .dpsh import similarity
from .mlp import DeepHashingModel

__all__ = ["DTSH", "dtsh_loss", "triplet_theta_grad"]


@nb.njit(cache=True)
def triplet_theta_grad(theta, sim, alpha):
    """Sum over triplets of ``softplus(−(Θ_qp − Θ_qn − α))`` and its gradient w.r.t. ``Θ``.

    Returns ``(loss_sum, count, G)`` with ``G[i, j] = dLoss_sum/dΘ_ij``.
    """
    b = theta.shape[0]
    G = np.zeros((b, b))
    total = 0.0
    count = 0
    for q in range(b):
        for p in range(b):
            if p == q or not sim[q, p]:
                continue
            for m in range(b):
                if sim[q, m]:
                    continue
                z = theta[q, p] - theta[q, m] - alpha
                # softplus(-z) and its derivative sigmoid(-z), both overflow-free
                if z > 0:
                    e = np.exp(-z)
                    total += np.log1p(e)
                    s = e / (1.0 + e)
                else:
                    e = np.exp(z)
                    total += -z + np.log1p(e)
                    s = 1.0 / (1.0 + e)
                G[q, p] -= s
                G[q, m] += s
                count += 1
    return total, count, G


def dtsh_loss(U, sim, alpha, eta):
    """Loss and ``dL/dU`` of a minibatch (``sim``: boolean ``(b, b)`` similarity)."""
    theta = 0.5 * (U @ U.T)
    total, count, G = triplet_theta_grad(theta, sim, float(alpha))
    if count:
        total, G = total / count, G / count
    R = U - signs(U)
    loss = total + eta * (R * R).mean()
    dU = 0.5 * ((G + G.T) @ U) + 2.0 * eta * R / R.size
    return loss, dU


@register("dtsh")
class DTSH(DeepHashingModel):
    """DTSH on the shared MLP. ``alpha``: margin (negative, the default, means bits/2); ``eta``:
    quantization weight η."""

    def __init__(self, bits, depth=2, width=256, residual=False, epochs=40, batch_size=128,
                 lr=1e-3, weight_decay=0.0, alpha=-1.0, eta=1.0, seed=0):
        super().__init__(bits, depth, width, residual, epochs, batch_size, lr, weight_decay,
                         seed)
        self.alpha = alpha
        self.eta = eta

    @property
    def margin(self) -> float:
        """The margin in use: ``alpha``, or ``bits / 2`` where ``alpha < 0`` (the default)."""
        return self.bits / 2.0 if self.alpha < 0 else float(self.alpha)

    def _setup(self, X, Y, rng):
        check_nonnegative("eta", self.eta)

    def _batch_loss(self, U, idx):
        Yb = self._Y[idx]
        loss, dU = dtsh_loss(U, similarity(Yb, Yb) > 0, self.margin, self.eta)
        return loss, dU, ()
