"""The VDSH network and objective trained end to end by backpropagation (the paper's foil).

VDSH (Zhang, Chen, Saligrama 2016) fits the network output ``U`` to binary codes ``B`` that
predict one-hot labels ``Y`` through a linear classifier ``G`` (``C × bits``)::

    min ‖Y − B Gᵀ‖² + λ‖G‖² + ν‖B − U‖²,     B ∈ {±1}

Backpropagation cannot optimise over ``B`` directly, so ``B`` is relaxed to ``B̃ = tanh(U)``
(``relax="tanh"``) or to ``sign(U)`` with the straight-through gradient of the hard tanh
(``relax="ste"``: forward ``sign(u)``, backward ``1[|u| ≤ 1]``). Per minibatch ``I`` of an
``n``-item training set, jointly over the network weights and ``G``::

    L = (1/|I|) Σ_{i∈I} [ ‖y_i − G b̃_i‖² + ν ‖u_i − sign(u_i)‖² ] + (λ/n) ‖G‖²

so the full-batch value is the paper's objective over ``n`` with ``B − U`` measured at the
hard codes. ``residual=True`` adds identity shortcuts to the hidden layers (see
:mod:`vdsh_numba.methods.baselines.mlp`), matching the residual structure the ADMM VDSH uses.
"""
from __future__ import annotations

import numpy as np

from ..base import register
from ._common import check_nonnegative, signs
from .mlp import DeepHashingModel

__all__ = ["VDSHBackprop", "VDSHBackpropResidual", "vdsh_bp_loss", "RELAXATIONS"]

RELAXATIONS = ("tanh", "ste")


def vdsh_bp_loss(U, Y, G, lam, nu, n_train, relax="tanh"):
    """Loss, ``dL/dU`` and ``dL/dG`` of a minibatch (``U (b, bits)``, ``Y (b, C)``, ``G (C, bits)``)."""
    b = U.shape[0]
    S = signs(U)
    if relax == "tanh":
        Bt = np.tanh(U)
        dB_dU = 1.0 - Bt * Bt
    elif relax == "ste":
        Bt = S
        dB_dU = (np.abs(U) <= 1.0).astype(np.float64)
    else:
        raise ValueError(f"relax must be one of {RELAXATIONS}, got {relax!r}")
    R = Bt @ G.T - Y
    Q = U - S
    loss = ((R * R).sum() + nu * (Q * Q).sum()) / b + lam / n_train * (G * G).sum()
    dU = (2.0 / b) * ((R @ G) * dB_dU + nu * Q)
    dG = (2.0 / b) * (R.T @ Bt) + (2.0 * lam / n_train) * G
    return loss, dU, dG


@register("vdsh_backprop")
class VDSHBackprop(DeepHashingModel):
    """VDSH objective by backprop. ``lam``: λ on ‖G‖²; ``nu``: quantization ν;
    ``relax``: ``"tanh"`` or ``"ste"``; ``residual``: identity shortcuts in hidden layers."""

    def __init__(self, bits, depth=2, width=256, residual=False, epochs=40, batch_size=128,
                 lr=1e-3, weight_decay=0.0, lam=1.0, nu=0.1, relax="tanh", seed=0):
        super().__init__(bits, depth, width, residual, epochs, batch_size, lr, weight_decay,
                         seed)
        self.lam = lam
        self.nu = nu
        self.relax = relax

    def _setup(self, X, Y, rng):
        check_nonnegative("lam", self.lam)
        check_nonnegative("nu", self.nu)
        if self.relax not in RELAXATIONS:
            raise ValueError(f"relax must be one of {RELAXATIONS}, got {self.relax!r}")
        self.G_ = rng.standard_normal((Y.shape[1], self.bits)) * (1.0 / np.sqrt(self.bits))
        self._n = X.shape[0]

    def _extra_params(self):
        return [self.G_]

    def _batch_loss(self, U, idx):
        loss, dU, dG = vdsh_bp_loss(U, self._Y[idx], self.G_, self.lam, self.nu, self._n,
                                    self.relax)
        return loss, dU, (dG,)

    def _extra_state(self):
        return {"G_": self.G_}


@register("vdsh_backprop_residual")
class VDSHBackpropResidual(VDSHBackprop):
    """:class:`VDSHBackprop` with ``residual=True`` by default, registered under its own name so
    a run over methods compares backprop with and without shortcuts side by side."""

    def __init__(self, bits, depth=2, width=256, residual=True, epochs=40, batch_size=128,
                 lr=1e-3, weight_decay=0.0, lam=1.0, nu=0.1, relax="tanh", seed=0):
        super().__init__(bits, depth, width, residual, epochs, batch_size, lr, weight_decay,
                         lam, nu, relax, seed)
