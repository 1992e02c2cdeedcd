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


# --- Hamming and metrics ---
import itertools  # noqa: E402


def unpack(codes, bits):
    """Bits of packed codes, one by one: bit j is byte j // 8 at 1 << (7 - j % 8)."""
    codes = np.asarray(codes)
    out = np.zeros((codes.shape[0], bits), dtype=np.uint8)
    for j in range(bits):
        out[:, j] = (codes[:, j // 8] >> (7 - j % 8)) & 1
    return out


def hamming(q, db, bits):
    """(nq, n) Hamming distances by comparing unpacked bits."""
    a, b = unpack(q, bits), unpack(db, bits)
    return (a[:, None, :] != b[None, :, :]).sum(axis=2).astype(np.int64)


def order(dist_row):
    """Ranking of one query: by distance, ties by ascending index."""
    return np.lexsort((np.arange(len(dist_row)), dist_row))


def search(q, db, bits, k):
    dist = hamming(q, db, bits)
    nq, n = dist.shape
    D = np.full((nq, k), np.iinfo(np.int32).max, dtype=np.int32)
    I = np.full((nq, k), -1, dtype=np.int64)
    for i in range(nq):
        o = order(dist[i])[:k]
        D[i, :len(o)] = dist[i, o]
        I[i, :len(o)] = o
    return D, I


def range_search(q, db, bits, radius):
    dist = hamming(q, db, bits)
    lims, Ds, Is = [0], [], []
    for i in range(dist.shape[0]):
        o = [j for j in order(dist[i]) if dist[i, j] <= radius]
        Ds += [dist[i, j] for j in o]
        Is += o
        lims.append(len(Is))
    return np.array(lims), np.array(Ds, dtype=np.int32), np.array(Is, dtype=np.int64)


def graded(ql, dl):
    """(nq, n) graded relevance: label equality (1-D) or number of shared labels (2-D)."""
    if ql.ndim == 1:
        return (ql[:, None] == dl[None, :]).astype(np.int64)
    return (ql.astype(np.int64) @ dl.astype(np.int64).T)


def ap_of_list(rel_sorted, topk=None):
    """AP of a ranked 0/1 list: with topk, normalised by the relevant items in the top k."""
    rel = np.asarray(rel_sorted, dtype=np.float64)
    R = rel.sum()
    if topk is not None:
        rel = rel[:topk]
        R = rel.sum()
    if R == 0:
        return 0.0
    hits = np.cumsum(rel)
    ranks = np.arange(1, len(rel) + 1)
    return float((rel * hits / ranks).sum() / R)


def dcg_of_list(gain_levels, k):
    g = 2.0 ** np.asarray(gain_levels[:k], dtype=np.float64) - 1.0
    return float((g / np.log2(np.arange(2, len(g) + 2))).sum())


def ndcg_of_list(levels_sorted, all_levels, k):
    idcg = dcg_of_list(np.sort(all_levels)[::-1], k)
    return dcg_of_list(levels_sorted, k) / idcg if idcg > 0 else 0.0


def mean_ap(q, db, ql, dl, bits, topk=None):
    dist, rel = hamming(q, db, bits), graded(ql, dl) > 0
    return float(np.mean([ap_of_list(rel[i][order(dist[i])], topk) for i in range(len(q))]))


def mean_ndcg(q, db, ql, dl, bits, k):
    dist, g = hamming(q, db, bits), graded(ql, dl)
    return float(np.mean([ndcg_of_list(g[i][order(dist[i])], g[i], k) for i in range(len(q))]))


def tie_orderings(dist_row):
    """Every ranking consistent with the distances (all permutations within ties)."""
    buckets = [np.flatnonzero(dist_row == d) for d in np.unique(dist_row)]
    for perms in itertools.product(*[itertools.permutations(b) for b in buckets]):
        yield np.concatenate([np.array(p, dtype=np.int64) for p in perms])


def ap_tie_aware_bruteforce(dist_row, rel_row, topk=None):
    """Average over all tie orderings. With topk: E[sum of precisions] / E[relevant in top k]."""
    nums, dens = [], []
    for o in tie_orderings(dist_row):
        rel = rel_row[o].astype(np.float64)
        if topk is not None:
            rel = rel[:topk]
        hits = np.cumsum(rel)
        nums.append((rel * hits / np.arange(1, len(rel) + 1)).sum())
        dens.append(rel.sum())
    den = np.mean(dens) if topk is not None else rel_row.sum()
    return float(np.mean(nums) / den) if den > 0 else 0.0


def ndcg_tie_aware_bruteforce(dist_row, level_row, k):
    return float(np.mean([ndcg_of_list(level_row[o], level_row, k)
                          for o in tie_orderings(dist_row)]))


def ap_tie_aware_direct(dist_row, rel_row, topk=None):
    """McSherry & Najork / He et al. AP_T summed term by term (no closed form)."""
    n = len(dist_row)
    k = n if topk is None else min(topk, n)
    N = R = 0
    num = exp_rel = 0.0
    for d in np.unique(dist_row):
        m = int((dist_row == d).sum())
        r = int(rel_row[dist_row == d].sum())
        s = (r - 1) / (m - 1) if m > 1 else 0.0
        for t in range(N + 1, min(N + m, k) + 1):
            num += (r / m) * (R + 1 + (t - N - 1) * s) / t
            exp_rel += r / m
        N += m
        R += r
    den = rel_row.sum() if topk is None else exp_rel
    return num / den if den > 0 else 0.0


def calc_top_map(rB, qB, retrievalL, queryL, topk):
    """DeepHash-pytorch ``CalcTopMap`` (utils/tools.py), transcribed: codes in {-1, +1}
    float32, one-hot or multi-hot labels."""
    num_query = queryL.shape[0]
    topkmap = 0
    for it in range(num_query):
        gnd = (np.dot(queryL[it, :], retrievalL.transpose()) > 0).astype(np.float32)
        q = rB.shape[1]
        hamm = 0.5 * (q - np.dot(qB[it, :], rB.transpose()))
        ind = np.argsort(hamm)
        gnd = gnd[ind]
        tgnd = gnd[0:topk]
        tsum = np.sum(tgnd).astype(int)
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(tgnd == 1)) + 1.0
        topkmap_ = np.mean(count / (tindex))
        topkmap = topkmap + topkmap_
    return topkmap / num_query


def radius_stats(q, db, ql, dl, bits, radius):
    """Per query: precision within radius (0 if nothing retrieved), empty flag, recall."""
    dist, rel = hamming(q, db, bits), graded(ql, dl) > 0
    P, E, Rc = [], [], []
    for i in range(len(q)):
        m = dist[i] <= radius
        P.append(rel[i][m].sum() / m.sum() if m.sum() else 0.0)
        E.append(m.sum() == 0)
        Rc.append(rel[i][m].sum() / rel[i].sum() if rel[i].sum() else 0.0)
    return np.array(P), np.array(E), np.array(Rc)


def precision_recall_at_k(q, db, ql, dl, bits, k):
    dist, rel = hamming(q, db, bits), graded(ql, dl) > 0
    P, Rc = [], []
    for i in range(len(q)):
        top = rel[i][order(dist[i])][:k]
        P.append(top.sum() / min(k, db.shape[0]))
        Rc.append(top.sum() / rel[i].sum() if rel[i].sum() else 0.0)
    return float(np.mean(P)), float(np.mean(Rc))

# --- baselines ---
# Loop-by-loop references for vdsh_numba.methods.baselines (each mirrors one equation of a paper;
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


def mean_ap_signs(codes_q, codes_db, yq, ydb):
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

def gist(img):
    """One image, line by line after Torralba's LMgist.m (createGabor, prefilt, gistGabor, downN)
    with its defaults (8 8 8 8 orientations, 4 blocks, fc_prefilt 4, boundary 32), float64."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        img = img.mean(axis=2)
    img = img - img.min()
    if img.max() > 0:
        img = 255 * img / img.max()
    # prefilt
    w, fc = 5, 4.0
    s1 = fc / np.sqrt(np.log(2))
    x = np.pad(np.log(img + 1), w, mode="symmetric")
    sn, sm = x.shape
    n = max(sn, sm)
    n = n + n % 2
    x = np.pad(x, ((0, n - sn), (0, n - sm)), mode="symmetric")
    fx, fy = np.meshgrid(np.arange(-n / 2, n / 2), np.arange(-n / 2, n / 2))
    gf = np.fft.fftshift(np.exp(-(fx ** 2 + fy ** 2) / s1 ** 2))
    out = x - np.real(np.fft.ifft2(np.fft.fft2(x) * gf))
    localstd = np.sqrt(np.abs(np.fft.ifft2(np.fft.fft2(out ** 2) * gf)))
    out = out / (0.2 + localstd)
    out = out[w:sn - w, w:sm - w]
    # createGabor on the padded size
    be = 32
    nr, nc = out.shape
    N = nr + 2 * be  # square images only, as LMgist
    fx, fy = np.meshgrid(np.arange(-N / 2, N / 2), np.arange(-N / 2, N / 2))
    fr = np.fft.fftshift(np.sqrt(fx ** 2 + fy ** 2))
    t = np.fft.fftshift(np.angle(fx + 1j * fy))
    G = []
    for i in range(4):
        for j in range(8):
            a, f0, b, th = 0.35, 0.3 / 1.85 ** i, 16 * 8 ** 2 / 32 ** 2, np.pi / 8 * j
            tr = t + th
            tr = tr + 2 * np.pi * (tr < -np.pi) - 2 * np.pi * (tr > np.pi)
            G.append(np.exp(-10 * a * (fr / N / f0 - 1) ** 2 - 2 * b * np.pi * tr ** 2))
    # gistGabor + downN
    F = np.fft.fft2(np.pad(out, be, mode="symmetric"))
    nx = np.fix(np.linspace(0, nr, 5)).astype(int)
    ny = np.fix(np.linspace(0, nc, 5)).astype(int)
    g = []
    for Gk in G:
        ig = np.abs(np.fft.ifft2(F * Gk))[be:be + nr, be:be + nc]
        v = np.zeros((4, 4))
        for xx in range(4):
            for yy in range(4):
                v[xx, yy] = ig[nx[xx]:nx[xx + 1], ny[yy]:ny[yy + 1]].mean()
        g.extend(v.reshape(-1, order="F"))  # MATLAB's column-major reshape(v, [W N])
    return np.array(g)


# --- reliability: references for the property tests (tests/test_properties.py) ---
def histogram(q, db, bits):
    """(nq, bits + 1) number of database codes at each Hamming distance."""
    dist = hamming(q, db, bits)
    return np.stack([np.bincount(row, minlength=bits + 1) for row in dist]) if len(q) else \
        np.zeros((0, bits + 1), np.int64)


def stable_sort_by_distance(dist, idx):
    """Insertion sort of (dist, idx) pairs by distance only: equal distances keep their order."""
    out = []
    for d, i in zip(dist, idx):
        p = len(out)
        while p > 0 and out[p - 1][0] > d:
            p -= 1
        out.insert(p, (d, i))
    return [d for d, _ in out], [i for _, i in out]


# --- consensus scheme (vdsh_numba.methods.vdsh.consensus) ---
def ridge_consensus(A, T, c, r, eta, V, v):
    """``argmin c/n ||T - A W^T - 1 b^T||^2 + r ||W||^2 + eta ||W - V||^2 + eta ||b - v||^2``
    by least squares on the stacked system (float64 lstsq; no normal equations)."""
    A = np.asarray(A, np.float64)
    T = np.asarray(T, np.float64)
    n, d = A.shape
    k = T.shape[1]
    rows = [np.sqrt(c / n) * np.hstack([A, np.ones((n, 1))]),
            np.sqrt(r) * np.hstack([np.eye(d), np.zeros((d, 1))])]
    rhs = [np.sqrt(c / n) * T, np.zeros((d, k))]
    if eta > 0:
        rows.append(np.sqrt(eta) * np.eye(d + 1))
        rhs.append(np.sqrt(eta) * np.vstack([np.asarray(V, np.float64).T, np.asarray(v, np.float64)[None, :]]))
    sol = np.linalg.lstsq(np.vstack(rows), np.vstack(rhs), rcond=None)[0]  # (d + 1, k)
    return sol[:d].T, sol[d]


def consensus_local(prob):
    """Substructure local problem: two stacked least squares; ``through`` recomputes the middle."""
    A, Z, Lam, c, r, V, v = prob["lo"]
    T = Z if Lam is None else Z + Lam
    lo = ridge_consensus(A, T, c, r, prob["eta"], V, v)
    A2, Z, Lam, c, r, V, v = prob["hi"]
    if prob.get("through", False):
        z = np.asarray(A, np.float64) @ lo[0].T + lo[1]
        A2 = relu(z) + (A if prob["residual_mid"] else 0.0)
    hi = ridge_consensus(A2, Z if Lam is None else Z + Lam, c, r, prob["eta"], V, v)
    return lo, hi


def consensus_a(blk):
    """The a_h block: per-sample least squares on the stacked system
    ``[sqrt(ω coef) W_c; sqrt(γ) I; sqrt(σ) I] a = [sqrt(ω coef)(T - b_c); sqrt(γ) φ; sqrt(σ)(a_next - relu z_next)]``."""
    T = blk["T_z"] if blk["T_lam"] is None else blk["T_z"] + blk["T_lam"]
    T = np.asarray(T, np.float64)
    phi = relu(blk["z"]) + (blk["a_prev"] if blk["residual"] else 0.0)
    rows, rhs = [], []
    for W, b, om in blk["above"]:
        s = np.sqrt(om * blk["coef"])
        rows.append(s * np.asarray(W, np.float64))
        rhs.append(s * (T - b[None, :]).T)
    w = blk["z"].shape[1]
    rows.append(np.sqrt(blk["gamma"]) * np.eye(w))
    rhs.append(np.sqrt(blk["gamma"]) * np.asarray(phi, np.float64).T)
    if blk["skip"] != 0.0:
        rows.append(np.sqrt(blk["skip"]) * np.eye(w))
        rhs.append(np.sqrt(blk["skip"]) * np.asarray(blk["a_next"] - relu(blk["z_next"]), np.float64).T)
    return np.linalg.lstsq(np.vstack(rows), np.vstack(rhs), rcond=None)[0].T


def consensus_mean(copies, duals):
    out = np.zeros(np.shape(copies[0]))
    for t, u in zip(copies, duals):
        out += np.asarray(t, np.float64) + np.asarray(u, np.float64)
    return out / len(copies)
