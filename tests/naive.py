"""Slow, obviously correct numpy references for every kernel (stumpy's tests/naive.py habit).

Every kernel test has the shape ``ref = naive.f(...)``, ``got = f(...)``, compare.
"""
import numpy as np


def pack_codes(x):
    """Bit j of row i -> byte j // 8, value 1 << (7 - j % 8), bit = x > 0."""
    x = np.asarray(x)
    n, bits = x.shape
    out = np.zeros((n, (bits + 7) // 8), dtype=np.uint8)
    for i in range(n):
        for j in range(bits):
            if x[i, j] > 0:
                out[i, j // 8] |= np.uint8(1 << (7 - j % 8))
    return out


# --- baselines ---
# Loop-by-loop references for vdsh_numba.baselines (each mirrors one equation of a paper;
# see docs/baselines.md). Signs follow the packing rule: +1 where the value > 0, else -1.

def _sgn(v):
    return 1.0 if v > 0 else -1.0


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def mlp_forward(params, X, residual=False):
    """One sample at a time, one unit at a time."""
    depth = len(params) // 2 - 1
    out = np.zeros((X.shape[0], params[-1].shape[0]))
    for i in range(X.shape[0]):
        a = list(X[i])
        for l in range(depth):
            W, b = params[2 * l], params[2 * l + 1]
            h = [max(0.0, sum(a[p] * W[p, q] for p in range(len(a))) + b[q])
                 for q in range(W.shape[1])]
            a = [a[q] + h[q] for q in range(len(h))] if (residual and l > 0) else h
        W, b = params[-2], params[-1]
        for q in range(W.shape[1]):
            out[i, q] = sum(a[p] * W[p, q] for p in range(len(a))) + b[q]
    return out


def adam_step(p, g, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """Kingma & Ba, Algorithm 1, one step; returns new (p, m, v)."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g ** 2
    mhat = m / (1 - b1 ** t)
    vhat = v / (1 - b2 ** t)
    return p - lr * mhat / (np.sqrt(vhat) + eps), m, v


def dpsh_loss(U, U_all, S, lam):
    b, n = U.shape[0], U_all.shape[0]
    tot = 0.0
    for i in range(b):
        for j in range(n):
            th = 0.5 * float(U[i] @ U_all[j])
            tot += np.log1p(np.exp(th)) - S[i, j] * th
        for k in range(U.shape[1]):
            tot += lam * (_sgn(U[i, k]) - U[i, k]) ** 2
    return tot / (b * n)


def dtsh_loss(U, sim, alpha, eta):
    b = U.shape[0]
    tot, cnt = 0.0, 0
    for q in range(b):
        for p in range(b):
            for m in range(b):
                if p != q and sim[q, p] and not sim[q, m]:
                    z = 0.5 * U[q] @ U[p] - 0.5 * U[q] @ U[m] - alpha
                    tot += -np.log(_sigmoid(z))
                    cnt += 1
    quant = np.mean([(U[i, k] - _sgn(U[i, k])) ** 2 for i in range(b) for k in range(U.shape[1])])
    return (tot / cnt if cnt else 0.0) + eta * quant


def dcwh_loss(U, y, C, mu_cube, mu_vertex):
    b = U.shape[0]
    tot = 0.0
    for i in range(b):
        logits = [-0.5 * np.sum((U[i] - C[k]) ** 2) for k in range(C.shape[0])]
        tot += -(logits[y[i]] - np.log(np.sum(np.exp(logits))))
        for k in range(U.shape[1]):
            tot += mu_cube * max(0.0, abs(U[i, k]) - 1.1)
            tot += mu_vertex * (_sgn(U[i, k]) - U[i, k]) ** 2
    return tot / b


def tie_ap_relaxed(D, sim, L):
    """Mean over queries of the relaxed tie-aware AP, bins built one distance at a time and
    every sum written out (no cumulative-sum tricks)."""
    b = D.shape[0]
    aps = []
    for q in range(b):
        cp = np.zeros(L + 1)
        cn = np.zeros(L + 1)
        for j in range(b):
            if j == q:
                continue
            for l in range(L + 1):
                w = max(0.0, 1.0 - abs(D[q, j] - l))
                if sim[q, j]:
                    cp[l] += w
                else:
                    cn[l] += w
        npos = sum(1 for j in range(b) if j != q and sim[q, j])
        if npos == 0:
            continue
        ap = 0.0
        for l in range(L + 1):
            P = sum(cp[:l])
            N = sum(cp[:l]) + sum(cn[:l])
            ap += cp[l] * (P + (cp[l] + 1) / 2) / (N + (cp[l] + cn[l] + 1) / 2)
        aps.append(ap / npos)
    return float(np.mean(aps))


def average_precision(dist, rel):
    """AP of one ranking by distance, ties broken by index."""
    order = sorted(range(len(dist)), key=lambda j: (dist[j], j))
    hits, tot = 0, 0.0
    for r, j in enumerate(order, 1):
        if rel[j]:
            hits += 1
            tot += hits / r
    return tot / hits


def vdsh_bp_loss(U, Y, G, lam, nu, n_train, relax="tanh"):
    b = U.shape[0]
    tot = 0.0
    for i in range(b):
        bt = [np.tanh(u) if relax == "tanh" else _sgn(u) for u in U[i]]
        for c in range(Y.shape[1]):
            tot += (Y[i, c] - sum(G[c, k] * bt[k] for k in range(len(bt)))) ** 2
        for k in range(U.shape[1]):
            tot += nu * (U[i, k] - _sgn(U[i, k])) ** 2
    return tot / b + lam / n_train * np.sum(G ** 2)


def rbf_features(X, A, sigma):
    out = np.zeros((X.shape[0], A.shape[0]))
    for i in range(X.shape[0]):
        for a in range(A.shape[0]):
            out[i, a] = np.exp(-np.sum((X[i] - A[a]) ** 2) / (2 * sigma ** 2))
    return out


def sdh_dcc_sweep(B, Y, W, F, nu):
    """One DCC sweep: for each bit k, each row takes whichever of -1/+1 gives the smaller
    SDH B-objective ‖Y − BW‖² + ν‖B − F‖² with every other bit fixed (ties -> -1)."""
    B = B.copy()
    for k in range(B.shape[1]):
        for i in range(B.shape[0]):
            best, best_v = None, None
            for v in (-1.0, 1.0):
                B[i, k] = v
                obj = np.sum((Y[i] - B[i] @ W) ** 2) + nu * np.sum((B[i] - F[i]) ** 2)
                if best is None or obj < best - 1e-12:
                    best, best_v = obj, v
            B[i, k] = best_v
    return B
