"""The CPU backend of the VDSH engine: numpy/BLAS for the products, the ``@njit`` kernels of
:mod:`vdsh_numba.methods.vdsh.admm` for everything elementwise or per sample.

Twin of :mod:`vdsh_numba.methods.vdsh.cuda_ops`: the same public names with the same signatures
(``tests/test_engine.py`` checks it). "Device" arrays are numpy arrays here; ``to_device`` and
``to_host`` cost nothing. The engine (:mod:`vdsh_numba.methods.vdsh.engine`) calls only what is listed
in ``__all__``.
"""
from __future__ import annotations

import numpy as np

from .admm import a_residual, a_rhs, bias_act, dcc_codes, dual_update, shift_target, sq_dist, z_update

__all__ = ["NAME", "to_device", "to_host", "empty", "zeros", "synchronize", "batch_rows", "gemm",
           "add_bias", "cast", "codes_rhs", "sign_agreement", "all_finite", "ridge_moments",
           "code_moments", "bias_act", "z_update", "dual_update", "shift_target", "a_rhs",
           "a_residual", "sq_dist", "dcc_codes"]

NAME = "cpu"


def to_device(x, dtype=np.float32):
    """A C-contiguous array of ``dtype`` holding ``x`` (``x`` itself when it already is one)."""
    return np.ascontiguousarray(x, dtype=dtype)


def to_host(x):
    """``x`` as a numpy array (on the CPU: ``x`` itself)."""
    return x


def empty(shape, dtype=np.float32):
    return np.empty(shape, dtype)


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def synchronize():
    """Wait for queued work (nothing is queued on the CPU)."""


def batch_rows():
    """Rows per forward pass when projecting (0: all rows at once)."""
    return 0


def gemm(A, B, out, transA=False, transB=False):
    """``out = op(A) @ op(B)`` (float32, BLAS); ``op(X)`` is ``X.T`` when its flag is set."""
    return np.dot(A.T if transA else A, B.T if transB else B, out=out)


def add_bias(x, b, out):
    """``out = x + b``, ``b`` added to every row."""
    np.add(x, b, out=out)


def cast(src, dst):
    """``dst[...] = src`` with a dtype conversion."""
    dst[...] = src


def codes_rhs(Y, G, U, nu, Q):
    """``Q = Y @ G.T + nu * U`` (float64): the linear term of the code step."""
    np.add(Y @ G.T, nu * U, out=Q)


def sign_agreement(U, B):
    """Number of entries with ``(U > 0) == (B > 0)``."""
    return int(np.count_nonzero((U > 0) == (B > 0)))


def all_finite(x):
    """Whether every entry of ``x`` is finite."""
    return bool(np.isfinite(x).all())


def ridge_moments(T, A):
    """``(A^T A, T^T A, mean(A, 0), mean(T, 0))`` as host arrays (means float64): what
    :func:`vdsh_numba.methods.vdsh.solves.ridge_from_moments` needs to fit ``T ~ A W^T + b``."""
    muA = A.mean(axis=0, dtype=np.float64)
    muT = T.mean(axis=0, dtype=np.float64)
    return np.dot(A.T, A), np.dot(T.T, A), muA, muT


def code_moments(Bf, Yf):
    """``(B^T B, B^T Y)`` float64 host arrays from float32 codes and labels (integer sums,
    exact below 2^24 samples)."""
    return np.dot(Bf.T, Bf).astype(np.float64), np.dot(Bf.T, Yf).astype(np.float64)
