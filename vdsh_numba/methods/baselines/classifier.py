"""The classifier baseline: a classifier's predicted class mapped to that class's codeword.

Sablayrolles, Douze, Usunier & Jégou, *How should we evaluate supervised hashing?* (ICASSP
2017) show that this trivial encoding - it throws away everything but the predicted class -
reaches a higher mAP than most supervised hashing methods under the usual protocols: a sanity row
that a hashing method has to beat to claim it ranks better than a classifier.

The classifier is the shared MLP of :mod:`vdsh_numba.methods.baselines.mlp` (same depth, width and
Adam training as the deep baselines) with ``C`` outputs and softmax cross-entropy. The codewords
are ``C`` random ``{-1, +1}`` words of ``bits`` bits, far apart in Hamming distance
(:func:`vdsh_numba.methods.vdsh.solves.class_codebook`, drawn from ``seed``). Every item of a predicted class
gets the same code, so its Hamming ranking is by predicted class only (ties broken by index).
"""
from __future__ import annotations

import numpy as np

from ..base import check_features, register
from ..vdsh.solves import class_codebook
from .mlp import DeepHashingModel

__all__ = ["Classifier", "softmax_cross_entropy"]


def softmax_cross_entropy(U, Y):
    """Mean cross-entropy of logits ``U`` against one-hot ``Y`` and its gradient w.r.t. ``U``."""
    Z = U - U.max(axis=1, keepdims=True)
    E = np.exp(Z)
    S = E.sum(axis=1, keepdims=True)
    logp = Z - np.log(S)
    n = U.shape[0]
    loss = -(Y * logp).sum() / n
    return loss, (E / S - Y) / n


@register("classifier")
class Classifier(DeepHashingModel):
    """MLP classifier + class codewords (single-label data only)."""

    single_label = True

    def __init__(self, bits, depth=2, width=256, residual=False, epochs=40, batch_size=128,
                 lr=1e-3, weight_decay=0.0, seed=0):
        super().__init__(bits, depth, width, residual, epochs, batch_size, lr, weight_decay, seed)

    def _output_units(self) -> int:
        return self._Y.shape[1]

    def _setup(self, X, Y, rng):
        self.codebook_ = class_codebook(Y.shape[1], self.bits, rng)

    def _batch_loss(self, U, idx):
        loss, dU = softmax_cross_entropy(U, self._Y[idx])
        return loss, dU, ()

    def predict(self, X):
        """Predicted class ids of ``X``."""
        self._check_fitted()
        return np.argmax(self.net_forward(check_features(X, "X", self.n_features_in_)), axis=1)

    def _project(self, X):
        return self.codebook_[np.argmax(self.net_forward(X), axis=1)]

    def _extra_state(self) -> dict:
        return {"codebook_": self.codebook_}
