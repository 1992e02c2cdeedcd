"""LSH: random hyperplanes through the training mean (Charikar 2002, sign random projections).

``h(x) = sign((x − μ) W)`` with ``W`` (``d × bits``) i.i.d. standard normal and ``μ`` the
training mean. Labels are not used.
"""
from __future__ import annotations

import numpy as np

from ..base import HashingModel, register
from ._common import ParamsMixin

__all__ = ["LSH"]


@register("lsh")
class LSH(ParamsMixin, HashingModel):
    """Random-hyperplane LSH on centred features."""

    def __init__(self, bits, seed=0):
        self.bits = bits
        self.seed = seed

    def _fit(self, X, y):
        rng = np.random.default_rng(self.seed)
        self.mean_ = X.mean(axis=0)
        self.W_ = rng.standard_normal((X.shape[1], self.bits))

    def _project(self, X):
        return (X - self.mean_) @ self.W_

    def _state(self):
        return {"mean_": self.mean_, "W_": self.W_}
