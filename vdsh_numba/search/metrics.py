"""Retrieval metrics for Hamming ranking, computed without an ``nq x n`` matrix.

Every metric takes ``(query_codes, db_codes, query_labels, db_labels, ...)``:
packed ``uint8`` codes (see :mod:`vdsh_numba.codes`; ``db_codes`` may be an
``np.memmap``, streamed in chunks) and labels that are either

* 1-D integers (single-label): an item is relevant when its label equals the
  query's; its graded relevance is 0 or 1; or
* 2-D 0/1 matrices ``(n, C)`` (multi-label): relevant when at least one label is
  shared; graded relevance = the number of shared labels (used by NDCG).

The ranking is by Hamming distance. Two streaming passes over the database give
everything (see ``docs/metrics.md``):

1. per query, the histogram ``h[d, l]`` of database items at distance ``d`` with
   relevance level ``l``: enough for every tie-aware metric, precision/recall by
   radius, and the position of each distance bucket in the ranking;
2. (only for ``ties="index"``) one pass in database order: with the bucket offsets
   of pass 1, an item's rank under "ties broken by index" is (items at smaller
   distance) + (items at the same distance seen so far), so AP, precision@k and DCG
   are accumulated on the fly, without sorting and without per-item records.

Memory is O(nq * bits) plus one database chunk of codes and labels: a database (codes
*and* labels) stored as ``np.memmap`` is streamed with bounded memory.

Conventions shared by every function: a query with no relevant item contributes
0 to every AP, recall and NDCG mean (it stays in the denominator, as in
DeepHash-pytorch); means are over queries (macro averages).
"""
from __future__ import annotations

import functools

import numpy as np
from scipy.special import digamma
from numba import njit, prange

from .. import config
from .hamming import CodeStore, as_words, check_codes, n_blocks, popcount64

__all__ = ["mean_average_precision", "ndcg", "precision_at_k", "recall_at_k",
           "precision_recall_curve", "precision_within_radius", "evaluate_codes",
           "ranking_stats", "RankingStats", "RankingPasses", "shard_offsets",
           "merge_ranking_stats", "Evaluation"]


# --------------------------------------------------------------------------- kernels

@njit(inline="always")
def _level(ql, q, dl, j, mode):
    """Relevance level of database row ``j`` for query ``q``.

    ``mode == 0``: single label (one uint64 per row), level = label equality.
    ``mode == 1``: packed label bits, level = number of shared labels.
    """
    if mode == 0:
        return 1 if ql[q, 0] == dl[np.uint64(j), 0] else 0
    s = 0
    for w in range(ql.shape[1]):
        s += popcount64(ql[q, w] & dl[np.uint64(j), w])
    return s


@njit(inline="always")
def _key(qw, q, dbw, ql, dl, j, mode, shift):
    """``(distance << shift) | level`` of database row ``j`` for query ``q``, unsigned.

    Computed inline, item by item: on this machine a vectorised pre-pass into a key
    buffer was 3x slower than the scalar loop (the scatter that follows is scalar anyway).
    """
    if qw.shape[1] == 1 and mode == 0:
        u = np.uint64(j)
        return (popcount64(dbw[u, 0] ^ qw[q, 0]) << np.uint64(shift)) | np.uint64(dl[u, 0] == ql[q, 0])
    d = np.uint64(0)
    for w in range(qw.shape[1]):
        d += popcount64(qw[q, w] ^ dbw[np.uint64(j), w])
    return (d << np.uint64(shift)) | np.uint64(_level(ql, q, dl, j, mode))


#: Rows per sub-block of the histogram pass: their keys go to a buffer (a loop LLVM
#: vectorises for single-word codes and single labels), then into two interleaved
#: histograms; 4 B per row per thread.
_HIST_SUB = 4096


@njit(parallel=True, cache=True)
def _level_histogram_chunk(qw, dbw, ql, dl, mode, shift, hist, nblocks):
    """``hist[q, (d << shift) | l] +=`` chunk rows at distance ``d`` with relevance level ``l``.

    ``hist`` is ``(nq, (bits + 1) << shift)``; ``1 << shift`` levels per distance. Rows go
    in sub-blocks of ``_HIST_SUB``: first their keys into a buffer, then the counts into
    two histograms, even and odd rows (two independent chains of increments); on this
    machine 1.7x faster than one loop doing both.
    """
    nq = qw.shape[0]
    m = dbw.shape[0]
    nkeys = hist.shape[1]
    fast = qw.shape[1] == 1 and mode == 0
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        loc = np.empty((2, nkeys), np.int64)
        kb = np.empty(_HIST_SUB, np.uint32)
        for q in range(q0, q1):
            loc[:] = 0
            for j0 in range(0, m, _HIST_SUB):
                L = min(j0 + _HIST_SUB, m) - j0
                if fast:                      # the common case, spelled out: vectorises
                    x = qw[q, 0]
                    y = ql[q, 0]
                    for i in range(L):
                        u = np.uint64(j0 + i)
                        kb[np.uint64(i)] = np.uint32((popcount64(dbw[u, 0] ^ x) << np.uint64(shift))
                                                     | np.uint64(dl[u, 0] == y))
                else:
                    for i in range(L):
                        kb[np.uint64(i)] = np.uint32(_key(qw, q, dbw, ql, dl, j0 + i, mode, shift))
                h = L // 2 * 2
                for i in range(0, h, 2):
                    loc[0, np.uint64(kb[np.uint64(i)])] += 1
                    loc[1, np.uint64(kb[np.uint64(i + 1)])] += 1
                if L > h:
                    loc[0, np.uint64(kb[np.uint64(L - 1)])] += 1
            for i in range(nkeys):
                hist[q, i] += loc[0, i] + loc[1, i]


#: Rows per sub-block of the index-order pass: the packed counters of a sub-block's
#: relevant items are buffered (branch-free) and summed after it; 12 B per row per thread.
_RANK_SUB = 2048


@njit(parallel=True, cache=True)
def _ranked_pass_chunk(qw, dbw, ql, dl, mode, shift, cnt, cutoffs, disc, acc, nblocks):
    """One chunk of the pass in database order (ties broken by index), pass 2.

    ``cnt[q, d]`` packs two counters: items ranked before the next item at distance
    ``d`` (low 32 bits) and the relevant ones among them (high 32 bits). Pass 1 sets
    them to the bucket offsets (items at smaller distances); each item then adds
    ``1 + (rel << 32)`` with one scatter, and the packed value after it is its rank ``r``
    and its relevant rank. A relevant item at ``r <= cutoffs[-1]`` adds precision
    ``rr / r``, a hit and its DCG term to ``acc[q, t]``, ``t`` the first cutoff ``>= r``
    (the caller accumulates over ``t``). Rows go in sub-blocks of ``_RANK_SUB``: a
    branch-free loop buffers the counters of the relevant items, a second loop sums them
    (on this machine 2.5x faster than one loop with a branch per relevant item).
    """
    nq = qw.shape[0]
    m = dbw.shape[0]
    ushift = np.uint64(shift)
    mask = np.uint64((1 << shift) - 1)
    B = cnt.shape[1]
    ncut = cutoffs.shape[0]
    fast = qw.shape[1] == 1 and mode == 0
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        cq = np.empty(B, np.int64)
        va = np.empty(_RANK_SUB, np.int64)
        lv = np.ones(_RANK_SUB, np.int64)
        for q in range(q0, q1):
            cq[:] = cnt[q]
            for j0 in range(0, m, _RANK_SUB):
                j1 = min(j0 + _RANK_SUB, m)
                c = 0
                if fast:                              # the common case, spelled out
                    x = qw[q, 0]
                    y = ql[q, 0]
                    for j in range(j0, j1):
                        u = np.uint64(j)              # unsigned indices: no wraparound tests
                        d = popcount64(dbw[u, 0] ^ x)
                        rel = np.int64(dl[u, 0] == y)
                        v = cq[d] + (1 + (rel << 32))
                        cq[d] = v
                        va[np.uint64(c)] = v
                        c += rel
                else:
                    for j in range(j0, j1):
                        kk = _key(qw, q, dbw, ql, dl, j, mode, shift)
                        d = kk >> ushift
                        lvl = np.int64(kk & mask)
                        rel = np.int64(lvl != 0)
                        v = cq[d] + (1 + (rel << 32))
                        cq[d] = v
                        va[np.uint64(c)] = v
                        lv[np.uint64(c)] = lvl
                        c += rel
                for i in range(c):
                    v = va[i]
                    _accumulate(acc, q, v & 0xFFFFFFFF, v >> 32, lv[i], cutoffs, disc)
            cnt[q] = cq


@njit(inline="always")
def _accumulate(acc, q, r, rr, lvl, cutoffs, disc):
    """A relevant item at rank ``r`` (``rr``-th relevant, relevance level ``lvl``): if
    ``r <= cutoffs[-1]``, add precision ``rr / r``, a hit and its DCG term (``r <
    len(disc)``) to ``acc[q, t]``, ``t`` the first cutoff ``>= r``."""
    if r <= cutoffs[cutoffs.shape[0] - 1]:
        t = 0
        while cutoffs[t] < r:
            t += 1
        acc[q, t, 0] += rr / r
        acc[q, t, 1] += 1.0
        if r < disc.shape[0]:
            acc[q, t, 2] += (2.0 ** np.float64(lvl) - 1.0) * disc[r]


@njit(inline="always")
def _count_in_order(qw, q, dbw, y, dl, cq, va, vd, nw):
    """Query ``q``'s sweep of :func:`_single_label_one_pass` (``nw`` words per code):
    returns the number of relevant items recorded in ``va``/``vd``. (Two interleaved
    halves with counters of their own, to split the dependency chain through ``cq``,
    measured no faster here: the loop is bound by its instruction count.)"""
    c = 0
    for j in range(dbw.shape[0]):
        u = np.uint64(j)                      # unsigned indices: no wraparound tests
        d = np.uint64(0)
        for w in range(nw):
            d += popcount64(dbw[u, np.uint64(w)] ^ qw[q, w])
        rel = np.int64(dl[u, 0] == y)
        v = cq[d] + (1 + (rel << 32))
        cq[d] = v
        va[np.uint64(c)] = v
        vd[np.uint64(c)] = d
        c += rel
    return c


@njit(parallel=True, cache=True)
def _single_label_one_pass(qw, dbw, ql, dl, hist, cutoffs, disc, acc, nblocks):
    """Both passes at once for single labels and a database in one piece.

    Per query, one sweep in database order keeps, per distance ``d``, the packed count
    of items seen and of relevant ones (as pass 2 does, but from 0) and records the
    packed counters and the distance of every relevant item. At the end of the sweep
    the counters are the histogram (pass 1: ``hist[q, d] = (irrelevant, relevant)``),
    whose running sums give each distance's offset; each recorded item's rank is then
    offset + counter, and its precision, hit and DCG term go to ``acc`` exactly as in
    :func:`_ranked_pass_chunk` (same items, same order, so the same sums). The records
    take 12 bytes per database row per thread; pass 1's sweep over the database is saved.
    """
    nq, W = qw.shape
    m = dbw.shape[0]
    B = hist.shape[1]
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        cq = np.empty(B, np.int64)
        before = np.empty(B, np.int64)
        va = np.empty(m, np.int64)
        vd = np.empty(m, np.uint32)
        for q in range(q0, q1):
            cq[:] = 0
            if W == 1:                # the common case: a constant word count
                c = _count_in_order(qw, q, dbw, ql[q, 0], dl, cq, va, vd, 1)
            else:
                c = _count_in_order(qw, q, dbw, ql[q, 0], dl, cq, va, vd, W)
            run = 0
            for d in range(B):
                v = cq[d]
                before[d] = run
                run += v
                hist[q, d, 0] = (v & 0xFFFFFFFF) - (v >> 32)
                hist[q, d, 1] = v >> 32
            for i in range(c):
                v = va[i] + before[vd[i]]
                _accumulate(acc, q, v & 0xFFFFFFFF, v >> 32, 1, cutoffs, disc)


@njit(parallel=True, cache=True)
def _distance_block(qw, dbw, base, out):
    """``out[q, base + j]`` = float32 Hamming distance (for the DeepHash reference path)."""
    nq, W = qw.shape
    for q in prange(nq):
        for j in range(dbw.shape[0]):
            d = 0
            for w in range(W):
                d += popcount64(qw[q, w] ^ dbw[np.uint64(j), w])
            out[q, base + j] = d


@njit(parallel=True, cache=True)
def _relevance_block(ql, dl, mode, out):
    """``out[q, j]`` = 1 if database row ``j`` is relevant to query ``q``."""
    for q in prange(ql.shape[0]):
        for j in range(dl.shape[0]):
            out[q, j] = 1 if _level(ql, q, dl, j, mode) > 0 else 0


# --------------------------------------------------------------------------- inputs

def _check_label_arrays(query_labels, db_labels, nq, n):
    for name, y, rows in (("query_labels", query_labels, nq), ("db_labels", db_labels, n)):
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(y).__name__}")
        if y.ndim not in (1, 2):
            raise ValueError(f"{name} must be 1-D (class ids) or 2-D (0/1 multi-label), "
                             f"got shape {y.shape}")
        if y.shape[0] != rows:
            raise ValueError(f"{name} has {y.shape[0]} rows, the codes have {rows}")
    if query_labels.ndim != db_labels.ndim:
        raise ValueError(f"query_labels is {query_labels.ndim}-D but db_labels is "
                         f"{db_labels.ndim}-D: both single-label (1-D) or both multi-label (2-D)")
    if query_labels.ndim == 1:
        for name, y in (("query_labels", query_labels), ("db_labels", db_labels)):
            if y.dtype.kind not in "iu":
                raise TypeError(f"single-label {name} must have an integer dtype, got {y.dtype}")
        return
    if query_labels.shape[1] != db_labels.shape[1]:
        raise ValueError(f"query_labels has {query_labels.shape[1]} label columns, "
                         f"db_labels has {db_labels.shape[1]}")
    for name, y in (("query_labels", query_labels), ("db_labels", db_labels)):
        if y.dtype.kind not in "biuf":
            raise TypeError(f"multi-label {name} must be a numeric 0/1 matrix, got {y.dtype}")


def _label_words(y, name):
    """Labels as ``uint64`` words: one per row (class id) or the packed 0/1 label bits."""
    y = np.asarray(y)
    if y.ndim == 1:
        return np.ascontiguousarray(y.astype(np.int64).view(np.uint64).reshape(-1, 1))
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"multi-label {name} must contain only 0 and 1")
    b = np.packbits(y.astype(bool), axis=1)
    buf = np.zeros((b.shape[0], -(-b.shape[1] // 8) * 8), dtype=np.uint8)
    buf[:, :b.shape[1]] = b
    return buf.view(np.uint64)


class _Labels:
    """Query labels as words, database labels as words chunk by chunk.

    Labels in memory are converted once; an ``np.memmap`` of labels is converted (and,
    if multi-label, checked) one chunk at a time, so it is never copied whole.
    ``mode``: 0 single label (level = equality), 1 multi-label (level = shared labels);
    ``nlev``: the number of relevance levels.
    """

    def __init__(self, query_labels, db_labels, nq, n):
        _check_label_arrays(query_labels, db_labels, nq, n)
        self.ql = _label_words(query_labels, "query_labels")
        self.mode = 0 if query_labels.ndim == 1 else 1
        if self.mode == 0:
            self.nlev = 2
        else:
            nlev = int(query_labels.sum(axis=1).max(initial=0)) + 1 if nq else 1
            self.nlev = max(nlev, 2)
        self._db = db_labels
        self._words = None
        if not isinstance(db_labels, np.memmap):
            self._words = _label_words(db_labels, "db_labels")
        elif self.mode == 1:
            for s in range(0, n, config.CHUNK_ROWS):
                _label_words(db_labels[s:s + config.CHUNK_ROWS], "db_labels")

    def chunk(self, start, stop):
        """Word labels of database rows ``start .. stop - 1``."""
        if self._words is not None:
            return self._words[start:stop]
        return _label_words(self._db[start:stop], "db_labels")


class RankingStats:
    """Per-query sufficient statistics of a Hamming ranking (from :func:`ranking_stats`).

    Attributes
    ----------
    hist : ndarray of int64, shape (nq, bits + 1, L)
        Database items at distance ``d`` with relevance level ``l``.
    cutoffs : ndarray of int64
        Ascending rank cutoffs of the index-order pass (empty if it did not run).
    acc : ndarray of float64, shape (nq, len(cutoffs), 3)
        For ties broken by index and each cutoff ``K``: sum of precision at the ranks
        ``<= K`` of relevant items, number of relevant items in the top ``K``, and
        DCG@K (for ``K <= ndcg_k``).
    n : int
        Database size.
    """

    def __init__(self, hist, cutoffs, acc, n, ndcg_k):
        self.hist = hist
        self.cutoffs = cutoffs
        self.acc = acc
        self.n = n
        self.ndcg_k = ndcg_k
        self.n_d = hist.sum(axis=2)                      # items per distance
        self.r_d = self.n_d - hist[:, :, 0]              # relevant items per distance
        self.n_rel = self.r_d.sum(axis=1)                # relevant items per query
        lev = np.arange(hist.shape[2], dtype=np.float64)
        self.gain_levels = 2.0 ** lev - 1.0              # He et al.: G(r) = 2^r - 1
        self.g_d = hist @ self.gain_levels               # total gain per distance
        self.level_counts = hist.sum(axis=1)             # items per relevance level

    def at(self, k):
        """``acc`` at cutoff ``k`` (must be one of ``cutoffs``)."""
        c = np.searchsorted(self.cutoffs, k)
        if c >= len(self.cutoffs) or self.cutoffs[c] != k:
            raise KeyError(k)
        return self.acc[:, c]


def _check_k(k, name):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    return int(k)


def _check_ties(ties, allowed):
    if ties not in allowed:
        raise ValueError(f"ties must be one of {allowed}, got {ties!r}")


def _check_bits_of(query_codes, bits):
    """``bits`` as given, or ``8 * nbytes`` of the query codes; checks the queries."""
    if bits is None:
        if not isinstance(query_codes, np.ndarray):
            raise TypeError(f"query_codes must be a numpy uint8 array, got "
                            f"{type(query_codes).__name__}")
        if not (query_codes.ndim == 2
                and query_codes.shape[1] > 0):
            raise ValueError("query_codes must be a 2-D uint8 array (nq, ceil(bits/8)); "
                             "pass bits= to state the code length")
        bits = 8 * query_codes.shape[1]
    check_codes(query_codes, bits, "query_codes")
    return bits


def _level_shift(nlev):
    """Bits of the relevance level in a histogram key: ``1 << shift >= nlev``."""
    return max(1, int(nlev - 1).bit_length())


class RankingPasses:
    """The two streaming passes of the metrics over one database, or over one shard of it.

    A database held in shards (:class:`vdsh_numba.search.distributed.ShardedHammingIndex`) is
    evaluated shard by shard with the very functions :func:`ranking_stats` uses on one
    machine: :meth:`histogram` on every shard, :func:`shard_offsets` of those histograms,
    :meth:`rank_sums` on every shard with its offsets, then :func:`merge_ranking_stats`
    gives the :class:`RankingStats` of the whole database (and :class:`Evaluation` its
    metrics, exactly those of :func:`evaluate_codes`).

    Parameters
    ----------
    query_codes, db_codes, query_labels, db_labels, bits
        As :func:`ranking_stats`; ``db_codes``/``db_labels`` are this shard's rows.
    allow_empty : bool
        Accept a shard without rows (a whole database must not be empty).

    Attributes
    ----------
    n : int
        Rows of this database (shard).
    bits : int
    """

    def __init__(self, query_codes, db_codes, query_labels, db_labels, bits=None,
                 allow_empty=False):
        self.bits = _check_bits_of(query_codes, bits)
        self._store = CodeStore(self.bits)
        self._store.add(db_codes, "db_codes")
        if self._store.ntotal == 0 and not allow_empty:
            raise ValueError("db_codes is empty")
        self.n = self._store.ntotal
        self._qw = as_words(np.asarray(query_codes), self.bits, "query_codes")
        self._labels = _Labels(query_labels, db_labels, self._qw.shape[0], self.n)
        # levels come from the query labels alone: every shard's histogram has the same shape
        self._shift = _level_shift(self._labels.nlev)

    def histogram(self):
        """Pass 1: ``hist[q, d, l]`` = items of this database at distance ``d`` with
        relevance level ``l``; int64 ``(nq, bits + 1, L)``."""
        qw, bits, shift = self._qw, self.bits, self._shift
        nq = qw.shape[0]
        hist = np.zeros((nq, (bits + 1) << shift), dtype=np.int64)
        if nq:
            nb = n_blocks(nq)
            for base, words in self._store.chunks(config.CHUNK_ROWS):
                _level_histogram_chunk(qw, words, self._labels.ql,
                                       self._labels.chunk(base, base + words.shape[0]),
                                       self._labels.mode, shift, hist, nb)
        return hist.reshape(nq, bits + 1, 1 << shift)

    def one_pass(self, cutoffs, ndcg_k=0):
        """Both passes in one sweep (:func:`_single_label_one_pass`) where it applies:
        single labels and a database in one piece (in memory, one chunk). Returns
        ``(hist, acc)`` as :meth:`histogram` and :meth:`rank_sums` on the whole database
        would, or ``None`` where it does not apply.
        """
        qw = self._qw
        nq = qw.shape[0]
        chunks = self._store.chunks(config.CHUNK_ROWS)
        first = next(chunks, None)
        if (self._labels.mode != 0 or nq == 0 or first is None
                or next(chunks, None) is not None or self.n >= 1 << 32):
            return None
        cutoffs = np.asarray(cutoffs, dtype=np.int64)
        hist = np.empty((nq, self.bits + 1, 2), dtype=np.int64)
        acc = np.zeros((nq, len(cutoffs), 3))
        disc = self._discounts(ndcg_k, self.n)
        _single_label_one_pass(qw, first[1], self._labels.ql, self._labels.chunk(0, self.n),
                               hist, cutoffs, disc, acc, n_blocks(nq))
        return hist, acc

    @staticmethod
    def _discounts(ndcg_k, top):
        """``1 / log2(r + 1)`` for ranks ``r = 1 .. min(ndcg_k, top)`` (index 0 unused)."""
        kd = min(max(0, int(ndcg_k)), top)
        disc = np.zeros(kd + 1)
        disc[1:] = 1.0 / np.log2(np.arange(2, kd + 2))
        return disc

    def rank_sums(self, before_all, before_rel, cutoffs, ndcg_k=0):
        """Pass 2 (ties broken by index): per query and cutoff bin, sums over the relevant
        items ranked in the bin of precision at their rank, hits and DCG (ranks ``<= ndcg_k``).

        Parameters
        ----------
        before_all, before_rel : int64 ``(nq, bits + 1)``
            Items / relevant items ranked before this database's first item at distance
            ``d``: items at smaller distances, and, for a shard, the earlier shards' items at
            distance ``d`` (:func:`shard_offsets`).
        cutoffs : ascending int64
            Rank cutoffs, already clipped to the size of the *whole* database.

        Returns
        -------
        acc : float64 ``(nq, len(cutoffs), 3)``, per bin (not accumulated over the bins).
        """
        qw = self._qw
        nq = qw.shape[0]
        cutoffs = np.asarray(cutoffs, dtype=np.int64)
        acc = np.zeros((nq, len(cutoffs), 3))
        if nq == 0 or len(cutoffs) == 0:
            return acc
        top = int(before_all[:, -1].max(initial=0)) + self.n
        if top >= 1 << 32:
            raise ValueError(f"ranks up to {top} do not fit the 32-bit rank counters of the "
                             f"index-order pass (at most {(1 << 32) - 1} database items)")
        cnt = np.ascontiguousarray(np.asarray(before_all).astype(np.int64)
                                   | (np.asarray(before_rel).astype(np.int64) << np.int64(32)))
        disc = self._discounts(ndcg_k, top)
        nb = n_blocks(nq)
        for base, words in self._store.chunks(config.CHUNK_ROWS):
            _ranked_pass_chunk(qw, words, self._labels.ql,
                               self._labels.chunk(base, base + words.shape[0]),
                               self._labels.mode, self._shift, cnt, cutoffs, disc, acc, nb)
        return acc


def shard_offsets(hists):
    """Where each shard's items start in the ranking (ties broken by global index).

    Parameters
    ----------
    hists : sequence of ``(nq, bits + 1, L)`` histograms (:meth:`RankingPasses.histogram`),
        one per shard, in database order.

    Returns
    -------
    list of ``(before_all, before_rel)``, one per shard: int64 ``(nq, bits + 1)``, the items
    (and relevant items) ranked before the shard's first item at distance ``d`` = every item
    at a smaller distance plus the earlier shards' items at distance ``d``.
    """
    n_d = [h.sum(axis=2) for h in hists]
    r_d = [a - h[:, :, 0] for a, h in zip(n_d, hists)]
    tot_a, tot_r = sum(n_d), sum(r_d)
    run_a = np.cumsum(tot_a, axis=1) - tot_a
    run_r = np.cumsum(tot_r, axis=1) - tot_r
    out = []
    for a, r in zip(n_d, r_d):
        out.append((run_a, run_r))
        run_a, run_r = run_a + a, run_r + r
    return out


def merge_ranking_stats(hists, accs, n, cutoffs, ndcg_k=0) -> "RankingStats":
    """The :class:`RankingStats` of a whole database of ``n`` items from its shards' passes.

    ``hists``: each shard's :meth:`RankingPasses.histogram`; ``accs``: each shard's
    :meth:`RankingPasses.rank_sums` with the same ``cutoffs`` and ``ndcg_k``.
    """
    hist = sum(hists[1:], hists[0].copy())
    cutoffs = np.asarray(cutoffs, dtype=np.int64)
    acc = sum(accs[1:], np.array(accs[0], dtype=np.float64))
    np.cumsum(acc, axis=1, out=acc)
    return RankingStats(hist, cutoffs, acc, int(n), int(ndcg_k))


def ranking_stats(query_codes, db_codes, query_labels, db_labels, bits=None,
                  cutoffs=(), ndcg_k=0) -> RankingStats:
    """Histograms (pass 1) and, if ``cutoffs`` is not empty, the index-order pass (pass 2).

    Parameters
    ----------
    bits : int, optional
        Code length; default ``8 * query_codes.shape[1]``.
    cutoffs : sequence of int
        Rank cutoffs (clipped to the database size) for the ties-by-index metrics.
    ndcg_k : int
        Accumulate DCG for ranks ``<= ndcg_k`` (0: not at all).
    """
    passes = RankingPasses(query_codes, db_codes, query_labels, db_labels, bits)
    cut = np.unique(np.minimum(np.asarray(cutoffs, dtype=np.int64), passes.n))
    one = passes.one_pass(cut, int(ndcg_k)) if len(cut) else None
    if one is not None:
        hist, acc = one
    else:
        hist = passes.histogram()
        (before_all, before_rel), = shard_offsets([hist])
        acc = passes.rank_sums(before_all, before_rel, cut, int(ndcg_k))
    return merge_ranking_stats([hist], [acc], passes.n, cut, ndcg_k)


# --------------------------------------------------------------------------- from stats

def _safe_div(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def _bucket_ranges(st, k):
    """Per (query, distance): ranks before the bucket and how many of its ranks are <= k."""
    before = np.cumsum(st.n_d, axis=1) - st.n_d
    upper = np.minimum(before + st.n_d, k)
    inside = np.clip(upper - before, 0, None)
    return before, upper, inside


def _expected_relevant_topk(st, k):
    _, _, inside = _bucket_ranges(st, k)
    return _safe_div(st.r_d * inside, st.n_d).sum(axis=1)


#: Harmonic numbers up to this argument come from a table (512 KiB), beyond it from the
#: digamma function: the tie-aware AP needs no O(n) table for a database of n items.
HARMONIC_TABLE = 1 << 16


@functools.lru_cache(maxsize=1)
def _harmonic_table(size):
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, size + 1))])


def harmonic(x):
    """``H(x) = sum_{t=1..x} 1/t`` for integers ``x >= 0`` (elementwise).

    A cumulative-sum table up to :data:`HARMONIC_TABLE`, ``digamma(x + 1) + euler_gamma``
    above it (agrees with exact sums to ~1e-15 relative).
    """
    x = np.asarray(x, dtype=np.int64)
    out = _harmonic_table(HARMONIC_TABLE)[np.minimum(x, HARMONIC_TABLE)]
    big = x > HARMONIC_TABLE
    if big.any():
        out[big] = digamma(x[big] + 1.0) + np.euler_gamma
    return out


def _ap_tie_aware(st, k):
    """He et al. (2018) tie-aware AP, truncated at rank ``k`` (``k = n``: the full AP_T)."""
    n_d = st.n_d.astype(np.float64)
    r_d = st.r_d.astype(np.float64)
    before, upper, inside = _bucket_ranges(st, k)
    rel_before = np.cumsum(r_d, axis=1) - r_d
    # E[#relevant in ranks <= t | relevant at t] = R_prev + 1 + (t - N_prev - 1) * s
    s = _safe_div(r_d - 1.0, n_d - 1.0)
    harm = harmonic(upper) - harmonic(np.minimum(before, st.n))
    inner = (rel_before + 1.0 - (before + 1.0) * s) * harm + s * inside
    term = np.where(inside > 0, _safe_div(r_d, n_d) * inner, 0.0)
    num = term.sum(axis=1)
    den = st.n_rel if k >= st.n else _expected_relevant_topk(st, k)
    return _safe_div(num, den)


def _idcg(st, k):
    P = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    counts = st.level_counts[:, ::-1]                # highest level first
    hi = np.minimum(np.cumsum(counts, axis=1), k)
    lo = np.minimum(np.cumsum(counts, axis=1) - counts, k)
    return ((P[hi] - P[lo]) * st.gain_levels[::-1]).sum(axis=1), P


def _ndcg_tie_aware(st, k):
    idcg, P = _idcg(st, k)
    before, upper, inside = _bucket_ranges(st, k)
    lo = np.minimum(before, k)
    dcg = np.where(inside > 0, _safe_div(st.g_d, st.n_d) * (P[upper] - P[lo]), 0.0).sum(axis=1)
    return _safe_div(dcg, idcg)


def _ndcg_index(st, k):
    idcg, _ = _idcg(st, k)
    return _safe_div(st.at(k)[:, 2], idcg)


def _within_radius(st, radius):
    r = min(radius, st.n_d.shape[1] - 1)
    retrieved = st.n_d[:, :r + 1].sum(axis=1)
    relevant = st.r_d[:, :r + 1].sum(axis=1)
    return _safe_div(relevant, retrieved), retrieved == 0, _safe_div(relevant, st.n_rel)


# --------------------------------------------------------------------------- public metrics

def _map_deephash(query_codes, db_codes, query_labels, db_labels, bits, topk):
    """Transcription of DeepHash-pytorch ``CalcTopMap`` on the streaming distances."""
    passes = RankingPasses(query_codes, db_codes, query_labels, db_labels, bits)
    qw, store, labels = passes._qw, passes._store, passes._labels
    ql, dl, mode = labels.ql, labels.chunk(0, store.ntotal), labels.mode
    nq, n = qw.shape[0], store.ntotal
    topk = n if topk is None else topk
    total = 0.0
    for s in range(0, nq, config.QUERY_BLOCK):
        qb = np.ascontiguousarray(qw[s:s + config.QUERY_BLOCK])
        hamm = np.empty((qb.shape[0], n), dtype=np.float32)
        for base, words in store.chunks(config.CHUNK_ROWS):
            _distance_block(qb, words, base, hamm)
        gnd_all = np.empty((qb.shape[0], n), dtype=np.uint8)
        _relevance_block(np.ascontiguousarray(ql[s:s + qb.shape[0]]), dl, mode, gnd_all)
        for i in range(qb.shape[0]):
            ind = np.argsort(hamm[i])                  # numpy's default kind, as CalcTopMap
            tgnd = gnd_all[i][ind][:topk].astype(np.float32)
            tsum = int(np.sum(tgnd))
            if tsum == 0:
                continue
            count = np.linspace(1, tsum, tsum)
            tindex = np.asarray(np.where(tgnd == 1)) + 1.0
            total += float(np.mean(count / tindex))
    return total / nq if nq else 0.0


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk=None,
                           ties="index", bits=None) -> float:
    """Mean average precision of the Hamming ranking, over the whole ranking or the top k.

    Parameters
    ----------
    query_codes, db_codes : ndarray of uint8, shape (nq, nbytes), (n, nbytes)
        Packed codes (``db_codes`` may be an ``np.memmap``).
    query_labels, db_labels : ndarray
        1-D class ids or 2-D 0/1 label matrices (relevant = a shared label).
    topk : int, optional
        Truncate the ranking at ``topk`` (clipped to ``n``); ``None`` = all items.
    ties : {"index", "average", "deephash"}
        ``"index"``: ties broken by ascending database index. ``"average"``: the
        tie-aware AP of He et al., the expectation over all orderings within ties.
        ``"deephash"``: DeepHash-pytorch's ``CalcTopMap`` exactly (numpy's
        ``argsort`` of float32 distances decides ties; slow reference path).
    bits : int, optional
        Code length (default ``8 * nbytes``); checks that padding bits are zero.

    Returns
    -------
    float
        The mean over all queries; a query with no relevant item (in the top k when
        ``topk`` is given) contributes 0.

    Notes
    -----
    Whole ranking: AP = (1/R) sum over relevant items of precision at their rank,
    R = all relevant items. With ``topk`` the sum runs over ranks ``<= topk`` and is
    normalised by the relevant items found there (thulab/DeepHash, DeepHash-pytorch
    ``CalcTopMap``). ``ties="average"`` implements AP_T of K. He, F. Cakir,
    S. A. Bargal, S. Sclaroff, "Hashing as Tie-Aware Learning to Rank", CVPR 2018
    (Eq. for AP_T, after McSherry & Najork, ECIR 2008): for a bucket of ``n_d`` tied
    items with ``r_d`` relevant, preceded by ``N`` items of which ``R'`` are relevant,
    the contribution is ``(r_d/n_d) sum_{t=N+1}^{N+n_d} (R' + 1 + (t-N-1)(r_d-1)/(n_d-1)) / t``,
    summed in closed form with harmonic numbers. With ``topk`` the tie-aware sum is
    truncated at rank ``topk`` and divided by the *expected* number of relevant
    items in the top k (a ratio of expectations). See ``docs/metrics.md``.
    """
    _check_ties(ties, ("index", "average", "deephash"))
    if topk is not None:
        topk = _check_k(topk, "topk")
    if ties == "deephash":
        return _map_deephash(query_codes, db_codes, query_labels, db_labels, bits, topk)
    n = db_codes.shape[0] if isinstance(db_codes, np.ndarray) else 0
    k = n if topk is None else min(topk, n)
    if ties == "index":
        st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits, cutoffs=[k])
        a = st.at(min(k, st.n))
        den = st.n_rel if topk is None else a[:, 1]
        return float(_safe_div(a[:, 0], den).mean()) if len(den) else 0.0
    st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits)
    ap = _ap_tie_aware(st, min(k, st.n))
    return float(ap.mean()) if len(ap) else 0.0


def ndcg(query_codes, db_codes, query_labels, db_labels, topk, ties="index", bits=None) -> float:
    """Mean NDCG@topk with graded relevance (number of shared labels).

    Notes
    -----
    ``DCG@k = sum_{i<=k} G(rel_i) D(i)``, ``G(r) = 2^r - 1``, ``D(i) = 1/log2(1+i)``,
    normalised by the DCG of the ideal order (all database items sorted by graded
    relevance); a query without relevant items scores 0. ``ties="average"`` is the
    tie-aware NDCG of He et al. (CVPR 2018): each tied bucket spreads its total gain
    evenly over the ranks it occupies, ``(G_d / n_d) sum_{t in bucket, t<=k} D(t)``.
    Single-label data has graded relevance 0/1, so G = relevance.
    """
    _check_ties(ties, ("index", "average"))
    k = _check_k(topk, "topk")
    if ties == "index":
        st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits,
                           cutoffs=[k], ndcg_k=k)
        v = _ndcg_index(st, min(k, st.n))
    else:
        st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits)
        v = _ndcg_tie_aware(st, min(k, st.n))
    return float(v.mean()) if len(v) else 0.0


def precision_at_k(query_codes, db_codes, query_labels, db_labels, k, ties="index",
                   bits=None) -> float:
    """Mean fraction of relevant items among the first ``k`` of the ranking.

    ``k`` larger than the database is clipped: the denominator is ``min(k, n)``, the
    number of items actually returned. ``ties="average"`` gives the expectation over
    orderings within ties (relevant items of the boundary bucket counted pro rata).
    """
    _check_ties(ties, ("index", "average"))
    k = _check_k(k, "k")
    if ties == "index":
        st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits, cutoffs=[k])
        kk = min(k, st.n)
        v = st.at(kk)[:, 1] / kk
    else:
        st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits)
        kk = min(k, st.n)
        v = _expected_relevant_topk(st, kk) / kk
    return float(v.mean()) if len(v) else 0.0


def recall_at_k(query_codes, db_codes, query_labels, db_labels, k, ties="index",
                bits=None) -> float:
    """Mean fraction of a query's relevant items found among the first ``k`` (0 if none exist)."""
    _check_ties(ties, ("index", "average"))
    k = _check_k(k, "k")
    if ties == "index":
        st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits, cutoffs=[k])
        v = _safe_div(st.at(min(k, st.n))[:, 1], st.n_rel)
    else:
        st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits)
        v = _safe_div(_expected_relevant_topk(st, min(k, st.n)), st.n_rel)
    return float(v.mean()) if len(v) else 0.0


def precision_within_radius(query_codes, db_codes, query_labels, db_labels, radius=2,
                            bits=None, empty="zero"):
    """Precision of hash lookup: items within Hamming distance ``radius`` of the query.

    Parameters
    ----------
    radius : int, default 2
    empty : {"zero", "skip"}
        A query that retrieves nothing within the radius scores precision 0
        (``"zero"``, the common convention of the hashing literature, e.g. Xia et al.
        2014, Lai et al. 2015) or is left out of the mean (``"skip"``).

    Returns
    -------
    precision : float
    empty_fraction : float
        Fraction of queries with nothing within the radius.
    """
    if empty not in ("zero", "skip"):
        raise ValueError(f"empty must be 'zero' or 'skip', got {empty!r}")
    radius = _check_radius(radius)
    st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits)
    return _radius_summary(st, radius, empty)


def _check_radius(radius):
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, (int, np.integer)):
        raise TypeError(f"radius must be an integer, got {type(radius).__name__}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return int(radius)


def _radius_summary(st, radius, empty="zero"):
    p, is_empty, _ = _within_radius(st, radius)
    if len(p) == 0:
        return 0.0, 0.0
    if empty == "skip":
        p = p[~is_empty]
        prec = float(p.mean()) if len(p) else 0.0
    else:
        prec = float(p.mean())
    return prec, float(is_empty.mean())


def precision_recall_curve(query_codes, db_codes, query_labels, db_labels, bits=None):
    """Precision and recall of hash lookup at every Hamming radius ``r = 0 .. bits``.

    Returns
    -------
    radius : ndarray of int64, shape (bits + 1,)
    precision : ndarray of float64
        Mean over queries of (relevant within r) / (retrieved within r); a query
        retrieving nothing scores 0, as in :func:`precision_within_radius`.
    recall : ndarray of float64
        Mean over queries of (relevant within r) / (all relevant); 0 for a query
        without relevant items.
    empty_fraction : ndarray of float64
        Fraction of queries that retrieve nothing within r.
    """
    st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits)
    return _pr_curve(st)


def _pr_curve(st):
    retrieved = np.cumsum(st.n_d, axis=1)
    relevant = np.cumsum(st.r_d, axis=1)
    prec = _safe_div(relevant, retrieved)
    rec = _safe_div(relevant, st.n_rel[:, None])
    nr = st.n_d.shape[1]
    if st.n_d.shape[0] == 0:
        z = np.zeros(nr)
        return np.arange(nr), z, z.copy(), z.copy()
    return np.arange(nr), prec.mean(axis=0), rec.mean(axis=0), (retrieved == 0).mean(axis=0)


class Evaluation:
    """The metrics of the evaluate stage for a database of ``n`` items: the cutoffs its
    index-order pass needs, and every score from the :class:`RankingStats` of the ranking.

    One evaluator for every path: :func:`evaluate_codes` (one machine) and
    :meth:`vdsh_numba.search.distributed.ShardedHammingIndex.evaluate` (shards on a Dask cluster,
    merged by :func:`merge_ranking_stats`) both return :meth:`scores`, so the keys of
    ``reports/eval/*.json`` do not depend on ``evaluate.scheduler``.

    Parameters
    ----------
    n : int
        Database size (cutoffs larger than it are clipped to it).
    radius : int, default 2
        Hamming radius of the hash-lookup precision and recall.
    topk : int, optional
        Also mAP@topk (ties by index, and tie-aware).

    Attributes
    ----------
    cutoffs : ndarray of int64
        Ascending rank cutoffs for :meth:`RankingPasses.rank_sums`.
    ndcg_k : int
        DCG is accumulated up to this rank (NDCG@100).
    """

    #: rank cutoffs of precision@k / recall@k
    KS = (100, 1000)
    #: NDCG@NDCG_K
    NDCG_K = 100

    def __init__(self, n, radius=2, topk=None):
        if topk is not None:
            topk = _check_k(topk, "topk")
        self.radius = _check_radius(radius)
        self.topk = topk
        self.n = int(n)
        ks = [self.n, *self.KS] + ([topk] if topk is not None else [])
        self.cutoffs = np.unique(np.minimum(np.asarray(ks, dtype=np.int64), self.n))
        self.ndcg_k = self.NDCG_K

    def scores(self, st):
        """Every metric from the ranking statistics of the whole database.

        Returns
        -------
        scalars : dict of str -> float
            ``map`` (whole ranking, ties by index), ``map_tie_aware`` (He et al. AP_T),
            ``map_at_{topk}`` and ``map_at_{topk}_tie_aware`` (when ``topk`` is given),
            ``precision_hamming{radius}`` and ``precision_hamming{radius}_empty_fraction``,
            ``recall_hamming{radius}``, ``ndcg_100``, ``ndcg_100_tie_aware``,
            ``precision_100``, ``precision_1000``, ``recall_100``, ``recall_1000``.
            Cutoffs larger than the database are clipped to it.
        pr_curve : list of dict
            ``{"radius": r, "precision": p, "recall": q}`` for ``r = 0 .. bits``.
        """
        if st.n != self.n:
            raise ValueError(f"the ranking statistics cover {st.n} items, this evaluation "
                             f"was planned for {self.n}")
        topk, radius, nn = self.topk, self.radius, st.n

        def clip(k):
            return min(k, nn)

        a_all = st.at(nn)
        out = {
            "map": _safe_div(a_all[:, 0], st.n_rel),
            "map_tie_aware": _ap_tie_aware(st, nn),
        }
        if topk is not None:
            a = st.at(clip(topk))
            out[f"map_at_{topk}"] = _safe_div(a[:, 0], a[:, 1])
            out[f"map_at_{topk}_tie_aware"] = _ap_tie_aware(st, clip(topk))
        k = self.NDCG_K
        out[f"ndcg_{k}"] = _ndcg_index(st, clip(k))
        out[f"ndcg_{k}_tie_aware"] = _ndcg_tie_aware(st, clip(k))
        for k in self.KS:
            out[f"precision_{k}"] = st.at(clip(k))[:, 1] / clip(k)
            out[f"recall_{k}"] = _safe_div(st.at(clip(k))[:, 1], st.n_rel)
        scalars = {key: float(v.mean()) if len(v) else 0.0 for key, v in out.items()}
        p, frac = _radius_summary(st, radius)
        scalars[f"precision_hamming{radius}"] = p
        scalars[f"precision_hamming{radius}_empty_fraction"] = frac
        _, _, rec = _within_radius(st, radius)
        scalars[f"recall_hamming{radius}"] = float(rec.mean()) if len(rec) else 0.0
        r, prec, recl, _ = _pr_curve(st)
        pr = [{"radius": int(ri), "precision": float(pi), "recall": float(qi)}
              for ri, pi, qi in zip(r, prec, recl)]
        return scalars, pr


def evaluate_codes(query_codes, db_codes, query_labels, db_labels, bits, radius=2, topk=None):
    """Every metric of the evaluate stage from one histogram pass and one index-order pass.

    Returns :meth:`Evaluation.scores`: ``(scalars, pr_curve)``, the keys listed there.
    """
    n = db_codes.shape[0] if isinstance(db_codes, np.ndarray) else 0
    ev = Evaluation(n, radius, topk)
    st = ranking_stats(query_codes, db_codes, query_labels, db_labels, bits,
                       cutoffs=ev.cutoffs, ndcg_k=ev.ndcg_k)
    return ev.scores(st)
