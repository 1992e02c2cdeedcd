"""VDSH's layer-wise ADMM training on the GPU: the ``numba.cuda`` twin of ``VDSH._fit``/``_project``.

:func:`fit_vdsh_gpu` runs exactly the sweep of :meth:`vdsh_numba.model.VDSH._fit` (same update
order, same closed forms, same history keys) with the kernels of :mod:`vdsh_numba.gpu_admm`
and its :func:`~vdsh_numba.gpu_admm.gemm` for every product over the samples. The training
data (``X``, the one-hot labels), the codes ``B``, every layer's auxiliary variables ``a_h``,
``z_h`` and multipliers ``lam_h`` stay on the device for the whole run.

What goes to the host, and why
------------------------------
Only ``w x w`` (and ``bits x w``, ``bits x C``) matrices: the Gram matrices of the local
least-squares problems are formed on the device (GEMM, O(n w^2)), copied to the host, and the
small positive definite systems are factorised there in float64 with scipy's Cholesky
(O(w^3), independent of n), exactly as the CPU backend does; the solution (a weight matrix,
or the ``w x w`` inverse of the ``a``-step) goes back to the device. The code step's ``G``
(``bits x C``) is solved on the host too, from ``B^T B`` and ``B^T Y`` formed on the device
(integers, exact in float32 below 2^24 samples). Reductions return scalars.

The initialisation (first-layer ridge map, class codebook, first ``G``) is the CPU code's,
run on the host with the same seed, so both backends start from identical parameters.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np
from numba import cuda

from . import config, gpu_admm as ga
from .model import _sym_inverse, objective_terms, ridge_from_moments

__all__ = ["fit_vdsh_gpu", "project_gpu", "forward_gpu"]


def _f32(n, m):
    return cuda.device_array((n, m), dtype=np.float32)


def _up(x, dtype=np.float32):
    return cuda.to_device(np.ascontiguousarray(x, dtype=dtype))


class _Dense:
    """Seconds spent in dense work (GEMMs on the device, host factorisations), synchronised."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, f, *args, **kw):
        t = time.perf_counter()
        r = f(*args, **kw)
        cuda.synchronize()
        self.seconds += time.perf_counter() - t
        return r


def forward_gpu(Xd, Wd, bd, Wod, bod, residual, A, Z, U, dense=None):
    """Forward pass on the device into the buffers ``A[1..L]``, ``Z[1..L]`` (``A[0]`` is ``Xd``), ``U``.

    Twin of :func:`vdsh_numba.model.forward` with ``keep=True``; ``Z[h]`` also serves as the
    product buffer (``bias_act`` is elementwise, so ``z`` may overwrite ``p``).
    """
    dense = dense or (lambda f, *a, **k: f(*a, **k))
    a = Xd
    for h in range(len(Wd)):
        p = dense(ga.gemm, a, Wd[h], Z[h + 1], transB=True)
        ga.bias_act(p, bd[h], a, bool(residual and h > 0), Z[h + 1], A[h + 1])
        a = A[h + 1]
    dense(ga.gemm, a, Wod, U, transB=True)
    ga.add_bias(U, bod, U)
    return U


def _ridge_gpu(T, A, beta, rho, prox, W_old, dense):
    """Twin of :func:`vdsh_numba.model._ridge`: moments on the device, the ``w x w`` solve on the host.

    ``min_{W,b} beta/n ||T - A W^T - 1 b^T||^2 + rho ||W||^2 + prox ||W - W_old||^2`` with
    ``T``, ``A`` device float32; returns host ``(W float32, b float32)``.
    """
    n, w = A.shape
    m = T.shape[1]
    muA_d = cuda.device_array(w, np.float64)
    muT_d = cuda.device_array(m, np.float64)
    ga.col_mean(A, muA_d)
    ga.col_mean(T, muT_d)
    SAA, STA = _f32(w, w), _f32(m, w)
    dense(ga.gemm, A, A, SAA, transA=True)
    dense(ga.gemm, T, A, STA, transA=True)
    return ridge_from_moments(SAA.copy_to_host(), STA.copy_to_host(), muA_d.copy_to_host(),
                              muT_d.copy_to_host(), n, beta, rho, prox, W_old, dense)


def _g_moments(Bf, Yf, dense):
    """``(B^T B, B^T Y)`` float64 from the device (exact: integer sums in float32)."""
    k, c = Bf.shape[1], Yf.shape[1]
    BtB, BtY = _f32(k, k), _f32(k, c)
    dense(ga.gemm, Bf, Bf, BtB, transA=True)
    dense(ga.gemm, Bf, Yf, BtY, transA=True)
    return BtB.copy_to_host().astype(np.float64), BtY.copy_to_host().astype(np.float64)


def fit_vdsh_gpu(model, X, Y):
    """Train ``model`` (a :class:`vdsh_numba.model.VDSH`) on the GPU; sets the same fitted state.

    Parameters
    ----------
    model : VDSH
        Supplies the hyperparameters (``depth``, ``width``, ``bits``, ``seed``, ``train``,
        ``progress``, ``on_sweep``) and receives ``W_``, ``b_``, ``Wo_``, ``bo_``, ``G_``,
        ``B_train_`` (host arrays) and ``history_`` rows (the CPU backend's keys).
    X : ndarray float32 (n, d)
        Training features, already clipped (``model._clip``), C-contiguous.
    Y : ndarray float64 (n, C)
        Label matrix (:func:`vdsh_numba.base.label_matrix`).

    Notes
    -----
    Mirrors ``VDSH._fit`` step by step (``docs/algorithm.md``). Products over the samples are
    float32 GEMMs, as on the CPU; their summation order differs from the CPU's BLAS, so the two
    backends agree to float32 rounding per sweep, not bit for bit (``tests/cuda`` bounds it).
    """
    o = model.train
    if int(o["first_width"]) not in (0, model.width):
        raise NotImplementedError(
            f"the CUDA backend trains equal-width hidden layers only: train.first_width is "
            f"{o['first_width']} but width is {model.width}; set train.first_width: 0 (or {model.width})")
    rng = np.random.default_rng(model.seed)
    n = X.shape[0]
    L, k, w = model.depth, model.bits, model.width
    Ws, bs, B = model._init(X, Y, rng)
    residual = [bool(o["residual"] and h > 0) for h in range(L)]
    dense = _Dense()
    G = model._g_step(B, Y)

    # --- device state for the whole run
    Xd, Yd, Yf = _up(X), _up(Y, np.float64), _up(Y)
    Bd = _up(B, np.float64)
    Bf = _f32(n, k)
    Wd = [_up(W) for W in Ws]
    bd = [_up(b) for b in bs]
    A, Af = [Xd] + [_f32(n, w) for _ in range(L)], [Xd] + [_f32(n, w) for _ in range(L)]
    Z, Zf = [None] + [_f32(n, w) for _ in range(L)], [None] + [_f32(n, w) for _ in range(L)]
    Lam = [_up(np.zeros((n, w), np.float32)) for _ in range(L)]
    zero_w = _up(np.zeros((n, w), np.float32))  # never written
    zero_b = _up(np.zeros(w, np.float32))
    U = _f32(n, k)
    Q = cuda.device_array((n, k), np.float64)
    Sk, S, P, RHS, T, scratch = _f32(n, k), _f32(n, w), _f32(n, w), _f32(n, w), _f32(n, w), _f32(n, w)
    Minv = _f32(w, w)
    sumY2 = float((Y ** 2).sum())

    ga.cast(Bd, Bf)
    forward_gpu(Xd, Wd, bd, _up(np.zeros((k, w))), _up(np.zeros(k)), o["residual"], Af, Zf, U)
    Wo, bo = _ridge_gpu(Bf, Af[L], 1.0, o["rho"], 0.0, np.zeros((k, w)), dense)
    first = True
    beta, gamma = o["beta"], o["gamma"]
    t_start = time.perf_counter()
    sweeps = range(int(o["sweeps"]))
    if model.progress:
        from tqdm import tqdm
        sweeps = tqdm(sweeps, desc=f"VDSH {L}x{w} {k} bits (cuda)", file=sys.stderr)
    for it in sweeps:
        t0 = time.perf_counter()
        dense.seconds = 0.0
        Wod, bod = _up(Wo), _up(bo)
        # 1. re-synchronise the auxiliary variables with the forward pass
        forward_gpu(Xd, Wd, bd, Wod, bod, o["residual"], Af, Zf, U, dense)
        gap = np.nan
        if not first:
            gap = float(np.sqrt(ga.sq_dist(A[L], Af[L]) / max(ga.sq_dist(Af[L], zero_w), 1e-30)))
        if first or o["resync"]:
            A, Af, Z, Zf = Af, A, Zf, Z
            first = False
        # 2. code step (discrete) and classifier step
        ga.codes_rhs(Yd, _up(G, np.float64), U, o["nu"], Q)
        flips = ga.dcc_codes(Bd, Q, _up(G @ G.T, np.float64), int(o["dcc_passes"]))
        ga.cast(Bd, Bf)
        BtB, BtY = _g_moments(Bf, Yf, dense)
        G = np.linalg.solve(BtB + n * o["lam_G"] * np.eye(k), BtY)  # model._g_step from moments
        # 3. network: output layer, then hidden layers top-down
        Wo, bo = _ridge_gpu(Bf, A[L], 1.0, o["rho"], o["prox"], Wo, dense)
        Wod = _up(Wo)
        rz, ra = np.zeros(L), np.zeros(L)
        for h in range(L, 0, -1):  # layer h: W[h-1], A[h], Z[h], Lam[h-1]
            li = h - 1
            if h == L:
                ga.add_bias(Bf, _up(-bo), Sk)                 # Bf - bo
                q = dense(ga.gemm, Sk, Wod, P)
                M = (Wo.T @ Wo).astype(np.float64)           # bits x w on the host, as on the CPU
                coef_q, skip = 1.0, 0.0
                a_next = z_next = A[h]  # unused
            else:
                ga.shift_target(Z[h + 1], Lam[h], bd[h], S)
                q = dense(ga.gemm, S, Wd[h], P)
                WtW = _f32(w, w)
                dense(ga.gemm, Wd[h], Wd[h], WtW, transA=True)
                M = beta * WtW.copy_to_host().astype(np.float64)
                coef_q, skip = beta, (o["skip_weight"] * gamma if residual[h] else 0.0)
                a_next, z_next = A[h + 1], Z[h + 1]
            ga.a_rhs(q, coef_q, a_next, z_next, skip, A[h - 1], Z[h], gamma, residual[li], RHS)
            M[np.diag_indices_from(M)] += gamma + skip
            Minv.copy_to_device(np.ascontiguousarray(_sym_inverse(M, dense)))
            dense(ga.gemm, RHS, Minv, A[h])
            p = dense(ga.gemm, A[h - 1], Wd[li], P, transB=True)
            ga.z_update(A[h], A[h - 1], p, bd[li], Lam[li], beta, gamma, residual[li], Z[h])
            ga.shift_target(Z[h], Lam[li], zero_b, T)       # T = Z[h] + Lam[li]
            Ws[li], bs[li] = _ridge_gpu(T, A[h - 1], 1.0, o["rho"] / beta, o["prox"] / beta, Ws[li], dense)
            Wd[li], bd[li] = _up(Ws[li]), _up(bs[li])
            p = dense(ga.gemm, A[h - 1], Wd[li], P, transB=True)
            if o["multipliers"]:
                rz[li] = ga.dual_update(Lam[li], Z[h], p, bd[li])
            else:
                ga.cast(zero_w, scratch)
                rz[li] = ga.dual_update(scratch, Z[h], p, bd[li])
            ra[li] = ga.a_residual(A[h], A[h - 1], Z[h], residual[li])
        # 4. log every objective term, the primal residuals and the seconds
        cuda.synchronize()
        secs = time.perf_counter() - t0
        label = float((sumY2 - 2.0 * np.sum(G * BtY) + np.sum(G * (BtB @ G))) / n)
        code_fit = ga.sq_dist(Bd, U) / n
        regW = float(sum((W.astype(np.float64) ** 2).sum() for W in Ws) + (Wo.astype(np.float64) ** 2).sum())
        model.history_.append({
            "iteration": it + 1, "seconds": secs, "dense_seconds": dense.seconds,
            "elapsed": time.perf_counter() - t_start,
            **objective_terms(o, label, G, code_fit, regW),
            "penalty_z": float(beta * rz.sum() / n), "penalty_a": float(gamma * ra.sum() / n),
            "primal_z": float(np.sqrt(rz.sum() / n)), "primal_a": float(np.sqrt(ra.sum() / n)),
            "primal_z_layers": (np.sqrt(rz / n)).tolist(), "primal_a_layers": (np.sqrt(ra / n)).tolist(),
            "forward_gap": gap, "bit_agreement": ga.sign_agreement(U, Bd) / (n * k),
            "bit_flips": int(flips), "beta": beta, "gamma": gamma,
        })
        if model.on_sweep is not None:
            model.W_, model.b_, model.Wo_, model.bo_, model.G_ = Ws, bs, Wo, bo, G
            model.on_sweep(it, model)
        growth = o["penalty_growth"]
        beta = min(beta * growth, o["beta"] * o["penalty_max"])
        gamma = min(gamma * growth, o["gamma"] * o["penalty_max"])
    model.W_ = Ws
    model.b_ = bs
    model.Wo_, model.bo_, model.G_ = Wo, bo, G
    model.B_train_ = Bd.copy_to_host()
    return model


def project_gpu(X, Ws, bs, Wo, bo, residual):
    """Network outputs ``U`` (host float64) of host float32 features ``X``, computed on the device.

    Twin of ``VDSH._project`` after clipping; rows go in batches of ``config.CUDA_FORWARD_ROWS``.
    """
    n = X.shape[0]
    L, w, k = len(Ws), (Ws[0].shape[0] if Ws else X.shape[1]), Wo.shape[0]
    Wd, bd, Wod, bod = [_up(W) for W in Ws], [_up(b) for b in bs], _up(Wo), _up(bo)
    out = np.empty((n, k), np.float64)
    step = max(1, int(config.CUDA_FORWARD_ROWS))
    for s in range(0, n, step):
        e = min(n, s + step)
        Xd = _up(X[s:e])
        a_buf, z_buf = _f32(e - s, w), _f32(e - s, w)  # two buffers for any depth: bias_act is
        A = [Xd] + [a_buf] * L                         # elementwise, so a may overwrite a_prev
        Z = [None] + [z_buf] * L
        U = _f32(e - s, k)
        forward_gpu(Xd, Wd, bd, Wod, bod, residual, A, Z, U)
        out[s:e] = U.copy_to_host()
    return out
