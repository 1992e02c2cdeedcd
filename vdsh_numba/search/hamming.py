"""Exact Hamming search over packed binary codes (CPU kernels).

Codes follow :mod:`vdsh_numba.codes`: ``uint8`` arrays of shape
``(n, ceil(bits / 8))``, bit ``j`` in byte ``j // 8`` at ``1 << (7 - j % 8)``, unused
low bits of the last byte zero. Internally each code is zero-padded to whole
``uint64`` words; the popcount of an XOR does not depend on the byte order inside a
word, so the distances are exactly those of the packed bytes.

Kernels are module-level ``@njit`` functions taking a few arrays (a later "cuda"
backend adds same-signature twins); launch parameters live in
:mod:`vdsh_numba.config` and are passed in by the host code.

Algorithms
----------
* Popcount: LLVM's ``ctpop`` on ``uint64`` (``vpopcntq`` where the CPU has it).
* Top-k, one sweep with a bound that only tightens. An ``np.memmap`` database is
  streamed in chunks of ``config.CHUNK_ROWS`` rows (an in-memory one goes to the
  kernel whole). ``prange`` runs over query blocks; each thread sweeps the rows one
  tile (``config.TILE_ROWS`` 64-bit words) at a time for all its queries, so a tile is
  read from cache by every query of the block. Per query and tile, ``SUB_ROWS`` = 64
  rows at a time: a fixed-length popcount min-reduction (vectorised, no stores: the
  cost of a plain popcount loop) decides whether any row of the sub-block can enter;
  most sub-blocks stop there. Otherwise their distances go to a 64-entry buffer, one
  64-lane compare gives a bit mask of the rows below the bound, and each set bit is a
  candidate appended to the query's buffer (in index order) with its distance counted
  in a per-query histogram. The bound ``t`` is the counting-sort bound: the smallest
  distance whose cumulative count of buffered candidates reaches ``k``; a later row
  at distance ``>= t`` cannot enter (``k`` rows with smaller indices beat it). A full
  buffer (``2k + 64``; with ``k >= n`` the output arrays themselves) is compacted to
  ``k``; at the end one stable counting sort per query over the ``bits + 1``
  distances gives the exact (distance, index) order. No comparison sort anywhere.
* Code widths: one to four 64-bit words (up to 256 bits; odd widths like 12 or 48 bits
  are one zero-padded word) have their own spelled-out distance, and each width its
  own vectorised sub-block loops (multi-word tiles are copied word-major). Wider codes
  loop over their words inside the same sweep: exact, not vectorised.
* Vector primitives are generic LLVM IR through numba intrinsics (``ctpop``, ``cttz``,
  a ``<64 x i64>`` unsigned compare bitcast to ``i64``): AVX-512 instructions here,
  legalised to whatever another target has.
* Indices in hot loops are cast to unsigned, which removes numba's negative-index
  wraparound test; with it LLVM does not vectorise the popcount loops (5x slower).
* Range search: the same sweep with the fixed bound ``radius + 1``, twice (count, then
  fill in index order), and a counting sort of each query's hits by distance.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic
from llvmlite import ir

from .. import config
from ..codes import code_bytes

__all__ = ["HammingIndex", "popcount64", "check_codes", "CodeStore", "as_words",
           "n_blocks", "DIST_PAD"]

#: Distance used to pad results when fewer than k items exist (faiss's convention).
DIST_PAD = np.iinfo(np.int32).max


@intrinsic
def popcount64(typingctx, x):
    """Number of set bits of a ``uint64`` through LLVM's ``ctpop`` intrinsic."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


def _splat64(builder, x):
    """``<64 x i64>`` with every lane ``x``."""
    vty = ir.VectorType(x.type, 64)
    e = builder.insert_element(ir.Constant(vty, None), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(e, ir.Constant(vty, None),
                                  ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))


@intrinsic
def trailing_zeros64(typingctx, x):
    """Index of the lowest set bit of a non-zero ``uint64`` (LLVM's ``cttz``: ``tzcnt``)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.uint64(types.uint64), codegen


@intrinsic
def below_mask64(typingctx, dist, t):
    """Bit ``i`` set where ``dist[i] < t``, ``i < 64`` (``dist``: C-contiguous ``uint64``
    array of at least 64 entries, ``t``: ``uint64``), branch-free.

    Generic LLVM IR: one unsigned compare of a 64-lane vector whose lane mask is
    bitcast to an integer (8 ``vpcmpuq`` into mask registers on AVX-512; legalised to
    whatever the target has elsewhere).
    """
    if not (dist == types.Array(types.uint64, 1, "C") and t == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        vty = ir.VectorType(ir.IntType(64), 64)
        a = context.make_array(signature.args[0])(context, builder, args[0])
        v = builder.load(builder.bitcast(a.data, vty.as_pointer()), align=8)
        return builder.bitcast(builder.icmp_unsigned("<", v, _splat64(builder, args[1])),
                               ir.IntType(64))

    return types.uint64(dist, t), codegen


@intrinsic
def xor_popcount_below_mask64(typingctx, words, row, x, t):
    """Bit ``i`` set where ``popcount(words[row + i, 0] ^ x) < t``, ``i < 64``.

    ``words``: C-contiguous ``uint64 (n, 1)`` (single-word codes), ``row + 64 <= n``;
    ``x``, ``t``: ``uint64``. One 64-lane vector expression (xor, ``ctpop``, unsigned
    compare, lane mask bitcast to ``i64``): the distances are never stored.
    """
    if not (words == types.Array(types.uint64, 2, "C") and isinstance(row, types.Integer)
            and x == types.uint64 and t == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        vty = ir.VectorType(ir.IntType(64), 64)
        a = context.make_array(signature.args[0])(context, builder, args[0])
        r = context.cast(builder, args[1], signature.args[1], types.intp)
        v = builder.load(builder.bitcast(builder.gep(a.data, [r]), vty.as_pointer()), align=8)
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]),
                                               "llvm.ctpop.v64i64")
        d = builder.call(ctpop, [builder.xor(v, _splat64(builder, args[2]))])
        return builder.bitcast(builder.icmp_unsigned("<", d, _splat64(builder, args[3])),
                               ir.IntType(64))

    return types.uint64(words, row, x, t), codegen


@njit(inline="always")
def _distance(qw, q, dbw, j):
    d = np.uint64(0)
    for w in range(qw.shape[1]):
        d += popcount64(qw[q, w] ^ dbw[np.uint64(j), w])
    return d


# --------------------------------------------------------------------------- validation

def _check_bits(bits):
    return code_bytes(bits)  # raises ValueError with the expectation spelled out


def check_codes(codes, bits: int, name: str = "codes") -> np.ndarray:
    """Validate packed codes at the public boundary; never casts.

    Raises ``TypeError`` for a non-array or a dtype other than ``uint8`` and
    ``ValueError`` for a wrong shape or a non-C-contiguous array. Returns ``codes``.
    """
    nb = _check_bits(bits)
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"{name} must be a numpy uint8 array of shape (n, {nb}), "
                        f"got {type(codes).__name__}")
    if codes.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (packed codes, see "
                        f"vdsh_numba.pack_codes), got {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] != nb:
        raise ValueError(f"{name} must have shape (n, {nb}) for bits={bits}, got {codes.shape}")
    if not codes.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return codes


def _check_padding(codes, bits, name):
    pad = (-bits) % 8
    if pad and codes.shape[0] and np.any(codes[:, -1] & np.uint8((1 << pad) - 1)):
        raise ValueError(f"{name} has non-zero padding bits: for bits={bits} the lowest "
                         f"{pad} bits of the last byte must be 0")


def as_words(codes, bits: int, name: str = "codes") -> np.ndarray:
    """Copy checked packed codes into zero-padded ``uint64`` words ``(n, ceil(bits/64))``."""
    _check_padding(codes, bits, name)
    n, nb = codes.shape
    W = (nb + 7) // 8
    if nb == 8 * W:
        return np.ascontiguousarray(codes).view(np.uint64).copy()
    buf = np.zeros((n, 8 * W), dtype=np.uint8)
    buf[:, :nb] = codes
    return buf.view(np.uint64)


def n_blocks(nq: int) -> int:
    """Query blocks per kernel call (each block owns one set of buffers)."""
    return max(1, min(nq, numba.get_num_threads() * config.BLOCKS_PER_THREAD))


class CodeStore:
    """Database codes added in blocks, streamed as ``uint64`` word chunks.

    In-memory arrays are converted to words once, at :meth:`add`; an ``np.memmap``
    is kept as it is and converted chunk by chunk while streaming, so it never has
    to fit in memory.
    """

    def __init__(self, bits: int):
        self.bits = bits
        self.nb = _check_bits(bits)
        self.W = (self.nb + 7) // 8
        self.blocks = []  # ("words", ndarray) or ("memmap", memmap)
        self.ntotal = 0

    def add(self, codes, name="codes"):
        check_codes(codes, self.bits, name)
        if codes.shape[0] == 0:
            return
        if isinstance(codes, np.memmap):
            self.blocks.append(("memmap", codes))
        else:
            self.blocks.append(("words", as_words(codes, self.bits, name)))
        self.ntotal += codes.shape[0]

    def chunks(self, chunk_rows: int):
        """Yield ``(base, words)``: the global index of the first row and a word chunk.

        In-memory blocks come whole (they are already words: slicing them would only
        add kernel launches); memmaps come ``chunk_rows`` rows at a time.
        """
        base = 0
        for kind, arr in self.blocks:
            step = arr.shape[0] if kind == "words" and not config.SPLIT_MEMORY_BLOCKS else chunk_rows
            for s in range(0, arr.shape[0], step):
                e = min(s + step, arr.shape[0])
                if kind == "words":
                    yield base + s, arr[s:e]
                else:
                    yield base + s, as_words(np.asarray(arr[s:e]), self.bits, "memmap codes")
            base += arr.shape[0]


# --------------------------------------------------------------------------- kernels

#: Rows of a sub-block: distances of a whole sub-block are computed by a fixed-length loop
#: that LLVM unrolls and vectorises (a min-reduction, no stores); only a sub-block whose
#: minimum passes the threshold is scanned row by row. A structural constant of the
#: kernels (not a tunable): 64 rows are 8 AVX-512 vectors of 64-bit codes.
SUB_ROWS = 64


@njit(inline="always")
def _load_tile(dbw, t0, t1, tb):
    """Copy the rows ``t0 .. t1`` of a multi-word database into ``tb`` word-major
    (``tb[w, i]`` = word ``w`` of row ``t0 + i``), so that the sub-block loops read
    each word contiguously. Single-word databases are read in place."""
    W = dbw.shape[1]
    if W > 1:
        for i in range(t1 - t0):
            for w in range(W):
                tb[np.uint64(w), np.uint64(i)] = dbw[np.uint64(t0 + i), np.uint64(w)]


@njit(inline="always")
def _row_dist(qw, q, dbw, t0, tb, i, W):
    """Distance of query ``q`` to row ``i`` of the tile starting at database row ``t0``.

    ``W`` (the words per code) is passed by callers that have already branched on it:
    one to four words are spelled out, so that a loop over ``i`` for one ``W``
    vectorises. Wider codes loop over their words: correct, not vectorised (the
    measured second path).
    """
    if W == 1:
        return popcount64(dbw[np.uint64(t0 + i), 0] ^ qw[q, 0])
    u = np.uint64(i)
    if W == 2:
        return popcount64(tb[0, u] ^ qw[q, 0]) + popcount64(tb[1, u] ^ qw[q, 1])
    if W == 3:
        return (popcount64(tb[0, u] ^ qw[q, 0]) + popcount64(tb[1, u] ^ qw[q, 1])
                + popcount64(tb[2, u] ^ qw[q, 2]))
    if W == 4:
        return (popcount64(tb[0, u] ^ qw[q, 0]) + popcount64(tb[1, u] ^ qw[q, 1])
                + popcount64(tb[2, u] ^ qw[q, 2]) + popcount64(tb[3, u] ^ qw[q, 3]))
    d = np.uint64(0)
    for w in range(qw.shape[1]):
        d += popcount64(tb[np.uint64(w), u] ^ qw[q, w])
    return d


@njit(inline="always")
def _sub_min_w(qw, q, dbw, t0, s, tb, W):
    mn = np.uint64(64 * qw.shape[1])
    for i in range(SUB_ROWS):
        mn = min(mn, _row_dist(qw, q, dbw, t0, tb, s + i, W))
    return mn


@njit(inline="always")
def _sub_min(qw, q, dbw, t0, s, tb):
    """Smallest distance of query ``q`` to the ``SUB_ROWS`` tile rows ``s ..``: a
    fixed-length min-reduction without stores, which LLVM vectorises (one loop per
    spelled-out width: the branch on the width sits outside the loops)."""
    W = qw.shape[1]
    if W == 1:
        return _sub_min_w(qw, q, dbw, t0, s, tb, 1)
    if W == 2:
        return _sub_min_w(qw, q, dbw, t0, s, tb, 2)
    if W == 3:
        return _sub_min_w(qw, q, dbw, t0, s, tb, 3)
    if W == 4:
        return _sub_min_w(qw, q, dbw, t0, s, tb, 4)
    return _sub_min_w(qw, q, dbw, t0, s, tb, 0)


@njit(inline="always")
def _sub_fill_w(qw, q, dbw, t0, s, tb, acc, W):
    for i in range(SUB_ROWS):
        acc[i] = _row_dist(qw, q, dbw, t0, tb, s + i, W)


@njit(inline="always")
def _sub_fill(qw, q, dbw, t0, s, tb, acc):
    """The distances of the sub-block ``s ..`` into ``acc`` (after :func:`_sub_min` passed);
    the same per-width loops."""
    W = qw.shape[1]
    if W == 1:
        _sub_fill_w(qw, q, dbw, t0, s, tb, acc, 1)
    elif W == 2:
        _sub_fill_w(qw, q, dbw, t0, s, tb, acc, 2)
    elif W == 3:
        _sub_fill_w(qw, q, dbw, t0, s, tb, acc, 3)
    elif W == 4:
        _sub_fill_w(qw, q, dbw, t0, s, tb, acc, 4)
    else:
        _sub_fill_w(qw, q, dbw, t0, s, tb, acc, 0)


@njit(inline="always")
def _push(cd, ci, hist, q, d, j, c, t, below, k):
    """Append candidate ``(d, j)`` (``d < t``) to query ``q``'s buffer and tighten ``t``.

    ``t`` is the counting-sort bound: the smallest distance whose cumulative count of
    buffered candidates reaches ``k`` (``64 W + 1`` while fewer than ``k`` are buffered),
    ``below`` the number of buffered candidates at distance ``< t``. A later row at
    distance ``>= t`` cannot enter the top-k: ``k`` rows with smaller indices beat it.
    Returns the new ``(c, t, below)``.
    """
    cd[q, np.uint64(c)] = np.int32(d)
    ci[q, np.uint64(c)] = j
    hist[q, np.uint64(d)] += 1
    below += 1
    while below >= k:
        t -= 1
        below -= hist[q, np.uint64(t)]
    return c + 1, t, below


@njit(cache=True)
def _compact(cd, ci, hist, q, c, t, below, k):
    """Drop query ``q``'s candidates that can no longer enter its top-k (order kept):
    every one at distance ``> t`` and, at distance ``t``, all but the first ``k - below``.
    Branch-free; returns the new count. Called between sub-blocks, never inside the
    candidate loop (there it made that loop 3x slower, even when never executed).
    """
    need = k - below
    n = 0
    for i in range(c):
        d = cd[q, i]
        keep = (d < t) | ((d == t) & (need > 0))
        cd[q, n] = d
        ci[q, n] = ci[q, i]
        n += keep
        need -= (d == t) & keep
    for d in range(t, hist.shape[1]):
        hist[q, d] = 0
    if t < hist.shape[1]:
        hist[q, t] = n - below
    return n


@njit(parallel=True, cache=True)
def _topk_chunk(qw, dbw, base, cd, ci, C, hist, state, k, tile, nblocks):
    """Sweep database rows ``dbw`` (global indices ``base ..``) into every query's candidates.

    Per query ``q``: ``cd[q]``/``ci[q]`` buffer candidates (distance, index) in index
    order, ``hist[q]`` counts them by distance, ``state[q] = (count, t, below)`` (see
    :func:`_push`). A row is a candidate only if its distance is below the query's
    bound ``t``, which only tightens; a buffer (``C >= k + SUB_ROWS`` entries, or at least
    every row) without room for a whole sub-block is compacted to ``k``.
    Each thread owns a block of queries and sweeps the rows ``tile`` at a time for all
    of them (the tile stays in cache), ``SUB_ROWS`` rows at a time per query: the bit
    mask of the rows below ``t`` in one vector expression (single-word codes) or, for
    wider codes, a vectorised minimum and the mask only when it is below ``t``; each
    set bit is a candidate.
    """
    nq, W = qw.shape
    m = dbw.shape[0]
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        tl = max(1, min(tile, m))
        tb = np.empty((W, tl if W > 1 else 0), np.uint64)
        acc = np.empty(SUB_ROWS, np.uint64)
        for t0 in range(0, m, tl):
            t1 = min(t0 + tl, m)
            _load_tile(dbw, t0, t1, tb)
            full = (t1 - t0) // SUB_ROWS * SUB_ROWS
            for q in range(q0, q1):
                c = state[q, 0]
                t = state[q, 1]
                below = state[q, 2]
                if W == 1:                  # one expression per sub-block: its bit mask
                    x = qw[q, 0]
                    for s in range(0, full, SUB_ROWS):
                        mk = xor_popcount_below_mask64(dbw, t0 + s, x, np.uint64(t))
                        if mk and c > C - SUB_ROWS:      # room for a whole sub-block
                            c = _compact(cd, ci, hist, q, c, t, below, k)
                        while mk:
                            i = np.int64(trailing_zeros64(mk))
                            mk &= mk - np.uint64(1)
                            d = popcount64(dbw[np.uint64(t0 + s + i), 0] ^ x)
                            if d < np.uint64(t):         # t may have tightened
                                c, t, below = _push(cd, ci, hist, q, d, base + t0 + s + i,
                                                    c, t, below, k)
                else:                       # min first; distances kept for the mask
                    for s in range(0, full, SUB_ROWS):
                        if _sub_min(qw, q, dbw, t0, s, tb) < np.uint64(t):
                            _sub_fill(qw, q, dbw, t0, s, tb, acc)
                            mk = below_mask64(acc, np.uint64(t))
                            if c > C - SUB_ROWS:
                                c = _compact(cd, ci, hist, q, c, t, below, k)
                            while mk:
                                i = np.int64(trailing_zeros64(mk))
                                mk &= mk - np.uint64(1)
                                if acc[i] < np.uint64(t):
                                    c, t, below = _push(cd, ci, hist, q, acc[i], base + t0 + s + i,
                                                        c, t, below, k)
                if full < t1 - t0 and c > C - SUB_ROWS:
                    c = _compact(cd, ci, hist, q, c, t, below, k)
                for j in range(full, t1 - t0):       # the tile's last rows, one by one
                    d = _row_dist(qw, q, dbw, t0, tb, j, W)
                    if d < np.uint64(t):
                        c, t, below = _push(cd, ci, hist, q, d, base + t0 + j, c, t, below, k)
                state[q, 0] = c
                state[q, 1] = t
                state[q, 2] = below


@njit(parallel=True, cache=True)
def _topk_finish(cd, ci, hist, state, D, I, nblocks):
    """Counting-sort every query's candidates into ``D``/``I`` and pad the rest of each row.

    Candidates are in index order, so a stable counting sort by distance gives the
    (distance, index) order. The write positions come from ``hist`` (exact below the
    bound ``t``; at ``t`` only the first ``k - below`` are kept); the scatter is
    branch-free, stale candidates (distance above ``t``) going to a spare slot.
    ``cd``/``ci`` may be ``D``/``I`` themselves.
    """
    nq, k = D.shape
    B = hist.shape[1]
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        width = 0
        for q in range(q0, q1):
            width = max(width, state[q, 0])
        td = np.empty(width + 1, np.int32)
        ti = np.empty(width + 1, np.int64)
        pos = np.empty(B + 1, np.int64)
        for q in range(q0, q1):
            c = state[q, 0]
            t = state[q, 1]
            acc = 0
            for d in range(min(t + 1, B)):
                pos[d] = acc
                acc += hist[q, d]
            nout = min(acc, k)
            if nout == c:                # every candidate stays (k >= n): plain scatter
                for i in range(c):
                    d = cd[q, i]
                    p = pos[d]
                    td[p] = d
                    ti[p] = ci[q, i]
                    pos[d] = p + 1
            for i in range(c if nout < c else 0):
                d = cd[q, i]
                dd = min(d, t)
                p = pos[dd]
                keep = (d < t) | ((d == t) & (p < nout))
                w = p if keep else width
                td[w] = d
                ti[w] = ci[q, i]
                pos[dd] = p + keep
            for i in range(nout):
                D[q, i] = td[i]
                I[q, i] = ti[i]
            for i in range(nout, k):            # faiss's padding when fewer than k
                D[q, i] = DIST_PAD
                I[q, i] = -1


@njit(parallel=True, cache=True)
def _histogram_chunk(qw, dbw, counts):
    """``counts[q, d] +=`` number of chunk rows at distance ``d`` from query ``q``."""
    nq, W = qw.shape
    for q in prange(nq):
        if W == 1:
            x = qw[q, 0]
            for j in range(dbw.shape[0]):
                counts[q, np.uint32(popcount64(dbw[np.uint64(j), 0] ^ x))] += 1
        else:
            for j in range(dbw.shape[0]):
                counts[q, np.uint32(_distance(qw, q, dbw, j))] += 1


@njit(parallel=True, cache=True)
def _range_chunk(qw, dbw, radius, base, cursor, D, I, tile, nblocks):
    """Count (``D`` empty) or write (``D``, ``I`` sized) the chunk rows within ``radius``.

    ``cursor[q]`` is the next write position of query ``q`` (or its running count).
    Same sweep as :func:`_topk_chunk` with the fixed bound ``radius + 1``: per sub-block
    a 64-bit mask of the rows within the radius (single-word codes: one vector
    expression; wider codes: a vectorised minimum first). Writes are in index order.
    """
    nq, W = qw.shape
    m = dbw.shape[0]
    fill = D.shape[0] > 0
    t = np.uint64(min(radius + 1, 64 * W + 1))
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        tl = max(1, min(tile, m))
        tb = np.empty((W, tl if W > 1 else 0), np.uint64)
        acc = np.empty(SUB_ROWS, np.uint64)
        for t0 in range(0, m, tl):
            t1 = min(t0 + tl, m)
            _load_tile(dbw, t0, t1, tb)
            full = (t1 - t0) // SUB_ROWS * SUB_ROWS
            for q in range(q0, q1):
                p = cursor[q]
                if W == 1:                  # the sub-block's bit mask in one expression
                    x = qw[q, 0]
                    for s in range(0, full, SUB_ROWS):
                        mk = xor_popcount_below_mask64(dbw, t0 + s, x, t)
                        if fill:
                            while mk:
                                i = np.int64(trailing_zeros64(mk))
                                mk &= mk - np.uint64(1)
                                D[p] = np.int32(popcount64(dbw[np.uint64(t0 + s + i), 0] ^ x))
                                I[p] = base + t0 + s + i
                                p += 1
                        else:
                            p += popcount64(mk)
                else:
                    for s in range(0, full, SUB_ROWS):
                        if _sub_min(qw, q, dbw, t0, s, tb) < t:
                            _sub_fill(qw, q, dbw, t0, s, tb, acc)
                            mk = below_mask64(acc, t)
                            if fill:
                                while mk:
                                    i = np.int64(trailing_zeros64(mk))
                                    mk &= mk - np.uint64(1)
                                    D[p] = np.int32(acc[i])
                                    I[p] = base + t0 + s + i
                                    p += 1
                            else:
                                p += popcount64(mk)
                for j in range(full, t1 - t0):       # the tile's last rows, one by one
                    d = _row_dist(qw, q, dbw, t0, tb, j, qw.shape[1])
                    if d < t:
                        if fill:
                            D[p] = np.int32(d)
                            I[p] = base + t0 + j
                        p += 1
                cursor[q] = p


@njit(parallel=True, cache=True)
def _csr_sort_by_distance(lims, D, I, nbins, nblocks):
    """Stable counting sort of every CSR segment by distance (index order kept in ties)."""
    nq = lims.shape[0] - 1
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        width = 0
        for q in range(q0, q1):
            width = max(width, lims[q + 1] - lims[q])
        td = np.empty(width, np.int32)
        ti = np.empty(width, np.int64)
        pos = np.empty(nbins, np.int64)
        for q in range(q0, q1):
            s = lims[q]
            e = lims[q + 1]
            pos[:] = 0
            for i in range(s, e):
                pos[D[i]] += 1
            acc = 0
            for d in range(nbins):
                h = pos[d]
                pos[d] = acc
                acc += h
            for i in range(s, e):
                p = pos[D[i]]
                pos[D[i]] = p + 1
                td[p] = D[i]
                ti[p] = I[i]
            for i in range(e - s):
                D[s + i] = td[i]
                I[s + i] = ti[i]


# --------------------------------------------------------------------------- the index

class HammingIndex:
    """Exact Hamming-distance index over packed binary codes (faiss ``IndexBinaryFlat``'s API).

    Parameters
    ----------
    bits : int
        Code length, any ``bits >= 1``. Codes are ``uint8`` arrays of shape
        ``(n, ceil(bits / 8))`` in the bit order of :mod:`vdsh_numba.codes`.
    backend : {"cpu", "cuda"}
        Kernel backend. ``"cuda"`` runs :mod:`vdsh_numba.search.gpu_hamming` (same results) and
        raises ``RuntimeError`` naming what is missing where no GPU is usable.

    Attributes
    ----------
    ntotal : int
        Number of database codes added so far.

    Notes
    -----
    ``add`` copies an in-memory array into ``uint64`` words (like faiss) but keeps an
    ``np.memmap`` as it is; searches stream a memmap in chunks of
    :data:`vdsh_numba.config.CHUNK_ROWS` rows, so the extra memory of a search is
    O(nq * k + chunk), never O(nq * n) (candidate buffers of at most
    ``2k + 64 + min(2k, config.TOPK_BUFFER_EXTRA)`` entries of 12 bytes per query; none
    when ``k >= ntotal``: the results are the buffers). Top-k and rankings use a counting sort over
    the ``bits + 1`` possible distances (O(n) per query); ties are broken by ascending
    database index, so ``search`` returns exactly faiss's distances and, once ties are
    resolved by index, the same indices.
    """

    def __init__(self, bits: int, backend: str = "cpu"):
        _check_bits(bits)
        from ..backend import check_backend
        check_backend(backend)
        self.bits = int(bits)
        self.backend = backend
        self._store = CodeStore(self.bits)

    @property
    def ntotal(self) -> int:
        return self._store.ntotal

    @property
    def code_size(self) -> int:
        """Bytes per packed code, ``ceil(bits / 8)``."""
        return self._store.nb

    def add(self, codes) -> None:
        """Append database codes (``uint8 (n, ceil(bits/8))``, C-contiguous; may be an ``np.memmap``)."""
        self._store.add(codes, "codes")

    def reset(self) -> None:
        """Remove every database code."""
        self._store = CodeStore(self.bits)

    # --- helpers ---------------------------------------------------------------
    def _queries(self, queries):
        check_codes(queries, self.bits, "queries")
        return as_words(np.asarray(queries), self.bits, "queries")

    @staticmethod
    def _check_int(value, name, minimum):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
        return int(value)

    # --- search ----------------------------------------------------------------
    def search(self, queries, k: int):
        """The ``k`` nearest database codes of every query.

        Parameters
        ----------
        queries : ndarray of uint8, shape (nq, ceil(bits / 8))
        k : int >= 1

        Returns
        -------
        D : ndarray of int32, shape (nq, k)
            Hamming distances, ascending.
        I : ndarray of int64, shape (nq, k)
            Database indices; ties broken by ascending index. When the index holds
            fewer than ``k`` codes the rest is padded with ``I = -1`` and
            ``D = np.iinfo(np.int32).max`` (faiss's convention).
        """
        qw = self._queries(queries)
        k = self._check_int(k, "k", 1)
        nq = qw.shape[0]
        n = self.ntotal
        if nq == 0 or n == 0:
            return (np.full((nq, k), DIST_PAD, dtype=np.int32),
                    np.full((nq, k), -1, dtype=np.int64))
        if self.backend == "cuda":
            from . import gpu_hamming
            return gpu_hamming.search(qw, self._store, k)
        D = np.empty((nq, k), dtype=np.int32)         # every entry written by _topk_finish
        I = np.empty((nq, k), dtype=np.int64)
        W = qw.shape[1]
        # candidate buffer per query: >= k + SUB_ROWS (or every row); the extra room
        # makes compactions rare (each costs O(C)), capped to keep memory O(nq * k)
        C = min(n, 2 * k + SUB_ROWS + min(2 * k, config.TOPK_BUFFER_EXTRA))
        if C <= k:                               # k >= n: the results are the buffer
            cd, ci = D, I
        else:
            cd = np.empty((nq, C), dtype=np.int32)
            ci = np.empty((nq, C), dtype=np.int64)
        hist = np.zeros((nq, 64 * W + 1), dtype=np.int64)
        state = np.zeros((nq, 3), dtype=np.int64)    # (count, bound t, count below t)
        state[:, 1] = 64 * W + 1
        nb = n_blocks(nq)
        tile = max(1, config.TILE_ROWS // W)
        for base, words in self._store.chunks(config.CHUNK_ROWS):
            _topk_chunk(qw, words, base, cd, ci, C, hist, state, k, tile, nb)
        _topk_finish(cd, ci, hist, state, D, I, nb)
        return D, I

    def range_search(self, queries, radius: int):
        """Every database code within Hamming distance ``radius`` of each query.

        Returns
        -------
        lims : ndarray of int64, shape (nq + 1,)
            Query ``q``'s results are ``D[lims[q]:lims[q+1]]``, ``I[lims[q]:lims[q+1]]``.
        D : ndarray of int32
            Distances (``<= radius``), ascending within each query.
        I : ndarray of int64
            Database indices, ascending within equal distances.

        Notes
        -----
        Two differences from faiss's ``IndexBinaryFlat.range_search``: the radius is
        inclusive here (``d <= radius``; faiss keeps ``d < radius``), and results are
        sorted by (distance, index), the order :meth:`search` uses (faiss returns
        them in database order).
        """
        qw = self._queries(queries)
        radius = self._check_int(radius, "radius", 0)
        nq = qw.shape[0]
        if self.backend == "cuda":
            from . import gpu_hamming
            return gpu_hamming.range_search(qw, self._store, radius)
        empty_d = np.empty(0, np.int32)
        empty_i = np.empty(0, np.int64)
        counts = np.zeros(nq, dtype=np.int64)
        if nq == 0:
            return np.zeros(1, np.int64), empty_d, empty_i
        nb = n_blocks(nq)
        tile = max(1, config.TILE_ROWS // qw.shape[1])
        for base, words in self._store.chunks(config.CHUNK_ROWS):
            _range_chunk(qw, words, radius, base, counts, empty_d, empty_i, tile, nb)
        lims = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(counts, out=lims[1:])
        D = np.empty(lims[-1], dtype=np.int32)
        I = np.empty(lims[-1], dtype=np.int64)
        if lims[-1] == 0:
            return lims, D, I
        cursor = lims[:-1].copy()
        for base, words in self._store.chunks(config.CHUNK_ROWS):
            _range_chunk(qw, words, radius, base, cursor, D, I, tile, nb)
        _csr_sort_by_distance(lims, D, I, 64 * qw.shape[1] + 1, nb)
        return lims, D, I

    def rank(self, queries, return_distances: bool = False):
        """The full ranking of the database for every query (counting sort).

        Returns
        -------
        I : ndarray of int64, shape (nq, ntotal)
            Database indices sorted by (distance, index).
        D : ndarray of int32, shape (nq, ntotal)
            Only with ``return_distances=True``.

        Notes
        -----
        This materialises ``nq * ntotal`` integers (no float matrix). Metrics do not
        need it: :mod:`vdsh_numba.search.metrics` works from the per-distance histograms
        (see :meth:`histogram`) and one streaming pass in index order.
        """
        if self.ntotal == 0:
            raise ValueError("the index is empty: add codes before rank()")
        D, I = self.search(queries, self.ntotal)
        return (I, D) if return_distances else I

    def histogram(self, queries):
        """Number of database codes at each distance: int64 ``(nq, bits + 1)``."""
        qw = self._queries(queries)
        if self.backend == "cuda":
            from . import gpu_hamming
            counts = gpu_hamming.histogram(qw, self._store)
        else:
            counts = np.zeros((qw.shape[0], 64 * qw.shape[1] + 1), dtype=np.int64)
        if qw.shape[0] and self.backend == "cpu":
            for _, words in self._store.chunks(config.CHUNK_ROWS):
                _histogram_chunk(qw, words, counts)
        return np.ascontiguousarray(counts[:, :self.bits + 1])

    def __repr__(self):
        return f"HammingIndex(bits={self.bits}, backend={self.backend!r}, ntotal={self.ntotal})"
