"""Tie-aware AP hashing (He, Cakir, Bargal, Sclaroff, CVPR 2018), on the shared MLP.

Relaxed codes ``φ = 2σ(γu) − 1`` give relaxed Hamming distances ``d_ij = (L − φ_iᵀφ_j)/2``
in ``[0, L]``. Each query ``q`` of the minibatch ranks the rest of the minibatch: triangular
binning puts weight ``max(0, 1 − |d − l|)`` of each distance into bin ``l = 0..L``, giving soft
counts ``c⁺_l`` (similar items) and ``c⁻_l`` (dissimilar) with ``n_l = c⁺_l + c⁻_l``,
``P_l = Σ_{m<l} c⁺_m`` and ``N_l = Σ_{m<l} n_m``. The tie-aware AP (He et al., Eq. 7) averages
precision over the ``n_l`` tied positions of bin ``l``; we take that average at the mean tied
position (exact when ``n_l ≤ 1``, and a smooth function of the counts)::

    AP_T(q) = (1/N⁺) Σ_l c⁺_l (P_l + (c⁺_l + 1)/2) / (N_l + (n_l + 1)/2)

    L = 1 − mean_q AP_T(q)        (queries with no similar item in the batch are skipped)

Histogram, AP and the exact gradient ``dL/dd_qj`` run in one compiled loop per query.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..base import register
from ._common import check_positive
from .dpsh import similarity
from .mlp import DeepHashingModel

__all__ = ["TieAP", "tie_ap_loss", "soft_ap_dist_grad"]


@nb.njit(cache=True)
def soft_ap_dist_grad(D, sim, n_bins):
    """Mean relaxed tie-aware AP over queries (rows of ``D``, self excluded) and its gradient
    w.r.t. the distances ``D (b, b)``; bins ``0..n_bins-1`` at unit spacing.

    Returns ``(mean_ap, n_queries, dAP)`` where ``dAP[q, j] = d(mean_ap)/dD[q, j]``.
    """
    b = D.shape[0]
    L = n_bins - 1
    dAP = np.zeros((b, b))
    cp = np.zeros(n_bins)
    cn = np.zeros(n_bins)
    gp = np.zeros(n_bins)
    gn = np.zeros(n_bins)
    lo_of = np.zeros(b, np.int64)
    Pl = np.zeros(n_bins)
    Dl = np.zeros(n_bins)
    total = 0.0
    nq = 0
    for q in range(b):
        cp[:] = 0.0
        cn[:] = 0.0
        npos = 0
        for j in range(b):
            if j == q:
                continue
            d = min(max(D[q, j], 0.0), float(L))
            lo = min(int(np.floor(d)), L - 1) if L > 0 else 0
            w = d - lo
            lo_of[j] = lo
            if sim[q, j]:
                npos += 1
                cp[lo] += 1.0 - w
                if L > 0:
                    cp[lo + 1] += w
            else:
                cn[lo] += 1.0 - w
                if L > 0:
                    cn[lo + 1] += w
        if npos == 0:
            continue
        nq += 1
        # forward: AP = (1/N+) Σ_l A_l / D_l
        ap = 0.0
        P = 0.0
        N = 0.0
        # suffix sums for the gradient: S+_m = Σ_{l>m} (c+_l/D_l - A_l/D_l²), S-_m = Σ_{l>m} (-A_l/D_l²)
        sp = 0.0
        sn = 0.0
        for l in range(n_bins):
            Pl[l] = P
            Dl[l] = N + 0.5 * (cp[l] + cn[l] + 1.0)
            ap += cp[l] * (P + 0.5 * (cp[l] + 1.0)) / Dl[l]
            P += cp[l]
            N += cp[l] + cn[l]
        for l in range(n_bins - 1, -1, -1):
            A = cp[l] * (Pl[l] + 0.5 * (cp[l] + 1.0))
            Dd = Dl[l]
            own_p = (Pl[l] + cp[l] + 0.5) / Dd - 0.5 * A / (Dd * Dd)
            own_n = -0.5 * A / (Dd * Dd)
            gp[l] = own_p + sp
            gn[l] = own_n + sn
            sp += cp[l] / Dd - A / (Dd * Dd)
            sn += -A / (Dd * Dd)
        total += ap / npos
        for j in range(b):
            if j == q:
                continue
            lo = lo_of[j]
            g = gp if sim[q, j] else gn
            if L > 0 and 0.0 < D[q, j] < L:
                dAP[q, j] = (g[lo + 1] - g[lo]) / npos
    if nq > 0:
        total /= nq
        dAP /= nq
    return total, nq, dAP


def tie_ap_loss(U, sim, gamma):
    """Loss ``1 − mean AP_T`` of a minibatch and ``dL/dU`` (``sim``: boolean ``(b, b)``)."""
    L = U.shape[1]
    phi = np.tanh(0.5 * gamma * U)  # = 2σ(γu) − 1
    D = 0.5 * (L - phi @ phi.T)
    ap, nq, dAP = soft_ap_dist_grad(D, sim, L + 1)
    # dD_qj/dφ_q = −φ_j/2 and dD_qj/dφ_j = −φ_q/2;  dφ/du = (γ/2)(1 − φ²)
    # so d(1 − ap)/dφ = ½ (dAP + dAPᵀ) φ
    dphi = 0.5 * ((dAP + dAP.T) @ phi)
    dU = dphi * (0.5 * gamma) * (1.0 - phi * phi)
    return 1.0 - ap, dU


@register("tie_ap")
class TieAP(DeepHashingModel):
    """Tie-aware AP hashing on the shared MLP. ``gamma``: slope of the relaxation."""

    def __init__(self, bits, depth=2, width=256, residual=False, epochs=40, batch_size=256,
                 lr=1e-3, weight_decay=0.0, gamma=1.0, seed=0):
        super().__init__(bits, depth, width, residual, epochs, batch_size, lr, weight_decay,
                         seed)
        self.gamma = gamma

    def _setup(self, X, Y, rng):
        check_positive("gamma", self.gamma)

    def _batch_loss(self, U, idx):
        Yb = self._Y[idx]
        loss, dU = tie_ap_loss(U, similarity(Yb, Yb) > 0, self.gamma)
        return loss, dU, ()
