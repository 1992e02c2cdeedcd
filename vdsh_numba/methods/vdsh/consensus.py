"""VDSH's consensus scheme: local weight copies per two-layer substructure (docs/algorithm.md §10).

The sequential scheme (:mod:`vdsh_numba.methods.vdsh`, docs §4) updates layer after layer, top-down.
Here every two-layer substructure ``m`` (weight layers ``m`` and ``m + 1``; the top one holds
the output layer) keeps its own copy ``θ̃_m`` of the weights it touches, tied to the global
weights ``θ`` by consensus constraints with scaled duals ``U``. One sweep of the network step:

1. the local problems, all independent, from the same previous iterate (:func:`local_solve`,
   two ridge regressions with a consensus penalty each, closed form);
2. the auxiliary variables ``(a_h, z_h)`` of every hidden layer, in two colours: all layers
   of one parity at once, then the other (:func:`block_update`: exact block minimisers);
3. the consensus step: ``θ_j`` = the average of its copies plus their duals
   (:func:`consensus_step`);
4. the dual steps: ``U += θ̃ - θ`` (:func:`dual_step`) and the multipliers of the ``z``
   constraints, ``Λ_h += z_h - W_h a_{h-1} - b_h`` (:func:`multiplier_step`).

Every task of steps 1, 2 and 4, and every layer of the forward re-synchronisation
(:func:`executor_resync`), is a pure function of arrays, runs with single-threaded BLAS and only
``nogil`` Numba kernels, and is handed to an executor (:mod:`vdsh_numba.methods.vdsh.executors`):
serial, a pool of threads, or Dask workers give bitwise-equal weights. On Dask each task runs on
the worker of its layer (contiguous blocks of layers per worker) and the per-sample arrays
``a_h``, ``z_h``, ``Λ_h`` stay there between sweeps (docs/algorithm.md §10.6).

Indexing (0-based): hidden activations ``A[0] = X``, ``A[h]``, ``Z[h]`` (h = 1..L); weight layer
``j`` (``Ws[j]``, ``bs[j]``) maps ``A[j]`` to ``Z[j + 1]`` for ``j < L`` and to the codes ``B``
for ``j = L`` (the output layer); ``Lam[j]`` is the scaled multiplier of ``Z[j + 1]``.
Substructure ``m`` (0..L-1) holds copies of layers ``m`` and ``m + 1``; a weight layer ``j``
belongs to substructures :func:`owners` ``(j, L)`` (two for 0 < j < L).

The engine (:func:`vdsh_numba.methods.vdsh.engine.train`) runs the scheme with
``update=partial(consensus_update, executor=..., tasks=...)``: initialisation, forward
re-synchronisation, code and classifier steps, penalty schedule, checkpoint/resume, divergence
guard, final refit and history are the engine's, shared with the sequential scheme
(``vdsh.scheme: consensus`` in :class:`vdsh_numba.methods.vdsh.VDSH`).
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
from numba import njit

from . import cpu_ops, engine
from .admm import a_rhs_value, phi, z_min

__all__ = ["owners", "ridge_consensus", "local_solve", "block_update", "consensus_step", "dual_step",
           "multiplier_step", "consensus_sweep", "copy_keys", "network_state", "consensus_update",
           "ridge_consensus_moments", "a_system", "copy_average", "bias_act_block", "FORWARD_ROWS",
           "forward_layer", "output_layer", "gap_terms", "row_blocks", "executor_resync",
           "remote_input", "place_state", "is_remote", "local_copies", "consensus_layer",
           "resident_weights", "host_weights", "extra_names"]

def owners(j, L):
    """The substructures holding a copy of weight layer ``j`` (0..L; ``L`` is the output)."""
    if not 0 <= j <= L:
        raise ValueError(f"weight layer j must be in 0..{L}, got {j}")
    return [m for m in (j - 1, j) if 0 <= m < L]


# ---------------------------------------------------------------------------- nogil kernels
# Serial and nogil: they run inside tasks, several at once on a thread pool (admm's kernels are
# prange-parallel and hold the GIL). The per-entry arithmetic is admm's (phi, z_min,
# a_rhs_value), inlined here as in admm's kernels: one definition for both schemes.

@njit(nogil=True, cache=True)
def z_block(a, a_prev, p, lam, beta, gamma, residual, out):
    """``out = argmin_z gamma (t - relu z)^2 + beta (z - (p - lam))^2`` entrywise,
    ``t = a - a_prev`` (residual) or ``a``; ``p`` already holds the bias."""
    n, w = p.shape
    for i in range(n):
        for j in range(w):
            t = a[i, j] - a_prev[i, j] if residual else a[i, j]
            out[i, j] = z_min(t, p[i, j] - lam[i, j], beta, gamma)


@njit(nogil=True, cache=True)
def a_rhs_block(q, coef, gamma, z, a_prev, residual, skip, a_next, z_next, out):
    """``out = coef q + gamma phi(a_prev, z) + skip (a_next - relu z_next)``."""
    n, w = q.shape
    for i in range(n):
        for j in range(w):
            out[i, j] = a_rhs_value(q[i, j], coef, gamma, z[i, j], a_prev[i, j], residual, skip,
                                    a_next[i, j], z_next[i, j])


@njit(nogil=True, cache=True)
def bias_act_block(p, b, a_prev, residual, z_out, a_out):
    """``z_out = p + b``, ``a_out = relu(z_out) (+ a_prev)``: a layer's output from its product
    ``p`` (``z_out`` may be ``p``)."""
    n, w = p.shape
    for i in range(n):
        for j in range(w):
            z = p[i, j] + b[j]
            z_out[i, j] = z
            a_out[i, j] = phi(z, a_prev[i, j] if residual else 0.0, residual)


@njit(nogil=True, cache=True)
def multiplier_block(lam, z, p, b, a, a_prev, residual, lam_out):
    """``lam_out = lam + (z - p - b)``; returns the squared residuals of the z constraint
    (``z - p - b``) and of the activation constraint (``a - phi(a_prev, z)``), float64."""
    n, w = z.shape
    rz = 0.0
    ra = 0.0
    for i in range(n):
        for j in range(w):
            r = z[i, j] - p[i, j] - b[j]
            lam_out[i, j] = lam[i, j] + r
            rz += r * r
            d = a[i, j] - phi(z[i, j], a_prev[i, j], residual)
            ra += d * d
    return rz, ra


# ---------------------------------------------------------------------------- local problems

def ridge_consensus(A, T, c, r, eta, V, v):
    """``argmin_{W,b} c/n ||T - A W^T - 1 b^T||^2 + r ||W||^2 + eta (||W - V||^2 + ||b - v||^2)``.

    Closed form (docs/algorithm.md §10.2): with ``κ = c / (c + eta)``, ``S_AA = A^T A / n``,
    ``S_TA = T^T A / n`` and the column means ``μ_A``, ``μ_T``::

        W (c (S_AA - κ μ_A μ_A^T) + (r + eta) I) = c (S_TA - κ μ_T μ_A^T) + eta (V - κ v μ_A^T)
        b = (c (μ_T - W μ_A) + eta v) / (c + eta)

    ``eta = 0`` is the sequential scheme's ridge with an unpenalised intercept (``V``, ``v``
    unused). Products in float32 BLAS, the solve in float64 (LAPACK ``gesv`` through numpy,
    which releases the GIL so that tasks overlap on a thread pool); returns float32.
    """
    return ridge_consensus_moments(A.T @ A, T.T @ A, A.mean(axis=0, dtype=np.float64),
                                   T.mean(axis=0, dtype=np.float64), A.shape[0], c, r, eta, V, v)


def ridge_consensus_moments(SAA, STA, muA, muT, n, c, r, eta, V, v):
    """:func:`ridge_consensus` from the raw moments ``AᵀA``, ``TᵀA`` (float32) and the column
    means (float64): the host half, shared with the CUDA twin (which forms the moments on the
    device)."""
    SAA = SAA.astype(np.float64) / n
    STA = STA.astype(np.float64) / n
    kappa = c / (c + eta)
    M = c * (SAA - kappa * np.outer(muA, muA))
    M[np.diag_indices_from(M)] += r + eta
    R = c * (STA - kappa * np.outer(muT, muA))
    vv = np.zeros_like(muT)
    if eta > 0:
        vv = np.asarray(v, np.float64)
        R += eta * (np.asarray(V, np.float64) - kappa * np.outer(vv, muA))
    W = np.linalg.solve(M, R.T).T  # numpy's LAPACK gufunc releases the GIL (scipy's cho_factor did not)
    b = (c * (muT - W @ muA) + eta * vv) / (c + eta)
    return np.ascontiguousarray(W, dtype=np.float32), b.astype(np.float32)


def _target(Z, Lam):
    return Z if Lam is None else Z + Lam


def local_solve(prob):
    """Substructure ``m``'s local problem: its copies of weight layers ``m`` and ``m + 1``.

    ``prob["lo"]``, ``prob["hi"]``: ``(A, Z, Lam, c, r, V, v)`` per copy: input, target
    ``Z + Lam`` (``Lam`` None for the output layer, whose target ``Z`` is the codes), data
    weight ``c``, ridge ``r``, consensus centre ``V = θ_j - U``, ``v = b_j - u``;
    ``prob["eta"]`` the consensus penalty. ``prob["through"]`` (§10.3): the upper copy's input is
    the middle layer computed through the new lower copy (``relu(A_lo W_lo^T + b_lo)``, plus
    ``A_lo`` when ``prob["residual_mid"]``) instead of the auxiliary ``A_hi``.
    Returns ``((W_lo, b_lo), (W_hi, b_hi))``.
    """
    eta = prob["eta"]
    A, Z, Lam, c, r, V, v = prob["lo"]
    lo = ridge_consensus(A, _target(Z, Lam), c, r, eta, V, v)
    A_hi, Z, Lam, c, r, V, v = prob["hi"]
    if prob.get("through", False):
        p = A @ lo[0].T
        A_hi = np.empty_like(p)
        bias_act_block(p, lo[1], A, prob["residual_mid"], p, A_hi)
    hi = ridge_consensus(A_hi, _target(Z, Lam), c, r, eta, V, v)
    return lo, hi


def block_update(blk):
    """Exact minimisation of the augmented Lagrangian in ``a_h``, then ``z_h`` (hidden layer h).

    ``blk``: ``a_prev``, ``z``, ``lam`` (this layer's multiplier); ``below`` / ``above``: lists
    of ``(W, b, omega)`` copies of the weight layers that produce ``z_h`` and read ``a_h``;
    ``T_z``, ``T_lam``: the layer above's target ``T_z + T_lam`` (``T_lam`` None: the codes);
    ``coef`` its data weight (beta, or 1 for the output layer); ``a_next``, ``z_next``,
    ``skip``: the skip term (``skip`` = 0 when the layer above is not residual); ``residual``,
    ``beta``, ``gamma``. Returns ``(a_h, z_h)``, float32. docs/algorithm.md §10.4::

        a_h (coef Σ ω_c W_cᵀ W_c + (γ + σ) I) = coef Σ ω_c (T - 1 b_cᵀ) W_c + γ φ_h + σ (a_{h+1} - relu z_{h+1})
        z_h = z-minimiser with m = a_{h-1} W̄ᵀ + b̄ - Λ_h,  W̄ = Σ ω_c W_c, b̄ = Σ ω_c b_c
    """
    a_prev, z, lam = blk["a_prev"], blk["z"], blk["lam"]
    Wa, gb, Minv = a_system(blk["above"], blk["coef"], blk["gamma"], blk["skip"])
    q = _target(blk["T_z"], blk["T_lam"]) @ Wa - gb
    rhs = np.empty_like(z)
    a_next = blk["a_next"] if blk["a_next"] is not None else z
    z_next = blk["z_next"] if blk["z_next"] is not None else z
    a_rhs_block(q, blk["coef"], blk["gamma"], z, a_prev, blk["residual"], blk["skip"], a_next, z_next, rhs)
    a = rhs @ Minv
    Wb, bb = copy_average(blk["below"])
    p = a_prev @ Wb.T + bb
    znew = np.empty_like(z)
    z_block(a, a_prev, p, lam, blk["beta"], blk["gamma"], blk["residual"], znew)
    return a, znew


def a_system(above, coef, gamma, skip):
    """The host half of the a-step: ``W̄ = Σ ω W_c``, ``g = Σ ω W_cᵀ b_c`` (so that
    ``Σ ω (T - 1 b_cᵀ) W_c = T W̄ - 1 gᵀ``) and the inverse of
    ``coef Σ ω W_cᵀ W_c + (γ + σ) I`` (float64 LAPACK solve), all float32."""
    Wa = sum(om * W.astype(np.float64) for W, _, om in above)
    gb = sum(om * (W.T.astype(np.float64) @ b) for W, b, om in above)
    M = coef * sum(om * (W.T @ W).astype(np.float64) for W, _, om in above)
    M[np.diag_indices_from(M)] += gamma + skip
    Minv = np.linalg.solve(M, np.eye(M.shape[0]))  # releases the GIL, as in ridge_consensus_moments
    return Wa.astype(np.float32), gb.astype(np.float32), Minv.astype(np.float32)


def copy_average(copies):
    """``W̄ = Σ ω W_c``, ``b̄ = Σ ω b_c`` (float64 sums, float32)."""
    Wb = sum(om * W.astype(np.float64) for W, _, om in copies)
    bb = sum(om * b.astype(np.float64) for _, b, om in copies)
    return Wb.astype(np.float32), bb.astype(np.float32)


def consensus_step(copies, duals):
    """``θ = mean_c (θ̃_c + U_c)`` over the copies of one weight layer (float64 sum, float32)."""
    acc = sum(np.asarray(t, np.float64) + np.asarray(u, np.float64) for t, u in zip(copies, duals))
    return (acc / len(copies)).astype(np.float32)


def dual_step(dual, copy, theta):
    """Scaled dual ascent of one copy: ``U + θ̃ - θ``."""
    return (np.asarray(dual, np.float32) + (copy - theta)).astype(np.float32)


def multiplier_step(lam, z, a, a_prev, W, b, residual):
    """``Λ + z - a_prev Wᵀ - b`` with the global weights; returns it and the squared residuals
    of the z constraint and of the activation constraint."""
    p = a_prev @ W.T
    out = np.empty_like(lam)
    rz, ra = multiplier_block(lam, z, p, b, a, a_prev, residual, out)
    return out, rz, ra


def local_copies(solve, prob):
    """Substructure ``m``'s task: its local problem (``solve``: :func:`local_solve` or its CUDA
    twin) with the consensus centres formed where it runs: ``prob["lo"]``, ``prob["hi"]`` are
    ``(A, Z, Lam, c, r, W, b, U_W, u_b)``, global weights and scaled duals, and the centre is
    ``V = W - U_W``, ``v = b - u_b``. Returns the copies flat, ``(W_lo, b_lo, W_hi, b_hi)``."""
    p = dict(prob)
    for key in ("lo", "hi"):
        A, Z, Lam, c, r, W, b, UW, ub = prob[key]
        p[key] = (A, Z, Lam, c, r, W - UW, b - ub)
    (W_lo, b_lo), (W_hi, b_hi) = solve(p)
    return W_lo, b_lo, W_hi, b_hi


def consensus_layer(copies, duals, W_old, b_old, scale=None):
    """Steps 3 and 4 for one weight layer: ``θ`` = :func:`consensus_step` of its copies
    ``[(W, b)]`` and scaled duals ``[(U_W, u_b)]`` (same order), the new duals
    (:func:`dual_step`, then times ``scale`` if given: the rescaling when the penalty grows),
    ``Σ ||θ̃ - θ||²`` over the copies and ``||θ - θ_old||²`` (weights and biases, float64).

    Returns ``(W, b, U_W0, u_b0, U_W1, u_b1, consensus, dtheta, finite)``: the second dual
    ``None`` for a layer with one copy; ``finite``: whether ``W``, ``b`` and every copy are."""
    W = consensus_step([c[0] for c in copies], [u[0] for u in duals])
    b = consensus_step([c[1] for c in copies], [u[1] for u in duals])
    dtheta = float(((W - W_old).astype(np.float64) ** 2).sum() + ((b - b_old).astype(np.float64) ** 2).sum())
    rc = 0.0
    new = []
    for (tW, tb), (uW, ub) in zip(copies, duals):
        rc += float(((tW - W).astype(np.float64) ** 2).sum() + ((tb - b).astype(np.float64) ** 2).sum())
        uW, ub = dual_step(uW, tW, W), dual_step(ub, tb, b)
        new += [uW, ub] if scale is None else [uW * scale, ub * scale]
    new += [None] * (4 - len(new))
    finite = bool(np.isfinite(rc) and np.isfinite(W).all() and np.isfinite(b).all())
    return (W, b, *new, rc, dtheta, finite)


#: rows per product of the forward pass (:func:`forward_layer`): every placement cuts the rows
#: at multiples of it, so the products have the same shapes wherever they run
FORWARD_ROWS = 1024


def forward_layer(a_prev, W, b, residual, out=None, threads=1):
    """One layer of the forward pass: ``z = a_prev Wᵀ + b``, ``a = relu(z) (+ a_prev)``.

    The product runs in blocks of :data:`FORWARD_ROWS` rows. Returns ``(a, z)``, new arrays,
    or ``out = (a_out, z_out)`` filled in place -- only where the caller shares the task's
    memory (a local executor; a Dask worker would fill a copy). ``threads`` > 1: the
    :func:`row_blocks` of the rows run on that many threads at once (the product releases the
    GIL, the kernel is ``nogil``), as a thread pool's workers run them: the same blocks, the
    same bits."""
    n, w = a_prev.shape[0], W.shape[0]
    a, z = out if out is not None else (np.empty((n, w), np.float32), np.empty((n, w), np.float32))
    blocks = row_blocks(n, threads) if threads > 1 else []
    if len(blocks) > 1:
        with ThreadPoolExecutor(len(blocks)) as pool:
            for f in [pool.submit(forward_layer, a_prev[s:e], W, b, residual, (a[s:e], z[s:e])) for s, e in blocks]:
                f.result()
        return a, z
    for s in range(0, n, FORWARD_ROWS):
        e = min(n, s + FORWARD_ROWS)
        np.dot(a_prev[s:e], W.T, out=z[s:e])
        bias_act_block(z[s:e], b, a_prev[s:e], residual, z[s:e], a[s:e])
    return a, z


def output_layer(a, Wo, bo):
    """The network's outputs ``U = a_L W_oᵀ + b_o`` (float32)."""
    U = np.dot(a, Wo.T)
    np.add(U, bo, out=U)
    return U


@njit(nogil=True, cache=True)
def gap_terms(a_old, a_new):
    """``(||a_old - a_new||², ||a_new||²)`` in float64: the forward gap's two sums (serial, so
    the same bits with any number of Numba threads)."""
    d2 = 0.0
    n2 = 0.0
    n, w = a_new.shape
    for i in range(n):
        sd = 0.0
        sn = 0.0
        for j in range(w):
            d = np.float64(a_old[i, j]) - np.float64(a_new[i, j])
            sd += d * d
            sn += np.float64(a_new[i, j]) * np.float64(a_new[i, j])
        d2 += sd
        n2 += sn
    return d2, n2


def row_blocks(n, parts):
    """``parts`` (or fewer) contiguous ``(start, stop)`` row ranges covering ``0..n``, cut at
    multiples of :data:`FORWARD_ROWS`."""
    nb = -(-n // FORWARD_ROWS)
    cuts = sorted({min(n, FORWARD_ROWS * (nb * i // parts)) for i in range(parts + 1)})
    return list(zip(cuts[:-1], cuts[1:])) if n else []


def executor_resync(run, S, it, Wd, bd, flags, executor):
    """Step 1 of a consensus sweep on the CPU (the ``resync`` of
    :func:`vdsh_numba.methods.vdsh.engine.codes_step`): the forward pass as tasks of
    ``executor``, the same arithmetic wherever they run.

    A local executor fills the engine's spare buffers ``S["Af"]``, ``S["Zf"]``, each layer in
    row blocks, one per worker (:func:`row_blocks`), then swaps them in as the engine's
    :func:`~vdsh_numba.methods.vdsh.engine.resync_forward` does. A resident one (Dask) runs layer
    ``h`` on the worker of position ``(h - 1) / L``, where its ``a_h``, ``z_h`` stay (as
    parts in ``S["A"]``, ``S["Z"]``; the layers are submitted without waiting): only ``a``
    crosses a block boundary; the outputs ``U`` come back to this process. The layers form a
    chain, so while one runs every other worker waits: it splits its rows over the threads of
    all the workers on its machine (``host_threads``), as the thread pool splits them over its
    workers. Returns ``(U, gap)``. (On the cuda backend the engine's own forward pass runs on
    the device instead.)
    """
    ex, o, L = executor, run.o, run.L
    Ws, bs = S["Ws"], S["bs"]
    pos = [(h - 1) / L for h in range(L + 1)]  # hidden layer h's position (h >= 1)

    def forward_pass():
        if ex.resident:
            A, Z = [remote_input(run, S, ex)], [None]
            for h in range(1, L + 1):
                (a, z), = ex.map(forward_layer, [(A[h - 1], Ws[h - 1], bs[h - 1], flags[h - 1], None,
                                                  ex.host_threads(pos[h]))], where=[pos[h]], keep=(0, 1), size=2)
                A.append(a)
                Z.append(z)
        else:
            A, Z = S["Af"], S["Zf"]
            blocks = row_blocks(run.n, ex.workers)
            for h in range(1, L + 1):
                ex.map(forward_layer, [(A[h - 1][s:e], Ws[h - 1], bs[h - 1], flags[h - 1], (A[h][s:e], Z[h][s:e]))
                                       for s, e in blocks])
        U, = ex.map(output_layer, [(A[L], S["Wo"], S["bo"])], where=[pos[L]])
        return A, Z, U

    A, Z, U = run.dense(forward_pass)
    if not cpu_ops.all_finite(U):
        bad = next((h for h in range(1, L + 1) if not ex.map(cpu_ops.all_finite, [(A[h],)], where=[pos[h]])[0]),
                   "output")
        raise run.diverged(it, bad, "the forward pass")
    gap = np.nan
    if S["aux"]:
        d, nrm = ex.map(gap_terms, [(S["A"][L], A[L])], where=[pos[L]])[0]
        gap = float(np.sqrt(d / max(nrm, 1e-30)))
    if not S["aux"] or o["resync"]:
        if ex.resident:  # the engine's buffers stay here, unused; the previous parts are dropped
            S["A"], S["Z"] = A, Z
        else:
            S["A"], S["Af"], S["Z"], S["Zf"] = A, S["A"], Z, S["Z"]
        S["aux"] = True
    return U, gap


def remote_input(run, S, executor):
    """The features, put once on the worker of the first layer (kept in ``S["remote"]``)."""
    rem = S.setdefault("remote", {})
    if "X" not in rem:
        rem["X"] = executor.put(run.X, 0.0)
    return rem["X"]


# ---------------------------------------------------------------------------- one sweep

def consensus_sweep(S, executor, ops=None):
    """One consensus sweep of the network step, in place on the state ``S``.

    ``ops``: the module whose ``local_solve``, ``block_update`` and ``multiplier_step`` run the
    tasks: this one (numpy arrays, the default) or :mod:`vdsh_numba.methods.vdsh.gpu_consensus` (device
    arrays in ``A``, ``Z``, ``Lam``, ``B``; the weights, copies and duals stay on the host).

    ``S``: ``Ws``, ``bs`` (L + 1 global weight layers, the last the output), ``U`` (dict
    ``(m, j) -> (U_W, u_b)``), ``A`` (L + 1), ``Z`` (L + 1, ``Z[0]`` None), ``Lam`` (L), ``B``
    (float32 codes), ``beta``, ``gamma``, ``eta``, ``rho``, ``skip_weight``, ``residual``
    (:func:`vdsh_numba.methods.vdsh.engine.residual_flags` of the hidden weight layers),
    ``local`` ("split" or "through"), ``order``, ``copies`` (dict ``(m, j) -> (W, b)``), and
    optionally ``dual_scale`` (the duals' factor when the penalty grows, applied by the consensus
    step). The arrays may be values or, on a resident executor, futures or parts held by its workers:
    the sweep only hands them from task to task (every task's placement is ``where``: its
    layer's position).
    Returns the squared residuals: z constraints (``rz``), activation constraints (``ra``),
    consensus (``Σ ||θ̃ - θ||²`` over all copies, weights and biases) and the change of θ
    (``dtheta``), the first three per layer (``rz_layers``, ``ra_layers`` per hidden layer,
    ``consensus_layers`` per weight layer), and ``finite_layers`` (per weight layer: its
    weights and copies finite).
    """
    Ws, bs, U, A, Z, Lam = S["Ws"], S["bs"], S["U"], S["A"], S["Z"], S["Lam"]
    ops = ops or sys.modules[__name__]
    L = len(Ws) - 1
    beta, gamma, eta, rho = S["beta"], S["gamma"], S["eta"], S["rho"]
    res = S["residual"]
    through = S["local"] == "through"
    if S["local"] not in ("split", "through"):
        raise ValueError(f"vdsh.local must be 'split' or 'through', got {S['local']!r}")
    if S["order"] not in ("local_first", "aux_first"):
        raise ValueError(f"vdsh.order must be 'local_first' or 'aux_first', got {S['order']!r}")

    def spec(m, j):
        om = 1.0 / len(owners(j, L))
        UW, ub = U[(m, j)]
        c = beta if j < L else 1.0
        Zt, Lt = (Z[j + 1], Lam[j]) if j < L else (S["B"], None)
        return (A[j], Zt, Lt, om * c, om * rho, Ws[j], bs[j], UW, ub)

    def copies_of(j):
        om = 1.0 / len(owners(j, L))
        return [(copies[(m, j)][0], copies[(m, j)][1], om) for m in owners(j, L)]

    def local_step():
        # 1. local problems, independent, from the previous iterate
        probs = [(ops.local_solve, {"lo": spec(m, m), "hi": spec(m, m + 1), "eta": eta, "through": through,
                                    "residual_mid": res[m]}) for m in range(L)]
        out = executor.map(local_copies, probs, where=[m / L for m in range(L)], keep=(0, 1, 2, 3), size=4)
        for m, (W_lo, b_lo, W_hi, b_hi) in enumerate(out):
            copies[(m, m)], copies[(m, m + 1)] = (W_lo, b_lo), (W_hi, b_hi)

    def aux_step():
        # 2. auxiliary variables, two colours (the top layer's first), each colour in parallel
        for colour in (0, 1):
            hs = [h for h in range(1, L + 1) if (L - h) % 2 == colour]
            blks = []
            for h in hs:
                top = h == L
                blks.append(({"a_prev": A[h - 1], "z": Z[h], "lam": Lam[h - 1],
                              "below": copies_of(h - 1), "above": copies_of(h),
                              "T_z": S["B"] if top else Z[h + 1], "T_lam": None if top else Lam[h],
                              "coef": 1.0 if top else beta,
                              "a_next": None if top else A[h + 1], "z_next": None if top else Z[h + 1],
                              "skip": S["skip_weight"] * gamma if (not top and res[h]) else 0.0,
                              "residual": res[h - 1], "beta": beta, "gamma": gamma},))
            for h, (a, z) in zip(hs, executor.map(ops.block_update, blks, where=[(h - 1) / L for h in hs],
                                                  keep=(0, 1), size=2)):
                A[h], Z[h] = a, z

    copies = S["copies"]  # filled in place by local_step; kept for the next sweep
    if S["order"] == "local_first":
        local_step()
        aux_step()
    else:  # the same cycle entered at step 2: the auxiliary step uses the previous sweep's copies
        aux_step()
        local_step()

    # 3. consensus, 4. duals: one task per weight layer, where the layer's global weights live
    # (the output layer with the top hidden layer); then the multipliers. Both maps are submitted
    # without waiting and their scalars gathered at once, the sweep's only wait (on Dask).
    out = executor.map(consensus_layer, [([copies[(m, j)] for m in owners(j, L)], [U[(m, j)] for m in owners(j, L)],
                                          Ws[j], bs[j], S.get("dual_scale")) for j in range(L + 1)],
                       where=[min(j, L - 1) / L for j in range(L + 1)], keep=range(9), size=9)
    scalars = []
    for j, (W, b, uW0, ub0, uW1, ub1, rc_j, dth, ok) in enumerate(out):
        Ws[j], bs[j] = W, b
        for m, u in zip(owners(j, L), ((uW0, ub0), (uW1, ub1))):
            U[(m, j)] = u
        scalars += [rc_j, dth, ok]
    out = executor.map(ops.multiplier_step, [(Lam[j], Z[j + 1], A[j + 1], A[j], Ws[j], bs[j], res[j])
                                             for j in range(L)], where=[j / L for j in range(L)], keep=range(3), size=3)
    for j, (lam, rz_j, ra_j) in enumerate(out):
        Lam[j] = lam
        scalars += [rz_j, ra_j]
    scalars = executor.get_many(scalars)
    cons, mult = scalars[:3 * (L + 1)], scalars[3 * (L + 1):]
    rc, dtheta, finite = np.array(cons[0::3], np.float64), float(sum(cons[1::3])), [bool(v) for v in cons[2::3]]
    rz, ra = np.array(mult[0::2], np.float64), np.array(mult[1::2], np.float64)
    return {"rz": float(rz.sum()), "ra": float(ra.sum()), "consensus": float(rc.sum()), "dtheta": dtheta,
            "rz_layers": rz.tolist(), "ra_layers": ra.tolist(), "consensus_layers": rc.tolist(),
            "finite_layers": finite}


# ---------------------------------------------------------------------------- in the engine

def extra_names(m, j):
    """The names in ``S["extra"]`` of copy ``(m, j)``'s weights and bias and of their scaled
    duals: ``copy_W_m_j``, ``copy_b_m_j``, ``dual_W_m_j``, ``dual_b_m_j``."""
    return f"copy_W_{m}_{j}", f"copy_b_{m}_{j}", f"dual_W_{m}_{j}", f"dual_b_{m}_{j}"


def copy_keys(L):
    """Every ``(m, j)``: substructure ``m`` holds a copy of weight layer ``j`` (0..L)."""
    return [(m, j) for j in range(L + 1) for m in owners(j, L)]


def network_state(Ws, bs, A, Z, Lam, B, copies, duals, o, beta, gamma, eta, flags):
    """The state that :func:`consensus_sweep` reads and updates, from the engine's pieces.

    ``Ws``, ``bs``: the L + 1 global weight layers (the last the output layer); ``A``, ``Z``,
    ``Lam``: the engine's lists (updated in place); ``B`` float32 codes; ``copies``, ``duals``:
    dicts ``(m, j) -> (W, b)``; ``o``: the training parameters (``rho``, ``skip_weight``,
    ``local``, ``order``); ``flags``: :func:`vdsh_numba.methods.vdsh.engine.residual_flags`.
    """
    return {"Ws": Ws, "bs": bs, "A": A, "Z": Z, "Lam": Lam, "B": B, "copies": copies, "U": duals,
            "beta": beta, "gamma": gamma, "eta": eta, "rho": o["rho"], "skip_weight": o["skip_weight"],
            "residual": list(flags), "local": o["local"], "order": o["order"]}


def place_state(run, S, executor):
    """Puts the per-sample state that is still here on the workers of a resident executor:
    ``Λ_h`` (and ``a_h``, ``z_h`` after a resume without re-synchronisation) on the worker of
    hidden layer ``h``; a no-op once they are there. Checkpoints fetch them back
    (``run.fetch``)."""
    L = run.L
    for j in range(L):
        if not is_remote(S["Lam"][j]):
            S["Lam"][j] = executor.put(S["Lam"][j], j / L)
    if S["aux"] and not run.o["resync"]:  # with resync the forward pass replaces them first
        for h in range(1, L + 1):
            for key in ("A", "Z"):
                if not is_remote(S[key][h]):
                    S[key][h] = executor.put(S[key][h], (h - 1) / L)
    run.fetch = lambda x: run.ops.to_host(executor.get(x))


def resident_weights(run, S, executor):
    """The global weights ``θ_j`` (``j = 0..L``, the last the output layer) as the tasks of a
    resident executor read them: futures on the worker of layer ``j`` (position ``j / L``; the
    output layer with the top hidden layer). They stay there from sweep to sweep; the engine
    holds a read-only host mirror (:func:`host_weights`), and a host array that is not the
    mirror (a resume, or an ``on_sweep`` hook that replaced it) is put again."""
    L = run.L
    mirror = S.setdefault("remote", {}).setdefault("theta", {})
    Wf, bf = [], []
    for j, (W, b) in enumerate(zip(S["Ws"] + [S["Wo"]], S["bs"] + [S["bo"]])):
        e = mirror.get(j)
        if e is None or e[0] is not W or e[1] is not b:
            where = min(j, L - 1) / L
            e = mirror[j] = (W, b, executor.put(W, where), executor.put(b, where))
        Wf.append(e[2])
        bf.append(e[3])
    return Wf, bf


def host_weights(run, S, executor, Wf, bf):
    """The host mirror of the global weights the workers now hold (futures or parts ``Wf``, ``bf``):
    fetched once per sweep (``(L + 1)`` ``w x w``: what the engine's objective, checkpoints and
    hooks read), read-only so that a change made here cannot silently differ from the workers'."""
    mirror = S.setdefault("remote", {}).setdefault("theta", {})
    Ws, bs = [], []
    got = executor.get_many([x for wb in zip(Wf, bf) for x in wb])
    for j, (W, b) in enumerate(zip(Wf, bf)):
        hw, hb = got[2 * j], got[2 * j + 1]
        hw.setflags(write=False)
        hb.setflags(write=False)
        mirror[j] = (hw, hb, W, b)
        Ws.append(hw)
        bs.append(hb)
    return Ws, bs


def is_remote(x):
    """Whether ``x`` is held elsewhere (a Dask future, a part of a task's result) rather than an
    array here."""
    return not isinstance(x, np.ndarray)


def consensus_update(run, S, it, executor, tasks=None):
    """One sweep of the consensus scheme: the ``update`` of
    :func:`vdsh_numba.methods.vdsh.engine.train` (``functools.partial`` binds ``executor`` and
    ``tasks``; the engine calls it as ``update(run, S, it)``).

    Steps 1-2 (forward re-synchronisation, code step, classifier) are the engine's
    :func:`~vdsh_numba.methods.vdsh.engine.codes_step`; the network step is :func:`consensus_sweep`
    with the tasks of ``tasks`` (this module, or :mod:`vdsh_numba.methods.vdsh.gpu_consensus` on
    the cuda backend) on ``executor``; then the consensus penalty grows as beta and gamma do
    (the scaled duals rescaled by eta_old / eta_new). The copies and duals live in
    ``S["extra"]`` as ``copy_W_m_j``, ``copy_b_m_j``, ``dual_W_m_j``, ``dual_b_m_j`` and eta
    in ``S["extra_meta"]["eta"]``: a checkpoint holds them, a resume continues bitwise.
    Divergence raises :class:`~vdsh_numba.methods.vdsh.engine.TrainingDiverged` naming the
    sweep and the layer.
    """
    o, L = run.o, run.L
    resync = None if run.ops.NAME == "cuda" else partial(executor_resync, executor=executor)
    if executor.resident:
        place_state(run, S, executor)
    ctx = engine.codes_step(run, S, it, resync)
    X, meta = S["extra"], S["extra_meta"]
    keys = copy_keys(L)
    Ws, bs = S["Ws"] + [S["Wo"]], S["bs"] + [S["bo"]]
    if "eta" not in meta:  # a fresh start: copies = the global weights, zero duals
        meta["eta"] = float(o["eta"])
        for m, j in keys:
            cW, cb, uW, ub = extra_names(m, j)
            X[cW], X[cb] = Ws[j].copy(), bs[j].copy()
            X[uW], X[ub] = np.zeros_like(Ws[j]), np.zeros_like(bs[j])
    names = {key: extra_names(*key) for key in keys}
    if executor.resident:
        Ws, bs = resident_weights(run, S, executor)
        for (m, _), four in names.items():  # copies and duals: on the worker of their substructure
            for name in four:
                if not is_remote(X[name]):
                    X[name] = executor.put(X[name], m / L)
    copies = {key: (X[cW], X[cb]) for key, (cW, cb, _, _) in names.items()}
    duals = {key: (X[uW], X[ub]) for key, (_, _, uW, ub) in names.items()}
    eta = meta["eta"]
    # the consensus penalty grows with beta and gamma; the scaled duals follow (U = y / eta),
    # rescaled by the consensus step's tasks
    eta_new = min(eta * o["penalty_growth"], o["eta"] * o["penalty_max"])
    C = network_state(Ws, bs, S["A"], S["Z"], S["Lam"], run.Bf, copies, duals, o, S["beta"], S["gamma"],
                      eta, ctx["flags"])
    C["dual_scale"] = np.float32(eta / eta_new) if eta_new != eta else None
    r = consensus_sweep(C, executor, tasks)
    for j in range(L + 1):  # one check per weight layer: its copies, duals, weights, a, z, multipliers
        ok = r["finite_layers"][j]
        if j < L:
            ok = ok and np.isfinite(r["rz_layers"][j]) and np.isfinite(r["ra_layers"][j])
        if not ok:
            raise run.diverged(it, j + 1 if j < L else "output",
                               "the local copies, W_h, b_h, a_h, z_h or the multipliers" if j < L
                               else "the local copies of W_o, b_o or W_o, b_o")
    Ws, bs = C["Ws"], C["bs"]
    if executor.resident:
        Ws, bs = host_weights(run, S, executor, Ws, bs)
    S["Ws"], S["bs"], S["Wo"], S["bo"] = Ws[:L], bs[:L], Ws[L], bs[L]
    for key, (cW, cb, uW, ub) in names.items():
        X[cW], X[cb] = C["copies"][key]
        X[uW], X[ub] = C["U"][key]
    meta["eta"] = eta_new
    terms = engine.sweep_terms(run, S, ctx, np.asarray(r["rz_layers"]), np.asarray(r["ra_layers"]))
    return {**terms, "consensus": float(np.sqrt(r["consensus"])), "dtheta": float(np.sqrt(r["dtheta"])),
            "eta": eta}
