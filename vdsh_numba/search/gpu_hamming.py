"""Exact Hamming search on the GPU: the ``numba.cuda`` twin of :mod:`vdsh_numba.search.hamming`.

:class:`vdsh_numba.search.hamming.HammingIndex` with ``backend="cuda"`` calls :func:`search`,
:func:`range_search` and :func:`histogram` here with the same query words and the same
:class:`~vdsh_numba.search.hamming.CodeStore` its CPU kernels stream; results are exactly the CPU
index's: ``(D, I)`` sorted by (distance, index), padding ``I = -1`` / ``D = int32 max``.

Algorithm (two passes over the database, no comparison sort)
-----------------------------------------------------------
The database (``uint64`` words, copied to the device once per :meth:`add`) is cut into
``S`` segments of consecutive rows.

1. ``_hist_kernel``: one block per (group of queries, segment); its threads stride over the
   segment's rows, ``cuda.popc`` the XOR of ``uint64`` words and count every distance in
   per-query histograms in shared memory with ``cuda.atomic.add``: ``counts[q, s, d]``.
2. ``_plan_kernel``: one thread per query finds the counting-sort threshold ``t`` (the
   smallest distance whose cumulative count reaches ``k``; for a range search ``t = radius``)
   and turns the counts, in (distance, segment) order, into write positions, in place.
3. ``_select_kernel``: one thread per (query, segment) sweeps its segment in index order and
   writes every row at distance ``< t`` and, while its slots last, at distance ``t`` to its
   position. Distance-major then segment-major positions with an in-order sweep inside a
   segment give exactly the (distance, index) order: ties by ascending index, the same
   ``need = k - #(d < t)`` rows at distance ``t`` as the CPU index. Threads of a warp hold
   consecutive queries of one segment, so their database reads are broadcasts.

Launch parameters come from :mod:`vdsh_numba.config` (``CUDA_*``), read here on the host.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, int32

from .. import config

__all__ = ["search", "range_search", "histogram", "device_words", "plan_segments"]

_DIST_PAD = np.iinfo(np.int32).max


# --------------------------------------------------------------------------- kernels

@cuda.jit(device=True, inline=True)
def _dist(qw, q, dbw, j):
    d = int32(0)
    for w in range(qw.shape[1]):
        d += int32(cuda.popc(qw[q, w] ^ dbw[j, w]))  # uint64 words: popc is exact
    return d


@cuda.jit
def _hist_kernel(qw, dbw, qpb, seg_rows, counts):
    """``counts[q, s, d]`` = rows of segment ``s`` at distance ``d`` from query ``q``.

    Grid ``(ceil(nq / qpb), S)``; dynamic shared memory ``qpb * B`` int32 (``B = counts.shape[2]``).
    """
    h = cuda.shared.array(0, dtype=int32)
    nq = qw.shape[0]
    n = dbw.shape[0]
    B = counts.shape[2]
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    qa = cuda.blockIdx.x * qpb
    qe = min(qa + qpb, nq)
    s = cuda.blockIdx.y
    for i in range(tid, qpb * B, nt):
        h[i] = 0
    cuda.syncthreads()
    j1 = min((s + 1) * seg_rows, n)
    for j in range(s * seg_rows + tid, j1, nt):
        for q in range(qa, qe):
            cuda.atomic.add(h, (q - qa) * B + _dist(qw, q, dbw, j), 1)
    cuda.syncthreads()
    for i in range(tid, (qe - qa) * B, nt):
        counts[qa + i // B, s, i % B] = h[i]


@cuda.jit
def _plan_kernel(counts, limit, ranged, tq, endq):
    """Per query: threshold ``tq``, number of results ``endq``; counts become write positions.

    Top-k (``ranged`` False, ``limit = k``): ``t`` is the smallest distance whose cumulative
    count reaches ``k`` (the largest distance if none). Range (``limit = radius``): ``t = radius``.
    Positions run over (distance, segment) for distances ``<= t``.
    """
    q = cuda.grid(1)
    if q >= counts.shape[0]:
        return
    S = counts.shape[1]
    B = counts.shape[2]
    if ranged:
        t = min(limit, B - 1)
    else:
        t = B - 1
        cum = 0
        for d in range(B):
            for s in range(S):
                cum += counts[q, s, d]
            if cum >= limit:
                t = d
                break
    pos = 0
    for d in range(t + 1):
        for s in range(S):
            c = counts[q, s, d]
            counts[q, s, d] = pos
            pos += c
    tq[q] = t
    endq[q] = pos if ranged else min(pos, limit)


@cuda.jit
def _select_kernel(qw, dbw, seg_rows, tq, endq, start, pos, D, I):
    """Thread ``(q, s)``: write segment ``s``'s rows within ``tq[q]`` at ``start[q] + pos[q, s, d]``."""
    q, s = cuda.grid(2)
    nq = qw.shape[0]
    n = dbw.shape[0]
    if q >= nq or s >= pos.shape[1]:
        return
    t = tq[q]
    end = endq[q]
    st = start[q]
    for j in range(s * seg_rows, min((s + 1) * seg_rows, n)):
        d = _dist(qw, q, dbw, j)
        if d <= t:
            p = pos[q, s, d]
            if p < end:
                D[st + p] = d
                I[st + p] = j
                pos[q, s, d] = p + 1


#: Every ``@cuda.jit`` kernel of this module (the PTX test compiles each of them).
KERNELS = ("_hist_kernel", "_plan_kernel", "_select_kernel")


# --------------------------------------------------------------------------- host side

def device_words(store):
    """The store's database as one device ``uint64 (ntotal, W)`` array, cached on the store.

    Copied once after every :meth:`~vdsh_numba.search.hamming.CodeStore.add`; an ``np.memmap`` goes
    up chunk by chunk (``config.CHUNK_ROWS`` rows), never whole into host memory.
    """
    key = (len(store.blocks), store.ntotal)
    cached = store.__dict__.get("_gpu_words")
    if cached is not None and cached[0] == key:
        return cached[1]
    dev = cuda.device_array((max(store.ntotal, 1), store.W), dtype=np.uint64)
    for base, words in store.chunks(config.CHUNK_ROWS):
        dev[base:base + words.shape[0]].copy_to_device(np.ascontiguousarray(words))
    dev = dev[:store.ntotal]
    store._gpu_words = (key, dev)
    return dev


def plan_segments(nq: int, n: int):
    """``(S, seg_rows)``: enough segments for about ``CUDA_HAMMING_TARGET_THREADS`` (query,
    segment) threads, each segment at least ``CUDA_HAMMING_MIN_SEGMENT_ROWS`` rows."""
    want = -(-config.CUDA_HAMMING_TARGET_THREADS // max(nq, 1))
    most = -(-n // max(1, config.CUDA_HAMMING_MIN_SEGMENT_ROWS))
    S = max(1, min(want, most))
    seg_rows = -(-n // S)
    return -(-n // seg_rows), seg_rows


def _batches(nq, S, B):
    """Query batches whose ``(nq, S, B)`` int32 counters fit ``CUDA_HAMMING_COUNTER_BYTES``."""
    per_q = S * B * 4
    step = max(1, min(nq, config.CUDA_HAMMING_COUNTER_BYTES // per_q))
    return [(a, min(a + step, nq)) for a in range(0, nq, step)]


def _counts(qd, dbw, S, seg_rows, B):
    """Launch the histogram kernel for the device queries ``qd``: ``(nq, S, B)`` int32 counts."""
    nq = qd.shape[0]
    qpb = max(1, config.CUDA_HAMMING_QUERIES_PER_BLOCK)
    counts = cuda.device_array((nq, S, B), dtype=np.int32)
    grid = (-(-nq // qpb), S)
    _hist_kernel[grid, config.CUDA_THREADS_PER_BLOCK, 0, qpb * B * 4](qd, dbw, qpb, seg_rows, counts)
    return counts


def _plan(counts, limit, ranged):
    """Launch the plan kernel: device ``(tq int32, endq int64)``; ``counts`` become positions."""
    nq = counts.shape[0]
    tpb = config.CUDA_THREADS_PER_BLOCK
    tq = cuda.device_array(nq, dtype=np.int32)
    endq = cuda.device_array(nq, dtype=np.int64)
    _plan_kernel[-(-nq // tpb), tpb](counts, limit, ranged, tq, endq)
    return tq, endq


def _select(qd, dbw, seg_rows, tq, endq, start, pos, D, I):
    """Launch the selection kernel: one thread per (query, segment), queries along x."""
    tpb = config.CUDA_THREADS_PER_BLOCK
    grid = (-(-qd.shape[0] // tpb), pos.shape[1])
    _select_kernel[grid, (tpb, 1)](qd, dbw, seg_rows, tq, endq, start, pos, D, I)


def _check_rows(n):
    if n >= 2**31 - 1:
        raise ValueError(f"backend='cuda' searches at most 2**31 - 2 database codes, the index holds {n}")


def search(qw, store, k: int):
    """Top-``k`` of every query (``qw`` host ``uint64 (nq, W)``): ``(D int32, I int64)`` like the CPU index."""
    nq, W = qw.shape
    D = np.full((nq, k), _DIST_PAD, dtype=np.int32)
    I = np.full((nq, k), -1, dtype=np.int64)
    n = store.ntotal
    if nq == 0 or n == 0:
        return D, I
    _check_rows(n)
    dbw = device_words(store)
    B = 64 * W + 1
    S, seg_rows = plan_segments(nq, n)
    for a, b in _batches(nq, S, B):
        qd = cuda.to_device(np.ascontiguousarray(qw[a:b]))
        counts = _counts(qd, dbw, S, seg_rows, B)
        start = cuda.to_device(np.arange(b - a, dtype=np.int64) * k)
        Dd = cuda.to_device(D[a:b].reshape(-1))
        Id = cuda.to_device(I[a:b].reshape(-1))
        tq, endq = _plan(counts, k, False)
        _select(qd, dbw, seg_rows, tq, endq, start, counts, Dd, Id)
        D[a:b] = Dd.copy_to_host().reshape(b - a, k)
        I[a:b] = Id.copy_to_host().reshape(b - a, k)
    return D, I


def range_search(qw, store, radius: int):
    """Every code within ``radius`` (inclusive): CSR ``(lims, D, I)`` sorted by (distance, index)."""
    nq, W = qw.shape
    n = store.ntotal
    if nq == 0 or n == 0:
        return np.zeros(nq + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
    _check_rows(n)
    dbw = device_words(store)
    B = 64 * W + 1
    S, seg_rows = plan_segments(nq, n)
    sizes, Ds, Is = [], [], []
    for a, b in _batches(nq, S, B):
        qd = cuda.to_device(np.ascontiguousarray(qw[a:b]))
        counts = _counts(qd, dbw, S, seg_rows, B)
        tq, endq = _plan(counts, radius, True)
        cnt = endq.copy_to_host()
        lims = np.zeros(b - a + 1, np.int64)
        np.cumsum(cnt, out=lims[1:])
        total = int(lims[-1])
        Dd = cuda.device_array(max(total, 1), dtype=np.int32)
        Id = cuda.device_array(max(total, 1), dtype=np.int64)
        if total:
            _select(qd, dbw, seg_rows, tq, endq, cuda.to_device(lims[:-1]), counts, Dd, Id)
        sizes.append(cnt)
        Ds.append(Dd.copy_to_host()[:total])
        Is.append(Id.copy_to_host()[:total])
    lims = np.zeros(nq + 1, np.int64)
    np.cumsum(np.concatenate(sizes), out=lims[1:])
    return lims, np.concatenate(Ds), np.concatenate(Is)


def histogram(qw, store):
    """Database codes at each distance ``0 .. 64 W``: int64 ``(nq, 64 W + 1)``."""
    nq, W = qw.shape
    B = 64 * W + 1
    out = np.zeros((nq, B), dtype=np.int64)
    n = store.ntotal
    if nq == 0 or n == 0:
        return out
    _check_rows(n)
    dbw = device_words(store)
    S, seg_rows = plan_segments(nq, n)
    for a, b in _batches(nq, S, B):
        counts = _counts(cuda.to_device(np.ascontiguousarray(qw[a:b])), dbw, S, seg_rows, B)
        out[a:b] = counts.copy_to_host().sum(axis=1, dtype=np.int64)
    return out
