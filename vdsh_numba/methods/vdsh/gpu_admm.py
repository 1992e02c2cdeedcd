"""VDSH's layer-wise ADMM kernels on the GPU: the ``numba.cuda`` twin of :mod:`vdsh_numba.methods.vdsh.admm`.

Every public function takes exactly the arguments of its :mod:`vdsh_numba.methods.vdsh.admm` twin (device
arrays -- numba ``DeviceNDArray`` or anything with ``__cuda_array_interface__``, e.g. CuPy --
in place of numpy arrays) and computes the same thing; the reductions (:func:`dual_update`,
:func:`a_residual`, :func:`sq_dist`, :func:`dcc_codes`) return the same Python scalars: one thread per sample sums
its row in float64, as the CPU kernels do, and the ``n`` row sums are added on the host
(left to right, like numba's ``acc.sum()``)
(one number per sample, never a training array), so the sums are the CPU's. The arithmetic of every kernel body is the CPU kernel's, written
with the same types, so the simulator reproduces the CPU to the last bit; on a GPU, NVVM's
FMA contraction may change the last bit of some float64 intermediates.

Besides the twins there are the few device helpers the GPU training loop needs where the CPU
uses numpy (:func:`add_bias`, :func:`col_mean`, :func:`cast`, :func:`codes_rhs`,
:func:`sign_agreement`) and the dense product :func:`gemm`: cuBLAS through CuPy when CuPy is
installed (zero-copy through ``__cuda_array_interface__``), else a tiled shared-memory
``numba.cuda`` kernel, which also runs under the simulator.

Launch parameters are read on the host from :mod:`vdsh_numba.config`
(``CUDA_THREADS_PER_BLOCK``, ``CUDA_GEMM_TILE``, ``CUDA_USE_CUPY``).
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float32, float64

from ... import config
from ...backend import cupy_or_none

__all__ = ["bias_act", "z_update", "dual_update", "shift_target", "a_rhs", "a_residual",
           "sq_dist", "dcc_codes", "gemm", "add_bias", "col_mean", "cast", "codes_rhs",
           "sign_agreement", "KERNELS"]


# --------------------------------------------------------------------------- device helpers

@cuda.jit(device=True, inline=True)
def _ij(t, w):
    i = t // w
    return i, t - i * w


# --------------------------------------------------------------------------- kernels (twins)

@cuda.jit
def _bias_act_kernel(p, b, a_prev, residual, z_out, a_out):
    w = p.shape[1]
    for t in range(cuda.grid(1), p.shape[0] * w, cuda.gridsize(1)):  # grid-stride
        i, j = _ij(t, w)
        z = p[i, j] + b[j]
        z_out[i, j] = z
        r = float64(z) if z > 0.0 else 0.0  # numba types the CPU's relu as float64
        if residual:
            r += a_prev[i, j]
        a_out[i, j] = r


@cuda.jit
def _z_update_kernel(a, a_prev, p, b, lam, beta, gamma, residual, z_out):
    w = p.shape[1]
    for t in range(cuda.grid(1), p.shape[0] * w, cuda.gridsize(1)):  # grid-stride
        i, j = _ij(t, w)
        beta = float64(beta)   # float64 scalars as in the CPU kernel (the simulator would
        gamma = float64(gamma)  # otherwise follow numpy's float32 * python-float rule)
        tt = a[i, j] - a_prev[i, j] if residual else a[i, j]
        m = p[i, j] + b[j] - lam[i, j]
        zp = (gamma * tt + beta * m) / (gamma + beta)
        if zp < 0.0:
            zp = 0.0
        fp = gamma * (tt - zp) ** 2 + beta * (zp - m) ** 2
        zn = m if m < 0.0 else 0.0
        fn = gamma * tt * tt + beta * (zn - m) ** 2
        z_out[i, j] = zp if fp <= fn else zn


@cuda.jit
def _dual_update_kernel(lam, z, p, b, acc):
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):  # grid-stride
        s = float64(0.0)  # (the simulator would otherwise sum float32 products in float32)
        for j in range(z.shape[1]):
            r = z[i, j] - p[i, j] - b[j]
            lam[i, j] += r
            s += r * r
        acc[i] = s

@cuda.jit
def _shift_target_kernel(z, lam, b, out):
    w = z.shape[1]
    for t in range(cuda.grid(1), z.shape[0] * w, cuda.gridsize(1)):  # grid-stride
        i, j = _ij(t, w)
        out[i, j] = z[i, j] + lam[i, j] - b[j]


@cuda.jit
def _a_rhs_kernel(q, coef_q, a_next, z_next, skip_coef, a_prev, z_l, gamma, residual_l, out):
    w = q.shape[1]
    for t in range(cuda.grid(1), q.shape[0] * w, cuda.gridsize(1)):  # grid-stride
        i, j = _ij(t, w)
        coef_q = float64(coef_q)
        gamma = float64(gamma)
        skip_coef = float64(skip_coef)
        zl = z_l[i, j]
        phi = float64(zl) if zl > 0.0 else 0.0
        if residual_l:
            phi += a_prev[i, j]
        v = coef_q * q[i, j] + gamma * phi
        if skip_coef != 0.0:
            zn = z_next[i, j]
            v += skip_coef * (a_next[i, j] - (float64(zn) if zn > 0.0 else 0.0))
        out[i, j] = v


@cuda.jit
def _a_residual_kernel(a, a_prev, z, residual, acc):
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):  # grid-stride
        s = float64(0.0)  # (the simulator would otherwise sum float32 products in float32)
        for j in range(a.shape[1]):
            zz = z[i, j]
            phi = float64(zz) if zz > 0.0 else 0.0
            if residual:
                phi += a_prev[i, j]
            d = float64(a[i, j]) - phi
            s += d * d
        acc[i] = s

@cuda.jit
def _sq_dist_kernel(x, y, acc):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):  # grid-stride
        s = float64(0.0)  # (the simulator would otherwise sum float32 products in float32)
        for j in range(x.shape[1]):
            d = float64(x[i, j]) - float64(y[i, j])
            s += d * d
        acc[i] = s

@cuda.jit
def _dcc_codes_kernel(B, Q, S, passes, acc):
    """One thread per sample: discrete cyclic coordinate descent over its bits."""
    n, k = B.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):  # grid-stride
        f = 0
        for _ in range(passes):
            changed = 0
            for j in range(k):
                v = Q[i, j]
                for m in range(k):
                    if m != j:
                        v -= S[j, m] * B[i, m]
                nb = B[i, j]
                if v > 0.0:
                    nb = 1.0
                elif v < 0.0:
                    nb = -1.0
                if nb != B[i, j]:
                    B[i, j] = nb
                    changed += 1
            f += changed
            if changed == 0:
                break
        acc[i] = f


# --------------------------------------------------------------------------- kernels (helpers)

@cuda.jit
def _add_bias_kernel(x, b, out):
    w = x.shape[1]
    for t in range(cuda.grid(1), x.shape[0] * w, cuda.gridsize(1)):  # grid-stride
        i, j = _ij(t, w)
        out[i, j] = x[i, j] + b[j]


@cuda.jit
def _col_mean_kernel(x, out):
    n, w = x.shape
    for j in range(cuda.grid(1), w, cuda.gridsize(1)):  # grid-stride
        s = float64(0.0)  # (the simulator would otherwise sum float32 products in float32)
        for i in range(n):
            s += float64(x[i, j])
        out[j] = s / n


@cuda.jit
def _cast_kernel(src, dst):
    w = src.shape[1]
    for t in range(cuda.grid(1), src.shape[0] * w, cuda.gridsize(1)):  # grid-stride
        i, j = _ij(t, w)
        dst[i, j] = src[i, j]


@cuda.jit
def _codes_rhs_kernel(Y, G, U, nu, Q):
    """``Q = Y @ G.T + nu * U`` (float64; ``nu * U`` rounded to float32 first, as numpy does)."""
    k = Q.shape[1]
    for t in range(cuda.grid(1), Q.shape[0] * k, cuda.gridsize(1)):  # grid-stride
        i, j = _ij(t, k)
        s = float64(0.0)  # (the simulator would otherwise sum float32 products in float32)
        for c in range(Y.shape[1]):
            s += Y[i, c] * G[j, c]
        Q[i, j] = s + float64(float32(nu) * U[i, j])


@cuda.jit
def _sign_agreement_kernel(U, B, acc):
    for i in range(cuda.grid(1), U.shape[0], cuda.gridsize(1)):  # grid-stride
        s = float64(0.0)  # (the simulator would otherwise sum float32 products in float32)
        for j in range(U.shape[1]):
            if (U[i, j] > 0) == (B[i, j] > 0):
                s += 1.0
        acc[i] = s

@cuda.jit
def _gemm_kernel(A, B, C, ta, tb, alpha, beta, T):
    """``C = alpha op(A) op(B) + beta C`` (float32) by ``T x T`` tiles in shared memory.

    A block ``(T, T)`` computes ``T x T`` tiles of ``C`` (grid-stride over the tiles); dynamic
    shared memory ``2 T^2`` float32.
    """
    sm = cuda.shared.array(0, dtype=float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    M = C.shape[0]
    N = C.shape[1]
    K = A.shape[0] if ta else A.shape[1]
    TT = T * T
    tiles_n = (N + T - 1) // T
    for tile in range(cuda.blockIdx.x, tiles_n * ((M + T - 1) // T), cuda.gridDim.x):  # grid-stride
        row = (tile // tiles_n) * T + ty
        col = (tile % tiles_n) * T + tx
        _gemm_tile(A, B, C, ta, tb, alpha, beta, T, TT, K, M, N, row, col, tx, ty, sm)


@cuda.jit(device=True, inline=True)
def _gemm_tile(A, B, C, ta, tb, alpha, beta, T, TT, K, M, N, row, col, tx, ty, sm):
    acc = float32(0.0)
    for k0 in range(0, K, T):
        ka = k0 + tx
        v = float32(0.0)
        if row < M and ka < K:
            v = A[ka, row] if ta else A[row, ka]
        sm[ty * T + tx] = v
        kb = k0 + ty
        v = float32(0.0)
        if kb < K and col < N:
            v = B[col, kb] if tb else B[kb, col]
        sm[TT + ty * T + tx] = v
        cuda.syncthreads()
        for kk in range(T):
            acc += sm[ty * T + kk] * sm[TT + kk * T + tx]
        cuda.syncthreads()
    if row < M and col < N:
        if beta == 0.0:
            C[row, col] = alpha * acc
        else:
            C[row, col] = alpha * acc + beta * C[row, col]


#: Every ``@cuda.jit`` kernel of this module (the PTX test compiles each of them).
KERNELS = ("_bias_act_kernel", "_z_update_kernel", "_dual_update_kernel", "_shift_target_kernel",
           "_a_rhs_kernel", "_a_residual_kernel", "_sq_dist_kernel", "_dcc_codes_kernel",
           "_add_bias_kernel", "_col_mean_kernel", "_cast_kernel", "_codes_rhs_kernel",
           "_sign_agreement_kernel", "_gemm_kernel")


# --------------------------------------------------------------------------- host launchers

def _grid(count):
    """``(blocks, threads)`` for a grid-stride kernel over ``count`` items (at most CUDA_MAX_BLOCKS blocks)."""
    tpb = config.CUDA_THREADS_PER_BLOCK
    return max(1, min(config.CUDA_MAX_BLOCKS, -(-count // tpb))), tpb


def _reduce(kernel, n, *args, dtype=np.float64):
    """Launch a per-row kernel over ``n`` rows; the sum of its ``n`` row sums.

    Like the CPU kernels (``acc[i]`` per sample, then ``acc.sum()``): each row is summed in
    order in float64 and the ``n`` row sums (one number per sample, not a training array) are
    added on the host left to right, as numba's ``acc.sum()`` does (numpy's pairwise sum would
    differ in the last bit), so the result is the CPU's to the last bit.
    """
    acc = cuda.device_array(n, dtype=dtype)
    kernel[_grid(n)](*args, acc)
    return sum(acc.copy_to_host().tolist())


def bias_act(p, b, a_prev, residual, z_out, a_out):
    """``z = p + b``, ``a = relu(z) (+ a_prev if residual)`` (twin of :func:`vdsh_numba.methods.vdsh.admm.bias_act`)."""
    _bias_act_kernel[_grid(p.shape[0] * p.shape[1])](p, b, a_prev, bool(residual), z_out, a_out)


def z_update(a, a_prev, p, b, lam, beta, gamma, residual, z_out):
    """Entrywise ``z`` step (twin of :func:`vdsh_numba.methods.vdsh.admm.z_update`)."""
    _z_update_kernel[_grid(p.shape[0] * p.shape[1])](a, a_prev, p, b, lam, float(beta), float(gamma),
                                                      bool(residual), z_out)


def dual_update(lam, z, p, b):
    """``lam += z - (p + b)``; returns ``sum((z - p - b)^2)`` (twin of :func:`vdsh_numba.methods.vdsh.admm.dual_update`)."""
    return float(_reduce(_dual_update_kernel, z.shape[0], lam, z, p, b))


def shift_target(z, lam, b, out):
    """``out = z + lam - b`` (twin of :func:`vdsh_numba.methods.vdsh.admm.shift_target`)."""
    _shift_target_kernel[_grid(z.shape[0] * z.shape[1])](z, lam, b, out)


def a_rhs(q, coef_q, a_next, z_next, skip_coef, a_prev, z_l, gamma, residual_l, out):
    """Right-hand side of the ``a_l`` normal equations (twin of :func:`vdsh_numba.methods.vdsh.admm.a_rhs`)."""
    _a_rhs_kernel[_grid(q.shape[0] * q.shape[1])](q, float(coef_q), a_next, z_next, float(skip_coef),
                                                   a_prev, z_l, float(gamma), bool(residual_l), out)


def a_residual(a, a_prev, z, residual):
    """``sum((a - phi(a_prev, z))^2)`` (twin of :func:`vdsh_numba.methods.vdsh.admm.a_residual`)."""
    return float(_reduce(_a_residual_kernel, a.shape[0], a, a_prev, z, bool(residual)))


def sq_dist(x, y):
    """``sum((x - y)^2)``, float64 accumulation (twin of :func:`vdsh_numba.methods.vdsh.admm.sq_dist`)."""
    return float(_reduce(_sq_dist_kernel, x.shape[0], x, y))


def dcc_codes(B, Q, S, passes):
    """Discrete cyclic coordinate descent per sample, in place; returns the bits flipped
    (twin of :func:`vdsh_numba.methods.vdsh.admm.dcc_codes`)."""
    return int(_reduce(_dcc_codes_kernel, B.shape[0], B, Q, S, int(passes), dtype=np.int64))


def add_bias(x, b, out):
    """``out = x + b`` with ``b`` added to every row (numpy's broadcasting ``x + b``)."""
    _add_bias_kernel[_grid(x.shape[0] * x.shape[1])](x, b, out)


def col_mean(x, out):
    """``out = x.mean(axis=0, dtype=float64)`` (one thread per column)."""
    _col_mean_kernel[_grid(x.shape[1])](x, out)


def cast(src, dst):
    """``dst[...] = src`` with a dtype conversion (``src.astype(dst.dtype)``)."""
    _cast_kernel[_grid(src.shape[0] * src.shape[1])](src, dst)


def codes_rhs(Y, G, U, nu, Q):
    """``Q = Y @ G.T + nu * U``: the linear term of the code step (``C`` classes, tiny)."""
    _codes_rhs_kernel[_grid(Q.shape[0] * Q.shape[1])](Y, G, U, float(nu), Q)


def sign_agreement(U, B):
    """Number of entries with ``(U > 0) == (B > 0)``."""
    return int(round(_reduce(_sign_agreement_kernel, U.shape[0], U, B)))


def gemm(A, B, out, transA=False, transB=False, alpha=1.0, beta=0.0):
    """``out = alpha * op(A) @ op(B) + beta * out`` on float32 device arrays.

    ``op(X)`` is ``X.T`` when the flag is set. cuBLAS through CuPy when CuPy is installed and
    ``config.CUDA_USE_CUPY`` (the arrays are shared through ``__cuda_array_interface__``, no
    copies); otherwise the tiled shared-memory kernel with ``config.CUDA_GEMM_TILE`` tiles.
    Returns ``out``.
    """
    M = A.shape[1] if transA else A.shape[0]
    K = A.shape[0] if transA else A.shape[1]
    K2 = B.shape[1] if transB else B.shape[0]
    N = B.shape[0] if transB else B.shape[1]
    if K != K2 or out.shape != (M, N):
        raise ValueError(f"gemm: op(A) is {M}x{K}, op(B) is {K2}x{N}, out is {out.shape}")
    for name, x in (("A", A), ("B", B), ("out", out)):
        if np.dtype(x.dtype) != np.float32:
            raise TypeError(f"gemm: {name} must be float32, got {x.dtype}")
    cp = cupy_or_none()
    if cp is not None:
        a, b, o = cp.asarray(A), cp.asarray(B), cp.asarray(out)
        a = a.T if transA else a
        b = b.T if transB else b
        if alpha == 1.0 and beta == 0.0:
            cp.matmul(a, b, out=o)
        else:
            o[...] = np.float32(alpha) * cp.matmul(a, b) + np.float32(beta) * o
        return out
    T = int(config.CUDA_GEMM_TILE)
    grid = max(1, min(config.CUDA_MAX_BLOCKS, -(-N // T) * -(-M // T)))
    _gemm_kernel[grid, (T, T), 0, 2 * T * T * 4](A, B, out, bool(transA), bool(transB),
                                                 float(alpha), float(beta), T)
    return out
