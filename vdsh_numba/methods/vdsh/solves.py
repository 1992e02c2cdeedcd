"""The closed-form pieces of VDSH's training that run on the host, whatever the backend.

Every function here works on small host matrices (``w x w``, ``bits x w``, ``bits x C``) or on
the initial parameters: the products over the samples that feed them are formed by a backend
(:mod:`vdsh_numba.methods.vdsh.cpu_ops` or :mod:`vdsh_numba.methods.vdsh.cuda_ops`), the float64 factorisations
are done here, once, for both. ``docs/algorithm.md`` gives the equations.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla

__all__ = ["ridge_from_moments", "sym_inverse", "classifier", "label_loss", "objective_terms",
           "class_codebook", "initial_parameters"]


def ridge_from_moments(SAA, STA, muA, muT, n, beta, rho, prox, W_old):
    """``argmin_{W,b} beta/n ||T - A W^T - 1 b^T||^2 + rho ||W||^2 + prox ||W - W_old||^2``.

    From the raw moments ``A^T A``, ``T^T A`` and the column means of ``A`` and ``T`` (``n``
    rows): float64 centring and a Cholesky solve. Returns ``(W, b)`` float32, ``W`` C-contiguous.
    """
    CAA = SAA.astype(np.float64) / n - np.outer(muA, muA)
    CTA = STA.astype(np.float64) / n - np.outer(muT, muA)
    M = beta * CAA
    M[np.diag_indices_from(M)] += rho + prox
    R = beta * CTA + prox * W_old
    W = sla.cho_solve(sla.cho_factor(M, lower=True, check_finite=False), R.T, check_finite=False).T
    b = muT - W @ muA
    return np.ascontiguousarray(W, dtype=np.float32), b.astype(np.float32)


def sym_inverse(M):
    """Inverse of a symmetric positive definite matrix, float32 (float64 Cholesky)."""
    c = sla.cho_factor(M, lower=True, check_finite=False)
    return sla.cho_solve(c, np.eye(M.shape[0]), check_finite=False).astype(np.float32)


def classifier(BtB, BtY, n, lam_G):
    """``G = (B^T B + n lam_G I)^{-1} B^T Y``: the code -> label ridge map (float64)."""
    k = BtB.shape[0]
    return np.linalg.solve(BtB + n * lam_G * np.eye(k), BtY)


def label_loss(sumY2, G, BtB, BtY, n):
    """``||Y - B G||^2 / n`` from ``sum(Y^2)``, ``B^T B`` and ``B^T Y`` (no ``n x C`` array)."""
    return float((sumY2 - 2.0 * np.sum(G * BtY) + np.sum(G * (BtB @ G))) / n)


def objective_terms(o, label, G, code_fit, regW):
    """The logged objective terms of one sweep.

    ``objective`` is the one both blocks descend: the code step minimises label + reg_G +
    nu code_fit at a fixed network, the network step minimises code_fit + rho reg_W at fixed
    codes, so the network's weight decay enters the joint objective as nu * rho
    (docs/algorithm.md section 2); the unscaled sum is logged as ``objective_sdh``.
    """
    reg_G = o["lam_G"] * float((G ** 2).sum())
    return {"objective": label + reg_G + o["nu"] * (code_fit + o["rho"] * regW),
            "objective_sdh": label + reg_G + o["nu"] * code_fit + o["rho"] * regW,
            "network_objective": code_fit + o["rho"] * regW,
            "label_loss": label, "reg_G": reg_G, "code_fit": code_fit, "reg_W": o["rho"] * regW}


def class_codebook(n_classes, bits, rng, tries=256):
    """Random {-1,+1} codewords, one per class, the best of ``tries`` draws by
    (minimum, then mean) pairwise Hamming distance."""
    best, key = None, None
    for _ in range(tries):
        C = np.where(rng.standard_normal((n_classes, bits)) >= 0, 1.0, -1.0)
        D = (bits - C @ C.T) / 2
        off = D[~np.eye(n_classes, dtype=bool)]
        kk = (off.min() if off.size else 0, off.mean() if off.size else 0)
        if key is None or kk > key:
            best, key = C, kk
    return best


def initial_parameters(X, Y, depth, width, bits, o, rng):
    """The gradient-free start (docs/algorithm.md section 5): ``(Ws, bs, B)`` on the host.

    ``X`` float32 (clipped) features, ``Y`` the label matrix, ``o`` the training parameters.
    """
    d, w, L, k = X.shape[1], width, depth, bits
    w1 = int(o["first_width"]) or w
    W1 = rng.standard_normal((w1, d)) * (o["init_scale"] / np.sqrt(d))
    if o["init"] == "ridge":
        # closed-form layer-wise start: the first 2C units carry relu(+-P x), P the ridge map
        # from the inputs to the centred one-hot labels, so the net starts >= a linear hash
        c = Y.shape[1]
        if 2 * c <= w1:
            Xc = X - X.mean(0)
            Yc = Y - Y.mean(0)
            M = Xc.T.astype(np.float64) @ Xc + X.shape[0] * 1e-1 * np.eye(d)
            P = np.linalg.solve(M, Xc.T.astype(np.float64) @ Yc).T  # (C, d)
            P *= 1.0 / max(np.std(Xc @ P.T), 1e-12)
            W1[:c], W1[c:2 * c] = P, -P
    elif o["init"] != "random":
        raise ValueError(f"init must be 'random' or 'ridge', got {o['init']!r}")
    Ws = [W1.astype(np.float32)]
    bs = [np.zeros(w1, np.float32)]
    for h in range(1, L):
        if h == 1 and w1 != w:
            # wide first layer -> width: the first min(w, w1) units pass through (a_1 >= 0, so
            # relu keeps them: the ridge rows survive), the rest are He-scaled random
            W2 = rng.standard_normal((w, w1)) * np.sqrt(2.0 / w1)
            m = min(w, w1)
            W2[:m] = 0.0
            W2[np.arange(m), np.arange(m)] = 1.0
            Ws.append(W2.astype(np.float32))
        elif o["residual"]:
            Ws.append(np.zeros((w, w), np.float32))  # residual net starts equal to the shallow one
        else:
            Ws.append((rng.standard_normal((w, w)) * np.sqrt(2.0 / w)).astype(np.float32))
        bs.append(np.zeros(w, np.float32))
    # initial codes: class codewords far apart in Hamming distance, labels through them
    R = class_codebook(Y.shape[1], k, rng)
    B = np.where(Y @ R >= 0, 1.0, -1.0)
    return Ws, bs, B
