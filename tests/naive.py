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
