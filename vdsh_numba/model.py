"""Moved: the VDSH estimator and its training engine live in :mod:`vdsh_numba.vdsh`.

Kept only so that ``from vdsh_numba.model import TRAIN_DEFAULTS`` in ``vdsh_numba/params.py``
(not this change's file) keeps working; import from ``vdsh_numba.vdsh`` instead. Remove this
module once params.py does.
"""
from .vdsh import TRAIN_DEFAULTS, VDSH, TrainingDiverged, forward

__all__ = ["VDSH", "TRAIN_DEFAULTS", "TrainingDiverged", "forward"]
