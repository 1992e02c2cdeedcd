"""The consensus scheme's tasks on the GPU: the ``numba.cuda`` twin of the three task functions
of :mod:`vdsh_numba.methods.vdsh.consensus` (same names, same arguments, device arrays in place of numpy).

``local_solve``, ``block_update`` and ``multiplier_step`` take the training arrays (``A``, ``Z``,
``Lam``, the codes) as device arrays and the small ones (weights, copies, duals: ``w x w``) as
numpy arrays, exactly as the sequential CUDA trainer splits the work: every product over the
samples is :func:`vdsh_numba.methods.vdsh.gpu_admm.gemm` on the device, every elementwise step a kernel of
:mod:`vdsh_numba.methods.vdsh.gpu_admm` (the sequential scheme's kernels: the consensus scheme needs no new
ones), and the ``w x w`` systems are solved on the host in float64 by the very functions the CPU
tasks use (:func:`~vdsh_numba.methods.vdsh.consensus.ridge_consensus_moments`,
:func:`~vdsh_numba.methods.vdsh.consensus.a_system`, :func:`~vdsh_numba.methods.vdsh.consensus.copy_average`).

Run a sweep on the device with ``consensus_sweep(S, SerialExecutor(), ops=gpu_consensus)``: the
tasks are launched one after another on the default stream, each a set of device-wide kernels
(the parallelism is inside each task, over samples).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from . import gpu_admm as ga
from .consensus import a_system, copy_average, ridge_consensus_moments

__all__ = ["local_solve", "block_update", "multiplier_step"]


def _up(x):
    return cuda.to_device(np.ascontiguousarray(x, dtype=np.float32))


def _target(Z, Lam):
    """``Z + Lam`` on the device (``Lam`` None: ``Z`` itself)."""
    if Lam is None:
        return Z
    out = cuda.device_array(Z.shape, np.float32)
    ga.shift_target(Z, Lam, cuda.to_device(np.zeros(Z.shape[1], np.float32)), out)
    return out


def _ridge(A, T, c, r, eta, V, v):
    """Twin of :func:`vdsh_numba.methods.vdsh.consensus.ridge_consensus`: moments on the device, solve on the host."""
    d, k = A.shape[1], T.shape[1]
    SAA = ga.gemm(A, A, cuda.device_array((d, d), np.float32), transA=True)
    STA = ga.gemm(T, A, cuda.device_array((k, d), np.float32), transA=True)
    muA, muT = cuda.device_array(d, np.float64), cuda.device_array(k, np.float64)
    ga.col_mean(A, muA)
    ga.col_mean(T, muT)
    return ridge_consensus_moments(SAA.copy_to_host(), STA.copy_to_host(), muA.copy_to_host(),
                                   muT.copy_to_host(), A.shape[0], c, r, eta, V, v)


def local_solve(prob):
    """Twin of :func:`vdsh_numba.methods.vdsh.consensus.local_solve` (``A``, ``Z``, ``Lam`` on the device)."""
    eta = prob["eta"]
    A, Z, Lam, c, r, V, v = prob["lo"]
    lo = _ridge(A, _target(Z, Lam), c, r, eta, V, v)
    A_hi, Z, Lam, c, r, V, v = prob["hi"]
    if prob.get("through", False):
        p = ga.gemm(A, _up(lo[0]), cuda.device_array((A.shape[0], lo[0].shape[0]), np.float32), transB=True)
        z, A_hi = cuda.device_array(p.shape, np.float32), cuda.device_array(p.shape, np.float32)
        ga.bias_act(p, _up(lo[1]), A, prob["residual_mid"], z, A_hi)
    hi = _ridge(A_hi, _target(Z, Lam), c, r, eta, V, v)
    return lo, hi


def block_update(blk):
    """Twin of :func:`vdsh_numba.methods.vdsh.consensus.block_update` (the ``n x w`` arrays on the device)."""
    a_prev, z, lam = blk["a_prev"], blk["z"], blk["lam"]
    n, w = z.shape
    Wa, gb, Minv = a_system(blk["above"], blk["coef"], blk["gamma"], blk["skip"])
    q = ga.gemm(_target(blk["T_z"], blk["T_lam"]), _up(Wa), cuda.device_array((n, w), np.float32))
    ga.add_bias(q, _up(-gb), q)
    rhs = cuda.device_array((n, w), np.float32)
    a_next = blk["a_next"] if blk["a_next"] is not None else z
    z_next = blk["z_next"] if blk["z_next"] is not None else z
    ga.a_rhs(q, blk["coef"], a_next, z_next, blk["skip"], a_prev, z, blk["gamma"], blk["residual"], rhs)
    a = ga.gemm(rhs, _up(Minv), cuda.device_array((n, w), np.float32))
    Wb, bb = copy_average(blk["below"])
    p = ga.gemm(a_prev, _up(Wb), cuda.device_array((n, w), np.float32), transB=True)
    znew = cuda.device_array((n, w), np.float32)
    ga.z_update(a, a_prev, p, _up(bb), lam, blk["beta"], blk["gamma"], blk["residual"], znew)
    return a, znew


def multiplier_step(lam, z, a, a_prev, W, b, residual):
    """Twin of :func:`vdsh_numba.methods.vdsh.consensus.multiplier_step` (returns a new device ``Λ``)."""
    p = ga.gemm(a_prev, _up(W), cuda.device_array(z.shape, np.float32), transB=True)
    out = cuda.device_array(lam.shape, np.float32)
    out.copy_to_device(lam)
    rz = ga.dual_update(out, z, p, _up(b))
    ra = ga.a_residual(a, a_prev, z, residual)
    return out, rz, ra
