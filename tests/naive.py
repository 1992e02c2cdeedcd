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


# --- ADMM kernels ---
def relu(x):
    return np.maximum(x, 0.0)


def bias_act(p, b, a_prev, residual):
    """Forward step of one layer: returns ``(z, a)``."""
    z = p + b[None, :]
    a = relu(z) + (a_prev if residual else 0.0)
    return z, a


def z_update(a, a_prev, p, b, lam, beta, gamma, residual):
    """Entrywise ``argmin_z gamma (t - relu(z))^2 + beta (z - m)^2`` by brute force over a
    fine grid refined around both closed-form candidates (independent of the kernel's logic)."""
    t = a - a_prev if residual else a
    m = p + b[None, :] - lam
    out = np.empty_like(m, dtype=np.float64)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            tt, mm = float(t[i, j]), float(m[i, j])
            cands = [mm, 0.0, min(mm, 0.0), max(0.0, (gamma * tt + beta * mm) / (gamma + beta))]
            f = [gamma * (tt - max(c, 0.0)) ** 2 + beta * (c - mm) ** 2 for c in cands]
            out[i, j] = cands[int(np.argmin(f))]
    return out


def z_objective(z, a, a_prev, p, b, lam, beta, gamma, residual):
    t = a - a_prev if residual else a
    m = p + b[None, :] - lam
    return gamma * (t - relu(z)) ** 2 + beta * (z - m) ** 2


def dual_update(lam, z, p, b):
    r = z - p - b[None, :]
    return lam + r, float((r.astype(np.float64) ** 2).sum())


def shift_target(z, lam, b):
    return z + lam - b[None, :]


def a_rhs(q, coef_q, a_next, z_next, skip_coef, a_prev, z_l, gamma, residual_l):
    phi = relu(z_l) + (a_prev if residual_l else 0.0)
    out = coef_q * q + gamma * phi
    if skip_coef != 0.0:
        out = out + skip_coef * (a_next - relu(z_next))
    return out


def a_residual(a, a_prev, z, residual):
    phi = relu(z) + (a_prev if residual else 0.0)
    return float(((a - phi).astype(np.float64) ** 2).sum())


def sq_dist(x, y):
    return float(((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2).sum())


def dcc_codes(B, Q, S, passes):
    """SDH's discrete cyclic coordinate descent, one sample and one bit at a time."""
    B = B.copy()
    flips = 0
    for i in range(B.shape[0]):
        for _ in range(passes):
            changed = 0
            for j in range(B.shape[1]):
                v = Q[i, j] - sum(S[j, m] * B[i, m] for m in range(B.shape[1]) if m != j)
                nb = 1.0 if v > 0 else (-1.0 if v < 0 else B[i, j])
                if nb != B[i, j]:
                    B[i, j] = nb
                    changed += 1
            flips += changed
            if changed == 0:
                break
    return B, flips


def mean_ap(codes_q, codes_db, yq, ydb):
    """mAP over the whole Hamming ranking; ties in database order. Codes are {-1,+1}."""
    aps = []
    for i in range(codes_q.shape[0]):
        d = [(int((codes_q[i] != codes_db[j]).sum()), j) for j in range(codes_db.shape[0])]
        d.sort()
        hits, ap = 0, 0.0
        for r, (_, j) in enumerate(d):
            if ydb[j] == yq[i]:
                hits += 1
                ap += hits / (r + 1)
        aps.append(ap / max(hits, 1))
    return float(np.mean(aps))
