"""The CUDA backend of the VDSH engine: cuBLAS through CuPy (or the tiled ``numba.cuda`` GEMM)
for the products, the ``numba.cuda`` kernels of :mod:`vdsh_numba.methods.vdsh.gpu_admm` for everything
elementwise or per sample.

Twin of :mod:`vdsh_numba.methods.vdsh.cpu_ops`: the same public names with the same signatures.
"Device" arrays are numba ``DeviceNDArray``s. What crosses to the host: the moments of the
local least-squares problems (``w x w``, ``bits x w``, ``bits x C`` matrices and column
means, formed on the device in O(n w^2)) and the scalar sums of the reductions; the engine
factorises the small systems on the host in float64, as the CPU backend does.

Importing this module needs numba's CUDA target but no GPU; the estimator imports it only for
``backend="cuda"`` after :func:`vdsh_numba.backend.require_cuda`.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ... import config
from . import gpu_admm as ga
from .gpu_admm import a_residual, a_rhs, bias_act, dcc_codes, dual_update, shift_target, sq_dist, z_update

__all__ = ["NAME", "to_device", "to_host", "empty", "zeros", "synchronize", "batch_rows", "gemm",
           "add_bias", "cast", "codes_rhs", "sign_agreement", "all_finite", "ridge_moments",
           "code_moments", "bias_act", "z_update", "dual_update", "shift_target", "a_rhs",
           "a_residual", "sq_dist", "dcc_codes"]

NAME = "cuda"


def to_device(x, dtype=np.float32):
    """A device copy of host ``x`` as a C-contiguous array of ``dtype``."""
    return cuda.to_device(np.ascontiguousarray(x, dtype=dtype))


def to_host(x):
    """A host (numpy) copy of device array ``x``."""
    return x.copy_to_host()


def empty(shape, dtype=np.float32):
    return cuda.device_array(shape, dtype=dtype)


def zeros(shape, dtype=np.float32):
    return cuda.to_device(np.zeros(shape, dtype))


def synchronize():
    """Wait for every queued kernel (timings)."""
    cuda.synchronize()


def batch_rows():
    """Rows per forward pass when projecting (``config.CUDA_FORWARD_ROWS``)."""
    return max(1, int(config.CUDA_FORWARD_ROWS))


def gemm(A, B, out, transA=False, transB=False):
    """``out = op(A) @ op(B)`` (float32, cuBLAS or the tiled kernel); ``op(X)`` is ``X.T`` when
    its flag is set."""
    return ga.gemm(A, B, out, transA, transB)


def add_bias(x, b, out):
    """``out = x + b``, ``b`` added to every row."""
    ga.add_bias(x, b, out)


def cast(src, dst):
    """``dst[...] = src`` with a dtype conversion."""
    ga.cast(src, dst)


def codes_rhs(Y, G, U, nu, Q):
    """``Q = Y @ G.T + nu * U`` (float64): the linear term of the code step."""
    ga.codes_rhs(Y, G, U, nu, Q)


def sign_agreement(U, B):
    """Number of entries with ``(U > 0) == (B > 0)``."""
    return ga.sign_agreement(U, B)


def all_finite(x):
    """Whether every entry of ``x`` is finite: ``sum((x - x)^2)`` is 0 exactly then, NaN
    otherwise (one float64 per row comes back)."""
    return ga.sq_dist(x, x) == 0.0


def ridge_moments(T, A):
    """``(A^T A, T^T A, mean(A, 0), mean(T, 0))`` as host arrays (means float64), formed on the
    device: what :func:`vdsh_numba.methods.vdsh.solves.ridge_from_moments` needs to fit ``T ~ A W^T + b``."""
    w, m = A.shape[1], T.shape[1]
    muA = cuda.device_array(w, np.float64)
    muT = cuda.device_array(m, np.float64)
    ga.col_mean(A, muA)
    ga.col_mean(T, muT)
    SAA = cuda.device_array((w, w), np.float32)
    STA = cuda.device_array((m, w), np.float32)
    gemm(A, A, SAA, transA=True)
    gemm(T, A, STA, transA=True)
    return SAA.copy_to_host(), STA.copy_to_host(), muA.copy_to_host(), muT.copy_to_host()


def code_moments(Bf, Yf):
    """``(B^T B, B^T Y)`` float64 host arrays from float32 codes and labels (integer sums,
    exact below 2^24 samples)."""
    k, c = Bf.shape[1], Yf.shape[1]
    BtB = cuda.device_array((k, k), np.float32)
    BtY = cuda.device_array((k, c), np.float32)
    gemm(Bf, Bf, BtB, transA=True)
    gemm(Bf, Yf, BtY, transA=True)
    return BtB.copy_to_host().astype(np.float64), BtY.copy_to_host().astype(np.float64)
