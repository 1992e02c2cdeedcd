"""Numba kernels for VDSH's layer-wise ADMM updates (the CPU backend).

Every kernel works on C-contiguous ``float32`` arrays laid out ``(n_samples, width)`` and is
``@njit(parallel=True)`` over samples. Dense products (``A @ W.T``, Gram matrices, the
per-layer solves) go through BLAS in :mod:`vdsh_numba.vdsh.cpu_ops`; what is here is everything
elementwise or per sample. ``docs/algorithm.md`` gives the equation each kernel computes and
``tests/naive.py`` a plain numpy version of each.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["bias_act", "z_update", "dual_update", "a_rhs", "dcc_codes", "sq_dist", "a_residual",
           "shift_target"]


@njit(parallel=True, cache=True, fastmath=False)
def bias_act(p, b, a_prev, residual, z_out, a_out):
    """Forward step of one layer: ``z = p + b`` and ``a = relu(z) (+ a_prev if residual)``.

    ``p`` is the BLAS product ``a_prev @ W.T``.
    """
    n, w = p.shape
    for i in prange(n):
        for j in range(w):
            z = p[i, j] + b[j]
            z_out[i, j] = z
            r = z if z > 0.0 else 0.0
            if residual:
                r += a_prev[i, j]
            a_out[i, j] = r


@njit(parallel=True, cache=True)
def z_update(a, a_prev, p, b, lam, beta, gamma, residual, z_out):
    """Entrywise closed form of ``min_z gamma (t - relu(z))^2 + beta (z - m)^2``.

    ``t = a - a_prev`` (residual layer) or ``a`` (plain layer), ``m = p + b - lam`` where
    ``p = a_prev @ W.T`` (scaled multiplier ``lam``). Two candidates, z >= 0 and z <= 0,
    the one with the smaller objective wins (ties go to z >= 0).
    """
    n, w = p.shape
    for i in prange(n):
        for j in range(w):
            t = a[i, j] - a_prev[i, j] if residual else a[i, j]
            m = p[i, j] + b[j] - lam[i, j]
            zp = (gamma * t + beta * m) / (gamma + beta)
            if zp < 0.0:
                zp = 0.0
            fp = gamma * (t - zp) ** 2 + beta * (zp - m) ** 2
            zn = m if m < 0.0 else 0.0
            fn = gamma * t * t + beta * (zn - m) ** 2
            z_out[i, j] = zp if fp <= fn else zn


@njit(parallel=True, cache=True)
def dual_update(lam, z, p, b):
    """Scaled dual ascent ``lam += z - (p + b)``; returns ``sum((z - p - b)^2)`` (float64)."""
    n, w = z.shape
    acc = np.zeros(n)
    for i in prange(n):
        s = 0.0
        for j in range(w):
            r = z[i, j] - p[i, j] - b[j]
            lam[i, j] += r
            s += r * r
        acc[i] = s
    return acc.sum()


@njit(parallel=True, cache=True)
def shift_target(z, lam, b, out):
    """``out = z + lam - b``: the target a layer's input must reproduce through ``W``."""
    n, w = z.shape
    for i in prange(n):
        for j in range(w):
            out[i, j] = z[i, j] + lam[i, j] - b[j]


@njit(parallel=True, cache=True)
def a_rhs(q, coef_q, a_next, z_next, skip_coef, a_prev, z_l, gamma, residual_l, out):
    """Right-hand side of the ``a_l`` normal equations.

    ``out = coef_q * q + skip_coef * (a_next - relu(z_next)) + gamma * phi_l`` with
    ``phi_l = relu(z_l) (+ a_prev if residual_l)``; ``q`` is ``target @ W_next`` from BLAS.
    ``skip_coef`` is 0 when the layer above is not residual (``a_next``, ``z_next`` unused).
    """
    n, w = q.shape
    for i in prange(n):
        for j in range(w):
            zl = z_l[i, j]
            phi = zl if zl > 0.0 else 0.0
            if residual_l:
                phi += a_prev[i, j]
            v = coef_q * q[i, j] + gamma * phi
            if skip_coef != 0.0:
                zn = z_next[i, j]
                v += skip_coef * (a_next[i, j] - (zn if zn > 0.0 else 0.0))
            out[i, j] = v


@njit(parallel=True, cache=True)
def a_residual(a, a_prev, z, residual):
    """``sum((a - phi(a_prev, z))^2)`` for the activation constraint (float64)."""
    n, w = a.shape
    acc = np.zeros(n)
    for i in prange(n):
        s = 0.0
        for j in range(w):
            zz = z[i, j]
            phi = zz if zz > 0.0 else 0.0
            if residual:
                phi += a_prev[i, j]
            d = a[i, j] - phi
            s += d * d
        acc[i] = s
    return acc.sum()


@njit(parallel=True, cache=True)
def sq_dist(x, y):
    """``sum((x - y)^2)`` over two equal-shape 2-D arrays (float64 accumulation)."""
    n, w = x.shape
    acc = np.zeros(n)
    for i in prange(n):
        s = 0.0
        for j in range(w):
            d = np.float64(x[i, j]) - np.float64(y[i, j])
            s += d * d
        acc[i] = s
    return acc.sum()


@njit(parallel=True, cache=True)
def dcc_codes(B, Q, S, passes):
    """Discrete cyclic coordinate descent (SDH, Shen et al. 2015) for every sample, in place.

    Minimises ``b S b^T - 2 b q^T`` over ``b in {-1, +1}^k`` one bit at a time:
    ``b_j = sign(q_j - sum_{m != j} S_jm b_m)`` (0 keeps the current bit). ``B`` (n, k) float64
    in {-1, +1}, ``Q`` (n, k), ``S`` (k, k) symmetric. Returns the number of bits flipped.
    """
    n, k = B.shape
    flips = np.zeros(n, np.int64)
    for i in prange(n):
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
        flips[i] = f
    return flips.sum()
