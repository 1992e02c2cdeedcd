"""Numba kernels for VDSH's layer-wise ADMM updates (the CPU backend).

Every kernel works on C-contiguous ``float32`` arrays laid out ``(n_samples, width)`` and is
``@njit(parallel=True)`` over samples. Dense products (``A @ W.T``, Gram matrices, the
per-layer solves) go through BLAS in :mod:`vdsh_numba.methods.vdsh.cpu_ops`; what is here is everything
elementwise or per sample. ``docs/algorithm.md`` gives the equation each kernel computes and
``tests/naive.py`` a plain numpy version of each.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["bias_act", "z_update", "dual_update", "a_rhs", "dcc_codes", "sq_dist", "a_residual",
           "shift_target", "phi", "z_min", "a_rhs_value"]


# Per-entry arithmetic, inlined into the kernels below and into the serial, nogil kernels of
# vdsh_numba.methods.vdsh.consensus: one definition of each update for both schemes.
@njit(cache=True, inline="always")
def phi(z, a_prev, residual):
    """A layer's activation from its pre-activation: ``relu(z) (+ a_prev if residual)``."""
    r = z if z > 0.0 else 0.0
    if residual:
        r += a_prev
    return r


@njit(cache=True, inline="always")
def z_min(t, m, beta, gamma):
    """``argmin_z gamma (t - relu z)^2 + beta (z - m)^2``: the better of the z >= 0 and z <= 0
    candidates (ties to z >= 0)."""
    zp = (gamma * t + beta * m) / (gamma + beta)
    if zp < 0.0:
        zp = 0.0
    fp = gamma * (t - zp) ** 2 + beta * (zp - m) ** 2
    zn = m if m < 0.0 else 0.0
    fn = gamma * t * t + beta * (zn - m) ** 2
    return zp if fp <= fn else zn


@njit(cache=True, inline="always")
def a_rhs_value(q, coef_q, gamma, z_l, a_prev, residual_l, skip_coef, a_next, z_next):
    """One entry of the ``a_l`` right-hand side (see :func:`a_rhs`)."""
    v = coef_q * q + gamma * phi(z_l, a_prev, residual_l)
    if skip_coef != 0.0:
        v += skip_coef * (a_next - (z_next if z_next > 0.0 else 0.0))
    return v


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
            a_out[i, j] = phi(z, a_prev[i, j], residual)


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
            z_out[i, j] = z_min(t, p[i, j] + b[j] - lam[i, j], beta, gamma)


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
            out[i, j] = a_rhs_value(q[i, j], coef_q, gamma, z_l[i, j], a_prev[i, j], residual_l,
                                    skip_coef, a_next[i, j], z_next[i, j])


@njit(parallel=True, cache=True)
def a_residual(a, a_prev, z, residual):
    """``sum((a - phi(a_prev, z))^2)`` for the activation constraint (float64)."""
    n, w = a.shape
    acc = np.zeros(n)
    for i in prange(n):
        s = 0.0
        for j in range(w):
            d = a[i, j] - phi(z[i, j], a_prev[i, j], residual)
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
