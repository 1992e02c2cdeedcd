"""DCWH: deep class-wise hashing (Zhe, Chen, Yan 2018), on the shared MLP.

Class centres ``c_k`` (the mean network output of class ``k`` over the training set,
refreshed every ``center_every`` epochs and held fixed in between)::

    L = mean_i [ −log softmax_k(−½‖u_i − c_k‖²)[y_i]
                 + μ_c Σ_j relu(|u_ij| − 1.1)             (hypercube penalty)
                 + μ_v ‖sign(u_i) − u_i‖² ]               (vertex penalty)
"""
from __future__ import annotations

import numpy as np

from ..base import register
from ._common import check_nonnegative, check_positive, signs
from .mlp import DeepHashingModel

__all__ = ["DCWH", "dcwh_loss", "class_centres"]

CUBE = 1.1


def dcwh_loss(U, y, C, mu_cube, mu_vertex):
    """Loss and ``dL/dU`` of a minibatch: ``U (b, bits)``, class ids ``y (b,)``, centres
    ``C (K, bits)`` (constant)."""
    b = U.shape[0]
    d2 = (U * U).sum(1)[:, None] - 2.0 * U @ C.T + (C * C).sum(1)[None, :]
    logits = -0.5 * d2
    logits -= logits.max(axis=1, keepdims=True)
    logZ = np.log(np.exp(logits).sum(axis=1))
    P = np.exp(logits - logZ[:, None])
    rows = np.arange(b)
    ce = (logZ - logits[rows, y]).sum()
    excess = np.abs(U) - CUBE
    R = signs(U) - U
    loss = ce + mu_cube * np.maximum(excess, 0.0).sum() + mu_vertex * (R * R).sum()
    P[rows, y] -= 1.0
    # d(-½‖u - c_k‖²)/du = c_k - u and Σ_k (p_k - y_k) = 0, so dCE/du_i = Σ_k (p_ik - y_ik) c_k
    dU = P @ C + mu_cube * np.where(excess > 0, np.sign(U), 0.0) - 2.0 * mu_vertex * R
    return loss / b, dU / b


def class_centres(U, y, n_classes):
    """Mean row of ``U`` per class (a class without rows gets 0)."""
    C = np.zeros((n_classes, U.shape[1]))
    np.add.at(C, y, U)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return C / np.maximum(counts, 1.0)[:, None]


@register("dcwh")
class DCWH(DeepHashingModel):
    """DCWH on the shared MLP. ``mu_cube``/``mu_vertex``: penalty weights; ``center_every``:
    epochs between centre refreshes."""

    single_label = True

    def __init__(self, bits, depth=2, width=256, residual=False, epochs=40, batch_size=128,
                 lr=1e-3, weight_decay=0.0, mu_cube=1.0, mu_vertex=0.1, center_every=2,
                 seed=0):
        super().__init__(bits, depth, width, residual, epochs, batch_size, lr, weight_decay,
                         seed)
        self.mu_cube = mu_cube
        self.mu_vertex = mu_vertex
        self.center_every = center_every

    def _setup(self, X, Y, rng):
        check_nonnegative("mu_cube", self.mu_cube)
        check_nonnegative("mu_vertex", self.mu_vertex)
        check_positive("center_every", self.center_every, integer=True)

    def _epoch_start(self, epoch, X):
        if epoch % self.center_every == 0:
            self.centres_ = class_centres(self.net_forward(X), self._y, self._Y.shape[1])

    def _batch_loss(self, U, idx):
        loss, dU = dcwh_loss(U, self._y[idx], self.centres_, self.mu_cube, self.mu_vertex)
        return loss, dU, ()

    def _extra_state(self):
        return {"centres_": self.centres_}
