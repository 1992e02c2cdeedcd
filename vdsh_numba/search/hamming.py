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
* Top-k, one sweep with a bound that only tightens. Each query first gets a starting
  bound from a sample of ``config.TOPK_SAMPLE_ROWS`` rows (:func:`sample_bounds`: the
  distance below which the sample holds the expected share of the top-k plus three
  standard deviations, found by galloping from the previous query's bound), so that
  the sweep appends few rows beyond the final top-k; a query whose estimate held fewer
  than ``k`` rows of the whole database is searched again without it (exactness never
  depends on the estimate). An ``np.memmap`` database is streamed in chunks of
  ``config.CHUNK_ROWS`` rows (an in-memory one goes to the kernel whole). ``prange``
  runs over query blocks; each thread sweeps the rows one tile (``config.TILE_ROWS``
  64-bit words, word-major) at a time for all its queries, so a tile is read from cache
  by every query of the block (an in-memory database of at most
  ``config.TOPK_FUSED_BYTES`` stays in cache whole: it takes the bucket path below).
  Per query and tile,
  ``SUB_ROWS`` = 64 rows at a time, one branch-free vector expression
  (:func:`compress_offsets64`): xor, popcount, compare with the bound, and the tile
  offsets of the rows below it appended as ``uint16`` by two 32-lane register
  compresses (a sub-block without a candidate skips them unless the query's previous
  tile had a candidate per two sub-blocks). A scalar pass then turns the offsets into
  packed keys ``(distance << 40) | index``, the distance recomputed from the tile in
  cache (:func:`_flush`). No histogram in the sweep: a buffer (``2k + 64`` and some
  room; with ``k >= n`` every row) that fills is compacted to ``k`` and the bound
  becomes their k-th smallest distance (a later row at a distance ``>= t`` cannot
  enter: ``k`` rows with smaller indices beat it). At the end the candidates (in index
  order) are collected distance by distance (one vector pass over the keys per
  distance, when few distances are in play; the distances far below the largest from
  a short list of their own) or by a stable counting sort: the exact (distance, index)
  order. No comparison sort.
* Top-k of a database that fits in cache (:func:`_topk_buckets`): one query at a time
  over all the rows, from the same sampled bound, ``config.TOPK_BUCKET_BATCH``
  sub-blocks at a time in three short passes: the sub-blocks' masks and distance bytes
  (:func:`dist8_below_mask64`), the offsets of their set bits (four branch-free
  ``tzcnt``/``blsr`` steps per mask, :func:`_mask_offsets`), and one append per
  candidate to the bucket of its distance. The buckets are the sort (their
  concatenation in distance order is the (distance, index) order) and they make the
  bound exact after every batch: it drops while the buckets below it hold ``k`` rows,
  so only rows that can still enter are appended.
* Code widths: any number of 64-bit words (odd widths like 12 or 48 bits are one
  zero-padded word); the vector expressions loop over the words, with the word count
  a constant for 1, 2 and 4 words (LLVM unrolls), a runtime loop otherwise. Multi-word
  tiles are copied word-major.
* Vector primitives are generic LLVM IR through numba intrinsics (``ctpop`` on
  ``<64 x i64>``, unsigned compares whose lane mask is bitcast to ``i64``,
  ``llvm.experimental.vector.compress``): AVX-512 instructions here, legalised to
  whatever another target has.
* Indices in hot loops are cast to unsigned, which removes numba's negative-index
  wraparound test; with it LLVM does not vectorise the popcount loops (5x slower).
* Range search: the same sweep with the fixed bound ``radius + 1``, twice: count (a
  popcount of each sub-block's mask), then fill in index order (the top-k's offset
  compress and a scalar write pass, branch-free for queries with a hit per two
  sub-blocks or more), and a counting sort of each query's hits by distance.
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
           "n_blocks", "DIST_PAD", "topk_words", "sample_bounds", "words_below_mask64"]

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
def words_below_mask64(typingctx, tiles, col, qw, q, t, nw):
    """Bit ``i`` set where ``sum_w popcount(tiles[w, col + i] ^ qw[q, w]) < t``, ``i < 64``.

    ``tiles``: C-contiguous ``uint64 (W, L)``, database codes word-major (a single-word
    database ``(n, 1)`` reshaped to ``(1, n)`` is one already), ``col + 64 <= L``;
    ``qw``: C-contiguous ``uint64 (nq, W)``; ``t``: ``uint64``; ``nw``: ``W`` (pass a
    constant, e.g. in a branch on ``W``, and LLVM unrolls the word loop). Generic LLVM IR: per word
    one 64-lane vector load, xor with the query word, ``ctpop``, summed over the words;
    one unsigned compare whose lane mask is bitcast to ``i64``. The distances are never
    stored (AVX-512 here: ``vpopcntq`` and ``vpcmpuq`` into mask registers; legalised to
    whatever another target has).
    """
    arr2 = types.Array(types.uint64, 2, "C")
    if not (tiles == arr2 and qw == arr2 and isinstance(col, types.Integer)
            and isinstance(q, types.Integer) and t == types.uint64
            and isinstance(nw, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        st = signature.args
        d = _words_dist_vector(context, builder, st, args, 5)
        nw = context.cast(builder, args[5], st[5], types.intp)
        return builder.bitcast(_below(context, builder, d, args[4], nw), ir.IntType(64))

    return types.uint64(tiles, col, qw, q, t, nw), codegen


@intrinsic
def dist8_below_mask64(typingctx, tiles, col, qw, q, t, nw, d8, pos):
    """:func:`words_below_mask64` that also stores the 64 distances as bytes.

    Returns the mask of :func:`words_below_mask64` (bit ``i``: row ``col + i`` at a
    distance ``< t``) and writes ``d8[pos + i]`` = that row's distance, ``i < 64``
    (one 64-byte store). Codes of at most 3 words only (distances up to 192 fit a
    byte; ``t <= 193``). ``d8``: C-contiguous ``uint8``, ``pos + 64 <= len(d8)``.
    """
    arr2 = types.Array(types.uint64, 2, "C")
    if not (tiles == arr2 and qw == arr2 and isinstance(col, types.Integer)
            and isinstance(q, types.Integer) and t == types.uint64
            and isinstance(nw, types.Integer) and d8 == types.Array(types.uint8, 1, "C")
            and isinstance(pos, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        st = signature.args
        i8 = ir.IntType(8)
        v8 = ir.VectorType(i8, 64)
        d = builder.trunc(_words_dist_vector(context, builder, st, args, 5), v8)
        a = context.make_array(st[6])(context, builder, args[6])
        p = context.cast(builder, args[7], st[7], types.intp)
        builder.store(d, builder.bitcast(builder.gep(a.data, [p]), v8.as_pointer()), align=1)
        m = builder.icmp_unsigned("<", d, _splat64(builder, builder.trunc(args[4], i8)))
        return builder.bitcast(m, ir.IntType(64))

    return types.uint64(tiles, col, qw, q, t, nw, d8, pos), codegen


def _below(context, builder, d, t, nw, wide=None):
    """IR: the ``<64 x i1>`` lanes of ``d`` below ``t``. Codes of at most 3 words have
    distances below 256: the lanes are truncated to bytes and compared as one
    64-byte vector; wider ones, or where ``wide`` (an ``i1``) is set, are compared as
    64-bit lanes."""
    i8, i64 = ir.IntType(8), ir.IntType(64)
    res = cgutils.alloca_once(builder, ir.VectorType(ir.IntType(1), 64))
    small = builder.icmp_unsigned("<=", nw, ir.Constant(nw.type, 3))
    if wide is not None:
        small = builder.and_(small, builder.not_(wide))
    with builder.if_else(small) as (then, other):
        with then:
            d8 = builder.trunc(d, ir.VectorType(i8, 64))
            builder.store(builder.icmp_unsigned("<", d8, _splat64(builder, builder.trunc(t, i8))),
                          res)
        with other:
            builder.store(builder.icmp_unsigned("<", d, _splat64(builder, t)), res)
    return builder.load(res)


def _words_dist_vector(context, builder, st, args, inw):
    """IR: ``<64 x i64>`` of ``sum_w popcount(tiles[w, col + i] ^ qw[q, w])``, ``i < 64``,
    for intrinsics whose first arguments are ``(tiles, col, qw, q)`` and argument ``inw``
    is ``nw``."""
    i64 = ir.IntType(64)
    vty = ir.VectorType(i64, 64)
    a = context.make_array(st[0])(context, builder, args[0])
    b = context.make_array(st[2])(context, builder, args[2])
    L = cgutils.unpack_tuple(builder, a.shape, 2)[1]
    W = context.cast(builder, args[inw], st[inw], types.intp)
    c = context.cast(builder, args[1], st[1], types.intp)
    qi = context.cast(builder, args[3], st[3], types.intp)
    ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]),
                                           "llvm.ctpop.v64i64")
    acc = cgutils.alloca_once_value(builder, ir.Constant(vty, [0] * 64))
    with cgutils.for_range(builder, W) as loop:
        w = loop.index
        p = builder.gep(a.data, [builder.add(builder.mul(w, L), c)])
        v = builder.load(builder.bitcast(p, vty.as_pointer()), align=8)
        x = builder.load(builder.gep(b.data, [builder.add(builder.mul(qi, W), w)]))
        d = builder.call(ctpop, [builder.xor(v, _splat64(builder, x))])
        builder.store(builder.add(builder.load(acc), d), acc)
    return builder.load(acc)


#: Candidates of the top-k are packed ``uint64`` keys ``(distance << KEY_SHIFT) | index``:
#: one store per candidate, and the key order is the (distance, index) order. Indices
#: below ``2**40``, distances below ``2**24`` (codes up to 16M bits).
KEY_SHIFT = 40
KEY_MASK = (1 << KEY_SHIFT) - 1
_NO_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)     # pads key arrays: no distance matches it


def _compress_store(builder, vals, m, base, p, always=None):
    """IR: store the lanes of ``<64 x i64> vals`` where ``m`` is set at ``base + p``,
    ``base + p + 1``, ... (64 entries from ``p`` may be overwritten); returns how many.

    Eight 8-lane register compresses (``vpcompressq``), each stored whole at a position
    computed from the mask directly (no serial chain): a compress straight to memory is
    microcoded on AMD Zen 4 (30x slower here), and a 64-lane compress is scalarised by
    LLVM's legaliser. Skipped when no lane is set (a sub-block without a candidate, the
    common case once the bound is tight, costs only the compare) unless ``always`` (an
    ``i1``, or ``None``) is set: where most sub-blocks have a candidate, a branch that is
    mispredicted on a third of them costs more than the compresses it saves.
    """
    i64 = ir.IntType(64)
    m64 = builder.bitcast(m, i64)
    go = builder.icmp_unsigned("!=", m64, ir.Constant(i64, 0))
    if always is not None:
        go = builder.or_(go, always)
    with builder.if_then(go):
        _compress_groups(builder, vals, m, m64, base, p)
    return builder.ctpop(m64)


def _compress_groups(builder, vals, m, m64, base, p):
    """IR of :func:`_compress_store` for a non-empty mask."""
    i1, i32, i64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
    vty, mty = ir.VectorType(i64, 64), ir.VectorType(i1, 64)
    v8, m8 = ir.VectorType(i64, 8), ir.VectorType(i1, 8)
    cp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, m8, v8]),
                                        "llvm.experimental.vector.compress.v8i64")
    for g in range(8):
        lanes = ir.Constant(ir.VectorType(i32, 8), list(range(8 * g, 8 * g + 8)))
        mg = builder.shuffle_vector(m, ir.Constant(mty, None), lanes)
        kg = builder.call(cp, [builder.shuffle_vector(vals, ir.Constant(vty, None), lanes), mg,
                               ir.Constant(v8, None)])
        pg = builder.add(p, builder.ctpop(builder.and_(m64, ir.Constant(i64, (1 << (8 * g)) - 1))))
        builder.store(kg, builder.bitcast(builder.gep(base, [pg]), v8.as_pointer()), align=8)


@intrinsic
def compress_distance64(typingctx, keys, start, d, out, pos, below):
    """Append ``keys[start + i]``, ``i < 64``, whose distance ``key >> KEY_SHIFT`` is ``d``
    (``below``: is less than ``d``) to ``out`` from ``pos`` on (in order; 64 entries from
    ``pos`` may be overwritten); returns how many. ``keys``, ``out``: C-contiguous
    ``uint64``; ``start + 64 <= len(keys)``.
    """
    arr1 = types.Array(types.uint64, 1, "C")
    if not (keys == arr1 and out == arr1 and isinstance(start, types.Integer)
            and d == types.uint64 and isinstance(pos, types.Integer)
            and isinstance(below, types.Boolean)):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        vty = ir.VectorType(i64, 64)
        st = signature.args
        ka = context.make_array(st[0])(context, builder, args[0])
        oa = context.make_array(st[3])(context, builder, args[3])
        s0 = context.cast(builder, args[1], st[1], types.intp)
        p = context.cast(builder, args[4], st[4], types.intp)
        v = builder.load(builder.bitcast(builder.gep(ka.data, [s0]), vty.as_pointer()), align=8)
        dv = builder.lshr(v, _splat64(builder, ir.Constant(i64, KEY_SHIFT)))
        dd = _splat64(builder, args[2])
        m = builder.select(context.cast(builder, args[5], st[5], types.boolean),
                           builder.icmp_unsigned("<", dv, dd), builder.icmp_unsigned("==", dv, dd))
        return _compress_store(builder, v, m, oa.data, p)

    return types.uint64(keys, start, d, out, pos, below), codegen


def _compress_offsets(builder, offs, m, base, p, always=None):
    """IR: store the lanes of ``<64 x i16> offs`` where ``m`` is set at ``base + p``,
    ``base + p + 1``, ... (64 entries from ``p`` may be overwritten); returns how many.

    Two 32-lane register compresses of 16-bit lanes (``vpcompressw``, AVX512-VBMI2), each
    stored whole: a quarter of the work of eight 8-lane compresses of 64-bit keys
    (:func:`_compress_store`; the sweep used them before, 29 cycles per sub-block with a
    candidate here). Skipped when no lane is set unless ``always`` (an ``i1``).
    """
    i1, i16, i32, i64 = ir.IntType(1), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    m64 = builder.bitcast(m, i64)
    go = builder.icmp_unsigned("!=", m64, ir.Constant(i64, 0))
    if always is not None:
        go = builder.or_(go, always)
    v32, m32 = ir.VectorType(i16, 32), ir.VectorType(i1, 32)
    cp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v32, [v32, m32, v32]),
                                        "llvm.experimental.vector.compress.v32i16")
    with builder.if_then(go):
        for h in range(2):
            lanes = ir.Constant(ir.VectorType(i32, 32), list(range(32 * h, 32 * h + 32)))
            mh = builder.shuffle_vector(m, ir.Constant(m.type, None), lanes)
            vh = builder.shuffle_vector(offs, ir.Constant(offs.type, None), lanes)
            kh = builder.call(cp, [vh, mh, ir.Constant(v32, None)])
            ph = p if h == 0 else builder.add(
                p, builder.ctpop(builder.and_(m64, ir.Constant(i64, 0xFFFFFFFF))))
            builder.store(kh, builder.bitcast(builder.gep(base, [ph]), v32.as_pointer()),
                          align=2)
    return builder.ctpop(m64)


@intrinsic
def compress_offsets64(typingctx, tiles, col, qw, q, t, out, pos, off0, nw, dense):
    """Append the offsets ``off0 + i`` (``uint16``) of the sub-block's rows below ``t``.

    With ``d[i]`` the distances of :func:`words_below_mask64`, every ``i < 64`` with
    ``d[i] < t`` writes, in order, ``out[pos + j] = off0 + i`` (``j`` counting from 0;
    ``off0 + 63 < 2**16``); returns how many. ``out``: C-contiguous ``uint16``; the 64
    entries from ``pos`` on may be overwritten. ``nw`` as in :func:`words_below_mask64`;
    ``dense`` (bool): compress even an empty mask, branch-free. The distances are not
    kept: the caller recomputes them for the few rows appended, from the tile still in
    cache (:func:`_flush`).
    """
    arr2 = types.Array(types.uint64, 2, "C")
    if not (tiles == arr2 and qw == arr2 and isinstance(col, types.Integer)
            and isinstance(q, types.Integer) and t == types.uint64
            and out == types.Array(types.uint16, 1, "C")
            and isinstance(pos, types.Integer) and isinstance(off0, types.Integer)
            and isinstance(nw, types.Integer) and isinstance(dense, types.Boolean)):
        return None

    def codegen(context, builder, signature, args):
        i16 = ir.IntType(16)
        st = signature.args
        d = _words_dist_vector(context, builder, st, args, 8)
        dense_ = context.cast(builder, args[9], st[9], types.boolean)
        m = _below(context, builder, d, args[4], context.cast(builder, args[8], st[8], types.intp),
                   dense_)
        oa = context.make_array(st[5])(context, builder, args[5])
        p = context.cast(builder, args[6], st[6], types.intp)
        o0 = builder.trunc(context.cast(builder, args[7], st[7], types.int64), i16)
        offs = builder.add(_splat64(builder, o0), ir.Constant(ir.VectorType(i16, 64),
                                                              list(range(64))))
        return _compress_offsets(builder, offs, m, oa.data, p, dense_)

    return types.uint64(tiles, col, qw, q, t, out, pos, off0, nw, dense), codegen


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

    def whole(self):
        """The database as one in-memory ``uint64 (n, W)`` array, or ``None`` (several
        blocks, a memmap, or ``config.SPLIT_MEMORY_BLOCKS``)."""
        if len(self.blocks) == 1 and self.blocks[0][0] == "words" \
                and not config.SPLIT_MEMORY_BLOCKS:
            return self.blocks[0][1]
        return None

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

#: Rows of a sub-block: the bit mask of a sub-block's rows below the bound is one
#: 64-lane vector expression (:func:`words_below_mask64`). A structural constant of
#: the kernels (not a tunable): 64 rows are 8 AVX-512 vectors of 64-bit words.
SUB_ROWS = 64

#: Most rows of a tile (their offsets in it are ``uint16``).
MAX_TILE = 1 << 16

#: Tile offsets a top-k thread buffers per query before turning them into keys
#: (:func:`_flush`); ``uint16`` each, so the scratch stays in the L1 cache.
SCRATCH_ROWS = 1024


@njit(inline="always")
def _tile(dbv, dbw, t0, t1, tb):
    """The word-major tile of database rows ``t0 .. t1`` and the column of row ``t0`` in it.

    Single-word databases are read in place (``dbv`` is ``dbw`` reshaped to ``(1, n)``);
    wider ones are copied word-major into ``tb`` (``tb[w, i]`` = word ``w`` of row
    ``t0 + i``), so that every word of a sub-block is one contiguous vector load.
    """
    W = dbw.shape[1]
    if W == 1:
        return dbv, t0
    for i in range(t1 - t0):
        for w in range(W):
            tb[np.uint64(w), np.uint64(i)] = dbw[np.uint64(t0 + i), np.uint64(w)]
    return tb, 0


@njit(inline="always")
def _col_dist(tv, col, qw, q):
    """Distance of query ``q`` to the code in column ``col`` of a word-major tile."""
    d = np.uint64(0)
    for w in range(qw.shape[1]):
        d += popcount64(tv[np.uint64(w), np.uint64(col)] ^ qw[q, w])
    return d


@njit(inline="always")
def _kth(kq, c, k, hist):
    """``(tk, below)``: the k-th smallest distance of the keys ``kq[:c]`` (``c >= k``)
    and how many are smaller. ``hist`` is scratch of ``bits + 1`` entries."""
    hist[:] = 0
    for i in range(c):
        hist[kq[i] >> np.uint64(KEY_SHIFT)] += 1
    below = 0
    tk = 0
    while below + hist[tk] < k:
        below += hist[tk]
        tk += 1
    return tk, below


@njit(cache=True)
def _compact(kq, hist, c, k):
    """Keep the candidates ``kq[:c]`` that can still enter the top-k (order kept):
    those below the k-th smallest distance ``tk`` and, at ``tk``, the first
    ``k - below``. Returns ``(k, tk)``: the new count and the new bound, since a later
    row at distance ``>= tk`` is beaten by ``k`` buffered rows with smaller indices.
    Branch-free; called between sub-blocks, never inside the candidate loop.
    """
    tk, below = _kth(kq, c, k, hist)
    need = k - below
    n = 0
    utk = np.uint64(tk)
    for i in range(c):
        key = kq[i]
        d = key >> np.uint64(KEY_SHIFT)
        keep = (d < utk) | ((d == utk) & (need > 0))
        kq[n] = key
        n += keep
        need -= (d == utk) & keep
    return n, tk


@njit(inline="always")
def _flush(tv, off, qw, q, kq, hist, scr, ns, c, t, k, idx0):
    """Append the rows at tile offsets ``scr[:ns]`` (in index order) to query ``q``'s
    candidate keys ``kq``, each with its distance recomputed from the tile (in cache): one
    branch-free scalar pass, no compare. Compacts (:func:`_compact`) when the buffer is
    full; a row whose distance is no longer below ``t`` (the compaction tightened it) is
    appended all the same: it is one more candidate in index order, which the next
    compaction or the final sort drops (a filter, ``c += d < t``, cost 6% of the whole
    top-1000 over 59,000). Returns the new ``(c, t)``."""
    C = kq.shape[0] - SUB_ROWS
    shift = np.uint64(KEY_SHIFT)
    uoff = np.uint64(off)
    uidx = np.uint64(idx0)
    W = qw.shape[1]
    i = 0
    while i < ns:
        if c >= C:
            c, t = _compact(kq, hist, c, k)
        e = min(ns, i + C - c)
        uc = np.uint64(c)
        if W == 1:              # one word: the row of the tile and the query word hoisted
            row = tv[0]
            x = qw[q, 0]
            for j in range(np.uint64(i), np.uint64(e)):
                o = np.uint64(scr[j])
                d = popcount64(row[uoff + o] ^ x)
                kq[uc - np.uint64(i) + j] = (d << shift) | (uidx + o)
            uc += np.uint64(e - i)
        else:
            for j in range(np.uint64(i), np.uint64(e)):
                o = np.uint64(scr[j])
                d = _col_dist(tv, uoff + o, qw, q)
                kq[uc - np.uint64(i) + j] = (d << shift) | (uidx + o)
            uc += np.uint64(e - i)
        c = np.int64(uc)
        i = e
    return c, t


@njit(inline="always")
def _sweep(tv, off, full, qw, q, kq, hist, scr, c, t, k, idx0, nw, dense):
    """The full sub-blocks of a tile for query ``q``: returns the new ``(c, t)`` and how
    many rows were appended.

    Per sub-block one vector expression appends the tile offsets of the rows below
    ``t`` to the scratch ``scr`` (:func:`compress_offsets64`); the scratch is turned
    into keys (:func:`_flush`) when it holds ``len(scr) - 2 * SUB_ROWS`` or more, and at
    the end of the tile.
    """
    lim = scr.shape[0] - 2 * SUB_ROWS
    ns = 0
    napp = 0
    for s in range(0, full, SUB_ROWS):
        ns += np.int64(compress_offsets64(tv, off + s, qw, q, np.uint64(t), scr, ns, s, nw,
                                          dense))
        if ns >= lim:
            c, t = _flush(tv, off, qw, q, kq, hist, scr, ns, c, t, k, idx0)
            napp += ns
            ns = 0
    c, t = _flush(tv, off, qw, q, kq, hist, scr, ns, c, t, k, idx0)
    return c, t, napp + ns


@njit(inline="always")
def _sweep_tile(tv, off, rows, qw, q, kq, hist, scr, c, t, na, k, idx0):
    """Query ``q`` against the ``rows`` rows of a word-major tile from column ``off`` on
    (global indices ``idx0 ..``): the full sub-blocks by :func:`_sweep`, with the word
    count a constant for 1, 2 and 4 words, the last rows one by one. ``na``: rows the
    query appended in its previous tile (a candidate per two sub-blocks or more: compress
    every sub-block, branch-free). Returns the new ``(c, t, na)``."""
    W = qw.shape[1]
    C = kq.shape[0] - SUB_ROWS
    full = rows // SUB_ROWS * SUB_ROWS
    dense = 2 * na * SUB_ROWS > full
    if W == 1:             # a constant word count: LLVM unrolls the word loop
        c, t, na = _sweep(tv, off, full, qw, q, kq, hist, scr, c, t, k, idx0, 1, dense)
    elif W == 2:
        c, t, na = _sweep(tv, off, full, qw, q, kq, hist, scr, c, t, k, idx0, 2, dense)
    elif W == 4:
        c, t, na = _sweep(tv, off, full, qw, q, kq, hist, scr, c, t, k, idx0, 4, dense)
    else:
        c, t, na = _sweep(tv, off, full, qw, q, kq, hist, scr, c, t, k, idx0, W, dense)
    for j in range(full, rows):       # the tile's last rows, one by one
        d = _col_dist(tv, off + j, qw, q)
        if d < np.uint64(t):
            if c >= C and c > k:
                c, t = _compact(kq, hist, c, k)
            if d < np.uint64(t):
                kq[np.uint64(c)] = (d << np.uint64(KEY_SHIFT)) | np.uint64(idx0 + j)
                c += 1
    return c, t, na


@njit(parallel=True, cache=True)
def _topk_chunk(qw, dbw, base, ck, state, k, tile, nblocks):
    """Sweep database rows ``dbw`` (global indices ``base ..``) into every query's candidates.

    Per query ``q``: ``ck[q]`` buffers candidate keys (see :data:`KEY_SHIFT`) in index
    order, ``state[q] = (count, t, appended in the previous tile)``; a row is a candidate
    only if its distance is below the bound ``t``. ``t`` starts at ``bits + 1`` or at an
    estimate (see :func:`sample_bounds`) and only tightens, when a buffer of
    ``C >= k + SUB_ROWS`` entries (or at least every row; ``SUB_ROWS`` more allocated)
    is full: it is then compacted to ``k`` and ``t`` becomes their k-th smallest
    distance. Each thread owns a block of queries and sweeps the rows ``tile`` at a time
    for all of them (the tile stays in cache), ``SUB_ROWS`` rows at a time per query:
    distances, compare and append of the tile offsets in one branch-free vector
    expression (:func:`compress_offsets64`), then keys (:func:`_flush`). No histogram
    in the sweep.
    """
    nq, W = qw.shape
    m = dbw.shape[0]
    dbv = dbw.reshape((1, m * W))       # the word-major view of a single-word database
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        tl = max(1, min(tile, m, MAX_TILE))
        tb = np.empty((W, tl if W > 1 else 0), np.uint64)
        hist = np.empty(64 * W + 1, np.int64)
        scr = np.empty(SCRATCH_ROWS + 2 * SUB_ROWS, np.uint16)
        for t0 in range(0, m, tl):
            t1 = min(t0 + tl, m)
            tv, off = _tile(dbv, dbw, t0, t1, tb)
            for q in range(q0, q1):
                c, t, na = _sweep_tile(tv, off, t1 - t0, qw, q, ck[q], hist, scr, state[q, 0],
                                       state[q, 1], state[q, 2], k, base + t0)
                state[q, 2] = na
                state[q, 0] = c
                state[q, 1] = t


@njit(inline="always")
def _sample_count(sample, qw, q, t, W):
    """Rows of the word-major ``sample`` at a distance ``< t`` from query ``q``."""
    cnt = 0
    for s in range(0, sample.shape[1], SUB_ROWS):
        cnt += popcount64(words_below_mask64(sample, s, qw, q, np.uint64(t), W))
    return cnt


@njit(parallel=True, cache=True)
def _sample_bounds(qw, sample, target, bounds, nblocks):
    """``bounds[q]`` = the smallest ``t`` with at least ``target`` rows of ``sample`` at a
    distance ``< t`` from query ``q`` (``bits + 1`` if none): a galloping search from the
    previous query's bound (neighbouring bounds are usually equal or adjacent: two
    counts instead of a binary search's ``log2(bits)``), then a binary search; each count
    sums the set bits of the sample's sub-block masks.

    ``sample``: word-major ``(W, S)``, ``S`` a multiple of ``SUB_ROWS``, ``target <= S``.
    """
    nq, W = qw.shape
    top = 64 * W + 1
    for b in prange(nblocks):
        g = (top + 1) // 2              # first guess; then the previous query's bound
        for q in range(b * nq // nblocks, (b + 1) * nq // nblocks):
            # count(d < lo) < target <= count(d < hi); count(d < 0) = 0, count(d < top) = S
            if _sample_count(sample, qw, q, g, W) >= target:    # gallop down from g
                hi = g
                lo = 0
                step = 1
                while hi - step > 0:
                    if _sample_count(sample, qw, q, hi - step, W) >= target:
                        hi -= step
                        step *= 2
                    else:
                        lo = hi - step
                        break
            else:                                             # gallop up from g
                lo = g
                hi = top
                step = 1
                while lo + step < top:
                    if _sample_count(sample, qw, q, lo + step, W) >= target:
                        hi = lo + step
                        break
                    lo += step
                    step *= 2
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _sample_count(sample, qw, q, mid, W) >= target:
                    hi = mid
                else:
                    lo = mid
            bounds[q] = hi
            g = hi


@njit(cache=True)
def _finish_query(kq, c, Dq, Iq, pass_bins, deep_gap, tmp, low, deep, hist, pos):
    """Query ``q``'s ``c`` candidate keys ``kq`` (index order; ``SUB_ROWS`` spare
    entries after them) sorted into ``Dq``/``Iq`` (its rows of ``D``/``I``), padded;
    see :func:`_topk_finish`. ``pass_bins``, ``deep_gap``: ``config.TOPK_PASS_BINS`` and
    ``config.TOPK_DEEP_GAP``. ``tmp``, ``low``, ``deep``: scratch of
    ``c + 2 * SUB_ROWS + 1`` keys or more; ``hist``, ``pos``: of ``bits + 1`` entries."""
    k = Dq.shape[0]
    shift = np.uint64(KEY_SHIFT)
    nout = min(c, k)
    if nout > 0:
        mn = kq[0]
        mx = kq[0]
        for i in range(c):
            mn = min(mn, kq[np.uint64(i)])
            mx = max(mx, kq[np.uint64(i)])
        dmin = mn >> shift
        dtop = mx >> shift
        if np.int64(dtop - dmin) < pass_bins:
            for i in range(c, c + SUB_ROWS):
                kq[i] = _NO_KEY
            # the keys below the top distance first (the top one, the bound's
            # neighbour, holds many keys and few of them are kept)
            na = 0
            for s in range(0, c, SUB_ROWS):
                na += np.int64(compress_distance64(kq, s, dtop, low, na, True))
            for i in range(na, na + SUB_ROWS):
                low[i] = _NO_KEY
            # and the few keys far below it (the counts fall off quickly below
            # the bound): their passes run over this short list
            gap = np.uint64(max(deep_gap, 0))
            dsplit = dtop - gap if dtop - dmin > gap else dmin
            nd = 0
            if dsplit > dmin:
                for s in range(0, na, SUB_ROWS):
                    nd += np.int64(compress_distance64(low, s, dsplit, deep, nd, True))
                for i in range(nd, nd + SUB_ROWS):
                    deep[i] = _NO_KEY
            p = 0
            d = dmin
            while p < nout and d < dtop:
                if d < dsplit:
                    for s in range(0, nd, SUB_ROWS):
                        p += np.int64(compress_distance64(deep, s, d, tmp, p, False))
                else:
                    for s in range(0, na, SUB_ROWS):
                        p += np.int64(compress_distance64(low, s, d, tmp, p, False))
                d += np.uint64(1)
            if p < nout:
                for s in range(0, c, SUB_ROWS):
                    p += np.int64(compress_distance64(kq, s, dtop, tmp, p, False))
        else:
            tk, below = _kth(kq, c, nout, hist)
            acc = 0
            for d in range(tk + 1):
                pos[d] = acc
                acc += hist[d]
            utk = np.uint64(tk)
            spare = tmp.shape[0] - 1
            for i in range(c):
                key = kq[i]
                d = key >> shift
                dd = min(d, utk)
                p = pos[dd]
                keep = (d < utk) | ((d == utk) & (p < nout))
                tmp[p if keep else spare] = key
                pos[dd] = p + keep
        for i in range(nout):
            key = tmp[np.uint64(i)]
            Dq[np.uint64(i)] = np.int32(key >> shift)
            Iq[np.uint64(i)] = np.int64(key & np.uint64(KEY_MASK))
    for i in range(nout, k):            # faiss's padding when fewer than k
        Dq[i] = DIST_PAD
        Iq[i] = -1


@njit(parallel=True, cache=True)
def _topk_finish(ck, state, D, I, nbins, pass_bins, deep_gap, nblocks):
    """Sort every query's candidate keys into ``D``/``I`` and pad each row.

    Candidates are in index order, so collecting them distance by distance, each
    distance in index order, gives the (distance, index) order; it stops once ``k`` are
    collected (at the k-th smallest distance only the first ones are kept, as in
    faiss's tie rule by index). Two ways, the same result:

    * few distances (fewer than ``pass_bins`` between the smallest and the largest): the
      keys below the largest distance picked out first (that distance, next to the
      bound, holds many keys and few are kept), then one vector pass over them per
      distance and, if needed, one for the largest (:func:`compress_distance64`, 64 keys
      per step, no scattered writes, no dependency chain);
    * otherwise a stable counting sort by distance (one scalar pass to count, one to
      scatter, dropped candidates to a spare slot).

    Both write to a per-thread buffer (in cache); then ``min(count, k)`` entries are
    unpacked into the output. ``ck`` rows hold ``SUB_ROWS`` entries beyond the count
    (filled here with a key no distance matches).
    """
    nq, k = D.shape
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        width = 0
        for q in range(q0, q1):
            width = max(width, state[q, 0])
        tmp = np.empty(width + 2 * SUB_ROWS + 1, np.uint64)
        low = np.empty(width + 2 * SUB_ROWS, np.uint64)
        deep = np.empty(width + 2 * SUB_ROWS, np.uint64)
        hist = np.empty(nbins, np.int64)
        pos = np.empty(nbins, np.int64)
        for q in range(q0, q1):
            _finish_query(ck[q], state[q, 0], D[q], I[q], pass_bins, deep_gap, tmp, low, deep,
                          hist, pos)


@njit(inline="always")
def _mask_offsets(mb, nb, pos, sparse):
    """The set bits of the masks ``mb[:nb]`` as offsets ``64 * i + bit`` (``uint16``), in
    order, written to ``pos``; returns how many. Branch-free for masks of up to four
    bits (four ``tzcnt``/``blsr`` steps whatever the mask; the writes past its count are
    overwritten by the next mask's), a loop for the rest; ``pos`` has 4 spare entries.
    ``sparse``: most masks are empty, a loop over each mask's bits instead (an empty
    mask then costs a predicted branch, not four steps)."""
    p = np.uint64(0)
    one = np.uint64(1)
    if sparse:
        for i in range(nb):
            m = mb[i]
            base = np.uint16(i * SUB_ROWS)
            while m:
                pos[p] = base + np.uint16(trailing_zeros64(m))
                m &= m - one
                p += one
        return np.int64(p)
    for i in range(nb):
        m = mb[i]
        base = np.uint16(i * SUB_ROWS)
        pc = popcount64(m)
        pos[p] = base + np.uint16(trailing_zeros64(m))
        m &= m - one
        pos[p + one] = base + np.uint16(trailing_zeros64(m))
        m &= m - one
        pos[p + np.uint64(2)] = base + np.uint16(trailing_zeros64(m))
        m &= m - one
        pos[p + np.uint64(3)] = base + np.uint16(trailing_zeros64(m))
        m &= m - one
        if pc > 4:
            pp = p + np.uint64(4)
            while m:
                pos[pp] = base + np.uint16(trailing_zeros64(m))
                m &= m - one
                pp += one
        p += pc
    return np.int64(p)


@njit(inline="always")
def _drain(cnt, live, t, k):
    """Tighten the bound ``t`` while the buckets below it hold ``k`` rows or more:
    returns ``(live, t)`` with ``live`` = rows in the buckets below the new ``t``."""
    while live >= k:
        t -= 1
        live -= cnt[t]
    return live, t


@njit(inline="always")
def _append(bk, cnt, d, row):
    """Row ``row`` appended to bucket ``d`` (``bk[d, cnt[d]]``, one more in ``cnt[d]``)."""
    c = np.uint64(cnt[d])
    bk[d, c] = np.uint32(row)
    cnt[d] = c + np.uint64(1)


@njit(inline="always")
def _bucket_batch(dbt, s0, nb, qw, q, t, mb, d8, pos, bk, cnt, sparse, nw):
    """Rows ``s0 .. s0 + 64 * nb`` of the word-major ``dbt`` for query ``q``: each at a
    distance ``d < t`` is appended to bucket ``d`` (``bk[d, cnt[d]]``, index order);
    returns how many. Three passes: the sub-blocks' masks (and, for up to 3 words,
    their distances as bytes, :func:`dist8_below_mask64`), their offsets
    (:func:`_mask_offsets`), the bucket appends (distances from the bytes, or
    recomputed from ``dbt`` for wider codes). ``sparse``: see :func:`_mask_offsets`; a
    batch without a candidate skips the last two passes."""
    ut = np.uint64(t)
    small = nw <= 3
    anyset = np.uint64(0)
    for i in range(nb):
        if small:
            m = dist8_below_mask64(dbt, s0 + i * SUB_ROWS, qw, q, ut, nw, d8, i * SUB_ROWS)
        else:
            m = words_below_mask64(dbt, s0 + i * SUB_ROWS, qw, q, ut, nw)
        mb[i] = m
        anyset |= m
    if anyset == 0:
        return 0
    p = _mask_offsets(mb, nb, pos, sparse)
    us0 = np.uint64(s0)
    for ii in range(np.uint64(p)):
        o = np.uint64(pos[ii])
        d = np.uint64(d8[o]) if small else _col_dist(dbt, us0 + o, qw, q)
        _append(bk, cnt, d, us0 + o)
    return p


@njit(parallel=True, cache=True)
def _topk_buckets(qw, dbt, bounds, k, batch, bins, cap, D, I, counts, nblocks):
    """Top-k of a database small enough to stay in the L2 cache, one query at a time,
    the candidates appended to per-distance buckets: no sort.

    ``dbt``: the whole database word-major ``(W, n)``; ``bounds[q]``: query ``q``'s
    starting bound (rows at a distance ``>= bounds[q]`` are never appended); each thread
    owns ``bins >= max(bounds)`` buckets of ``cap >= k + 64 * batch`` row indices
    (``uint32``: ``n < 2**32``). Rows are swept in batches of 1, 2, 4, ... up to
    ``batch`` sub-blocks (a loose starting bound, ``bits + 1`` without an estimate, is
    tightened after 64 rows instead of ``64 * batch``; a batch after one with fewer than
    a candidate per four sub-blocks skips empty masks by a branch, :func:`_bucket_batch`),
    candidate ``j`` at distance ``d``
    appended to bucket ``d`` (in index order). Every bucket below the bound ``t`` holds
    all the rows at its distance seen so far, so the bound is exact at every batch's
    end: while the buckets below ``t`` hold ``k`` rows or more, ``t`` drops by one
    (:func:`_drain`; bucket ``t`` then keeps its rows, and no later row at distance
    ``t`` can enter: ``k`` rows with smaller indices are at most as far). The result is
    the buckets below the final ``t`` in order, then the first rows of bucket ``t``:
    the (distance, index) order. ``counts[q]``: the rows found (fewer than ``k``: the
    starting bound was too tight, and the rest of ``D``/``I`` is padded).
    """
    nq, W = qw.shape
    n = dbt.shape[1]
    full = n // SUB_ROWS * SUB_ROWS
    rows = batch * SUB_ROWS
    for b in prange(nblocks):
        bk = np.empty((bins, cap), np.uint32)
        cnt = np.empty(bins, np.int64)
        mb = np.empty(batch, np.uint64)
        d8 = np.empty(rows + SUB_ROWS, np.uint8)
        pos = np.empty(rows + 4, np.uint16)
        for q in range(b * nq // nblocks, (b + 1) * nq // nblocks):
            t0 = bounds[q]
            t = t0
            cnt[:] = 0
            live = 0
            na = 0                  # candidates of the previous batch
            grow = 1                # batches of 1, 2, 4, ... sub-blocks up to `batch`: a
            s0 = 0                  # loose starting bound is tightened within 64 rows
            while s0 < full:
                nb = min(grow, batch, (full - s0) // SUB_ROWS)
                grow = min(2 * grow, batch)
                sp = 4 * na < nb     # fewer than one candidate per four sub-blocks
                if W == 1:           # a constant word count: LLVM unrolls the word loop
                    na = _bucket_batch(dbt, s0, nb, qw, q, t, mb, d8, pos, bk, cnt, sp, 1)
                elif W == 2:
                    na = _bucket_batch(dbt, s0, nb, qw, q, t, mb, d8, pos, bk, cnt, sp, 2)
                elif W == 3:
                    na = _bucket_batch(dbt, s0, nb, qw, q, t, mb, d8, pos, bk, cnt, sp, 3)
                elif W == 4:
                    na = _bucket_batch(dbt, s0, nb, qw, q, t, mb, d8, pos, bk, cnt, sp, 4)
                else:
                    na = _bucket_batch(dbt, s0, nb, qw, q, t, mb, d8, pos, bk, cnt, sp, W)
                live, t = _drain(cnt, live + na, t, k)
                s0 += nb * SUB_ROWS
            for j in range(full, n):              # the last rows, one by one
                d = _col_dist(dbt, j, qw, q)
                if d < np.uint64(t):
                    _append(bk, cnt, d, j)
                    live, t = _drain(cnt, live + 1, t, k)
            Dq = D[q]
            Iq = I[q]
            p = 0
            for d in range(t + 1 if t < t0 else t):
                c = cnt[d] if d < t else k - p        # bucket t: its first rows only
                src = bk[d]
                up = np.uint64(p)
                dd = np.int32(d)
                for i in range(np.uint64(c)):
                    Dq[up + i] = dd
                    Iq[up + i] = np.int64(src[i])
                p += c
            counts[q] = p
            for i in range(p, k):           # faiss's padding when fewer than k
                Dq[i] = DIST_PAD
                Iq[i] = -1


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
def _scatter_chunk(qw, dbw, base, pos, D, I):
    """Full ranking (``k >= n``): every chunk row at its place in ``D``/``I``.

    ``pos[q, d]`` is the next position of distance ``d`` in query ``q``'s ranking (the
    running sums of the histogram of :func:`_histogram_chunk`, advanced chunk by chunk):
    rows go in index order, so ties stay in index order. No candidate buffer: the
    output is written once.
    """
    nq, W = qw.shape
    for q in prange(nq):
        for j in range(dbw.shape[0]):
            d = np.uint64(_distance(qw, q, dbw, j)) if W > 1 else \
                popcount64(dbw[np.uint64(j), 0] ^ qw[q, 0])
            p = pos[q, d]
            D[q, np.uint64(p)] = np.int32(d)
            I[q, np.uint64(p)] = base + j
            pos[q, d] = p + 1


@njit(inline="always")
def _write_hits(tv, off, qw, q, scr, ns, D, I, p, idx0):
    """Write the rows at tile offsets ``scr[:ns]`` (in index order) to ``D[p:]``/``I[p:]``
    with their distances recomputed from the tile: one branch-free scalar pass."""
    uoff = np.uint64(off)
    uidx = np.uint64(idx0)
    up = np.uint64(p)
    for j in range(np.uint64(ns)):
        o = np.uint64(scr[j])
        D[up + j] = np.int32(_col_dist(tv, uoff + o, qw, q))
        I[up + j] = np.int64(uidx + o)
    return p + ns


@njit(inline="always")
def _range_sweep(tv, off, full, qw, q, t, scr, D, I, p, idx0, nw, fill, dense):
    """The full sub-blocks of a tile for query ``q``: count the rows below ``t`` (set
    bits of the sub-block masks) or, with ``fill``, write them from ``D[p]``/``I[p]`` on
    (offsets appended by :func:`compress_offsets64`, written by :func:`_write_hits`;
    ``dense``: compress every sub-block, branch-free). Returns the new ``p``."""
    if not fill:
        for s in range(0, full, SUB_ROWS):
            p += np.int64(popcount64(words_below_mask64(tv, off + s, qw, q, t, nw)))
        return p
    lim = scr.shape[0] - 2 * SUB_ROWS
    ns = 0
    for s in range(0, full, SUB_ROWS):
        ns += np.int64(compress_offsets64(tv, off + s, qw, q, t, scr, ns, s, nw, dense))
        if ns >= lim:
            p = _write_hits(tv, off, qw, q, scr, ns, D, I, p, idx0)
            ns = 0
    return _write_hits(tv, off, qw, q, scr, ns, D, I, p, idx0)


@njit(parallel=True, cache=True)
def _range_chunk(qw, dbw, radius, base, cursor, D, I, dense, tile, nblocks):
    """Count (``D`` empty) or write (``D``, ``I`` sized) the chunk rows within ``radius``.

    ``cursor[q]`` is the next write position of query ``q`` (or its running count);
    ``dense[q]`` (writes only): query ``q`` has so many hits that a branch-free compress
    of every sub-block beats a branch on empty masks (measured, 1,000 x 59,000 64-bit:
    1,770 hits per query 12.0 vs 14.9 ms; 109 hits per query 9.7 vs 8.6 ms).
    Same sweep as :func:`_topk_chunk` with the fixed bound ``radius + 1``: per sub-block
    one vector expression, the count a popcount of its mask, the writes branch-free
    (:func:`_range_sweep`). Writes are in index order.
    """
    nq, W = qw.shape
    m = dbw.shape[0]
    fill = D.shape[0] > 0
    t = np.uint64(min(radius + 1, 64 * W + 1))
    dbv = dbw.reshape((1, m * W))
    for b in prange(nblocks):
        q0 = b * nq // nblocks
        q1 = (b + 1) * nq // nblocks
        tl = max(1, min(tile, m, MAX_TILE))
        tb = np.empty((W, tl if W > 1 else 0), np.uint64)
        scr = np.empty(SCRATCH_ROWS + 2 * SUB_ROWS if fill else 0, np.uint16)
        for t0 in range(0, m, tl):
            t1 = min(t0 + tl, m)
            tv, off = _tile(dbv, dbw, t0, t1, tb)
            full = (t1 - t0) // SUB_ROWS * SUB_ROWS
            for q in range(q0, q1):
                p = cursor[q]
                dq = fill and dense[q]
                if W == 1:             # a constant word count: LLVM unrolls the word loop
                    p = _range_sweep(tv, off, full, qw, q, t, scr, D, I, p, base + t0, 1, fill,
                                     dq)
                elif W == 2:
                    p = _range_sweep(tv, off, full, qw, q, t, scr, D, I, p, base + t0, 2, fill,
                                     dq)
                elif W == 4:
                    p = _range_sweep(tv, off, full, qw, q, t, scr, D, I, p, base + t0, 4, fill,
                                     dq)
                else:
                    p = _range_sweep(tv, off, full, qw, q, t, scr, D, I, p, base + t0, W, fill,
                                     dq)
                for j in range(full, t1 - t0):       # the tile's last rows, one by one
                    d = _col_dist(tv, off + j, qw, q)
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


def sample_bounds(qw, store, k, nblocks):
    """Per-query starting bounds for the top-``k`` sweep, estimated on a sample, or ``None``.

    ``config.TOPK_SAMPLE_ROWS`` rows spread evenly over the store's first block; the
    bound of query ``q`` is the smallest ``t`` such that at least ``target`` sample rows
    lie below it, ``target`` = the expected count of top-k rows in the sample plus three
    standard deviations (binomial), so that over the whole database at least ``k`` rows
    lie below it with high probability. ``None`` when the sample would hold fewer than
    ``config.TOPK_SAMPLE_MIN`` top-k rows on average (small ``k / n``: the bound then
    tightens within the first few sub-blocks anyway). Only the speed depends on the
    estimate: a query whose bound was too tight is searched again without one.
    """
    n = store.ntotal
    first = store.blocks[0][1]
    S = min(config.TOPK_SAMPLE_ROWS, first.shape[0]) // SUB_ROWS * SUB_ROWS
    expect = k * S / n
    if S == 0 or k >= n or expect < config.TOPK_SAMPLE_MIN:
        return None
    target = min(S, int(np.ceil(expect + 3.0 * np.sqrt(expect))))
    rows = np.arange(S) * first.shape[0] // S
    sample = first[rows]
    if store.blocks[0][0] == "memmap":
        sample = as_words(np.asarray(sample), store.bits, "memmap codes")
    sample = np.ascontiguousarray(sample.T)
    bounds = np.empty(qw.shape[0], np.int64)
    _sample_bounds(qw, sample, target, bounds, nblocks)
    return bounds


def topk_words(qw, store, k, estimate=True):
    """Exact top-``k`` of word queries ``qw`` over a :class:`CodeStore` (``ntotal >= 1``).

    Returns ``(D, I)`` as :meth:`HammingIndex.search`. ``estimate``: start every query
    from the bound of :func:`sample_bounds` (queries whose estimate turns out too tight
    are searched again with ``estimate=False``, from the trivial bound ``bits + 1``).
    """
    nq, W = qw.shape
    n = store.ntotal
    D = np.empty((nq, k), dtype=np.int32)         # every entry written
    I = np.empty((nq, k), dtype=np.int64)
    if k >= n:                  # every row is in the result: a counting sort, no buffer
        counts = np.zeros((nq, 64 * W + 1), dtype=np.int64)
        for _, words in store.chunks(config.CHUNK_ROWS):
            _histogram_chunk(qw, words, counts)
        pos = np.cumsum(counts, axis=1) - counts
        for base, words in store.chunks(config.CHUNK_ROWS):
            _scatter_chunk(qw, words, base, pos, D, I)
        D[:, n:] = DIST_PAD                     # faiss's padding when fewer than k
        I[:, n:] = -1
        return D, I
    if n > KEY_MASK or 64 * W >= 1 << (64 - KEY_SHIFT):
        raise ValueError(f"top-k keys hold indices below 2**{KEY_SHIFT} and distances below "
                         f"2**{64 - KEY_SHIFT}: got {n} codes of {64 * W} padded bits")
    # candidate buffer per query: >= k + SUB_ROWS (or every row); the extra room
    # makes compactions rare (each costs O(C)), capped to keep memory O(nq * k)
    C = min(n, 2 * k + SUB_ROWS + min(2 * k, config.TOPK_BUFFER_EXTRA))
    nb = n_blocks(nq)
    bounds = sample_bounds(qw, store, k, nb) if estimate else None
    tile = max(1, config.TILE_ROWS // W)
    start = np.full(nq, 64 * W + 1, dtype=np.int64) if bounds is None else bounds
    na0 = 0 if bounds is None else tile * k // n    # rows of a tile below the estimate
    whole = store.whole()
    bins = int(start.max())                         # buckets 0 .. bins - 1
    cap = k + config.TOPK_BUCKET_BATCH * SUB_ROWS
    if whole is not None and n * W * 8 <= config.TOPK_FUSED_BYTES and n < 1 << 32 \
            and bins * cap * 4 <= config.TOPK_BUCKET_BYTES:
        # the database stays in cache: one query at a time, into buckets (_topk_buckets)
        dbt = whole.reshape((1, n)) if W == 1 else np.ascontiguousarray(whole.T)
        kept = np.empty(nq, dtype=np.int64)
        _topk_buckets(qw, dbt, start, k, config.TOPK_BUCKET_BATCH, bins, cap, D, I, kept, nb)
    else:
        ck = np.empty((nq, C + SUB_ROWS), dtype=np.uint64)   # room for one sub-block's stores
        state = np.zeros((nq, 3), dtype=np.int64)    # (count, bound t, appended in last tile)
        state[:, 1] = start
        state[:, 2] = na0                           # the first tile's dense/sparse choice
        for base, words in store.chunks(config.CHUNK_ROWS):
            _topk_chunk(qw, words, base, ck, state, k, tile, nb)
        _topk_finish(ck, state, D, I, 64 * W + 1, config.TOPK_PASS_BINS, config.TOPK_DEEP_GAP,
                     nb)
        kept = state[:, 0]
    if bounds is not None:
        redo = np.flatnonzero(kept < k)             # fewer than k rows below the estimate
        if redo.size:
            D[redo], I[redo] = topk_words(np.ascontiguousarray(qw[redo]), store, k, False)
    return D, I


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
    ``2k + 128 + min(2k, config.TOPK_BUFFER_EXTRA)`` keys of 8 bytes per query; none
    when ``k >= ntotal``: a counting sort writes the results directly). Top-k and rankings
    sort by distance over the ``bits + 1`` possible distances (O(n) per query, no
    comparison sort); ties are broken by ascending
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
        return topk_words(qw, self._store, k)

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
        no_dense = np.zeros(nq, dtype=np.bool_)
        if nq == 0:
            return np.zeros(1, np.int64), empty_d, empty_i
        nb = n_blocks(nq)
        tile = max(1, config.TILE_ROWS // qw.shape[1])
        for base, words in self._store.chunks(config.CHUNK_ROWS):
            _range_chunk(qw, words, radius, base, counts, empty_d, empty_i, no_dense, tile, nb)
        lims = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(counts, out=lims[1:])
        D = np.empty(lims[-1], dtype=np.int32)
        I = np.empty(lims[-1], dtype=np.int64)
        if lims[-1] == 0:
            return lims, D, I
        cursor = lims[:-1].copy()
        dense = 2 * SUB_ROWS * counts > self.ntotal    # a hit per two sub-blocks or more
        for base, words in self._store.chunks(config.CHUNK_ROWS):
            _range_chunk(qw, words, radius, base, cursor, D, I, dense, tile, nb)
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
