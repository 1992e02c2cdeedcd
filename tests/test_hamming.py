"""HammingIndex and pack/unpack against tests/naive.py and faiss (IndexBinaryFlat)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from tests import naive
from vdsh_numba import HammingIndex, config, pack_codes, unpack_codes
from vdsh_numba.search.hamming import DIST_PAD

faiss = pytest.importorskip("faiss")

BITS = [1, 7, 12, 24, 48, 64, 65, 100, 130]


def random_codes(rng, n, bits):
    return pack_codes(rng.integers(0, 2, (n, bits)))


@pytest.fixture
def small_chunks(monkeypatch):
    """Tiny chunks so that tiny inputs exercise the streaming merge."""
    monkeypatch.setattr(config, "CHUNK_ROWS", 7)
    monkeypatch.setattr(config, "SPLIT_MEMORY_BLOCKS", True)
    monkeypatch.setattr(config, "TILE_ROWS", 5)


# --------------------------------------------------------------------------- pack / unpack

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 140).flatmap(lambda b: arrays(np.int8, st.tuples(st.integers(0, 6),
                                                                          st.just(b)),
                                                    elements=st.sampled_from([-1, 1]))))
def test_pack_matches_naive_and_round_trips(signs):
    bits = signs.shape[1]
    codes = pack_codes(signs)
    assert codes.dtype == np.uint8 and codes.shape == (signs.shape[0], (bits + 7) // 8)
    np.testing.assert_array_equal(codes, naive.pack_codes(signs))
    np.testing.assert_array_equal(unpack_codes(codes, bits, signed=True), signs)
    np.testing.assert_array_equal(unpack_codes(codes, bits), (signs > 0).astype(np.uint8))
    np.testing.assert_array_equal(naive.unpack(codes, bits), (signs > 0).astype(np.uint8))


def test_padding_bits_are_zero():
    codes = pack_codes(np.ones((3, 12)))
    assert np.all(codes[:, 1] & 0x0F == 0)


# --------------------------------------------------------------------------- search

@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("pass_bins", [0, 10**6])
def test_search_matches_naive(bits, pass_bins, small_chunks, monkeypatch):
    monkeypatch.setattr(config, "TOPK_PASS_BINS", pass_bins)   # counting sort / vector passes
    rng = np.random.default_rng(bits)
    db, q = random_codes(rng, 40, bits), random_codes(rng, 6, bits)
    index = HammingIndex(bits)
    index.add(db[:15])
    index.add(db[15:])                    # repeated add
    assert index.ntotal == 40
    for k in (1, 5, 17, 40, 55):          # 55 > ntotal: padding
        D, I = index.search(q, k)
        Dn, In = naive.search(q, db, bits, k)
        assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == (6, k)
        np.testing.assert_array_equal(D, Dn)
        np.testing.assert_array_equal(I, In)


@pytest.fixture
def sub_block_tiles(monkeypatch):
    """Tiles of two full sub-blocks and a ragged tail, chunks that split tiles: inputs of
    a few hundred rows go through the vectorised sub-block path, the row-by-row tail,
    the tile sweep and the streaming merge."""
    from vdsh_numba.search.hamming import SUB_ROWS
    monkeypatch.setattr(config, "TILE_ROWS", 2 * SUB_ROWS + 2)
    monkeypatch.setattr(config, "CHUNK_ROWS", 300)
    monkeypatch.setattr(config, "SPLIT_MEMORY_BLOCKS", True)


@pytest.mark.parametrize("bits", [12, 48, 64, 65, 128, 130, 256, 300])
@pytest.mark.parametrize("ties", [False, True])
def test_search_sub_block_path_matches_naive(bits, ties, sub_block_tiles):
    """Several hundred rows: the threshold tightens inside sub-blocks, candidate buffers
    fill and are compacted (k small), or hold everything (k >= n); heavy ties at the
    k-th distance (``ties``: codes drawn from 16 patterns) test the (distance, index) order."""
    rng = np.random.default_rng(bits + ties)
    x = rng.integers(0, 2, (700, bits))
    xq = rng.integers(0, 2, (6, bits))
    if ties:
        x[:, 4:] = 0
        xq[:, 4:] = 0
    db, q = pack_codes(x), pack_codes(xq)
    index = HammingIndex(bits)
    index.add(db[:250])
    index.add(db[250:])
    for k in (1, 10, 100, 333, 699, 700, 750):
        D, I = index.search(q, k)
        Dn, In = naive.search(q, db, bits, k)
        np.testing.assert_array_equal(D, Dn)
        np.testing.assert_array_equal(I, In)
    for radius in (0, bits // 2 - 3, bits // 2, bits):
        for a, b in zip(index.range_search(q, radius), naive.range_search(q, db, bits, radius)):
            np.testing.assert_array_equal(a, b)


def test_padding_when_fewer_than_k():
    index = HammingIndex(16)
    index.add(np.zeros((3, 2), np.uint8))
    D, I = index.search(np.zeros((2, 2), np.uint8), 5)
    np.testing.assert_array_equal(I, [[0, 1, 2, -1, -1]] * 2)
    np.testing.assert_array_equal(D[:, 3:], DIST_PAD)
    empty = HammingIndex(16)
    D, I = empty.search(np.zeros((1, 2), np.uint8), 2)
    assert (I == -1).all() and (D == DIST_PAD).all()


def test_all_equal_codes_ties_by_index(small_chunks):
    index = HammingIndex(24)
    index.add(np.full((50, 3), 7, np.uint8))
    D, I = index.search(np.full((2, 3), 7, np.uint8), 20)
    assert (D == 0).all()
    np.testing.assert_array_equal(I, np.tile(np.arange(20), (2, 1)))


def _faiss_equivalent(D, I, Df, If):
    """faiss's way: distances exactly; indices equal as sets below the k-th distance,
    and at the k-th distance ours are the smallest indices among those faiss could pick."""
    np.testing.assert_array_equal(D, Df)
    for i in range(D.shape[0]):
        kth = D[i, -1]
        inner = D[i] < kth
        assert set(I[i][inner]) == set(If[i][inner])
        assert np.all(np.diff(I[i][D[i] == kth]) > 0)


@pytest.mark.parametrize("bits", [8, 24, 64, 128])
def test_search_matches_faiss(bits, small_chunks):
    rng = np.random.default_rng(bits)
    db, q = random_codes(rng, 300, bits), random_codes(rng, 9, bits)
    ours = HammingIndex(bits)
    ours.add(db)
    ref = faiss.IndexBinaryFlat(bits)
    ref.add(db)
    for k in (1, 10, 100, 300):
        D, I = ours.search(q, k)
        Df, If = ref.search(q, k)
        _faiss_equivalent(D, I, Df, If)
        Dn, In = naive.search(q, db, bits, k)
        np.testing.assert_array_equal(I, In)


def test_memmap_database_streams(tmp_path, small_chunks):
    bits = 48
    rng = np.random.default_rng(3)
    db, q = random_codes(rng, 60, bits), random_codes(rng, 4, bits)
    path = tmp_path / "db.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=db.shape)
    mm[:] = db
    mm.flush()
    ro = np.memmap(path, dtype=np.uint8, mode="r", shape=db.shape)
    index = HammingIndex(bits)
    index.add(ro[:25])                    # a memmap slice stays a memmap
    index.add(db[25:])                    # mixed with an in-memory block
    assert isinstance(index._store.blocks[0][1], np.memmap)
    D, I = index.search(q, 12)
    Dn, In = naive.search(q, db, bits, 12)
    np.testing.assert_array_equal(D, Dn)
    np.testing.assert_array_equal(I, In)
    lims, Dr, Ir = index.range_search(q, 20)
    ln, Dn, In = naive.range_search(q, db, bits, 20)
    np.testing.assert_array_equal(lims, ln)
    np.testing.assert_array_equal(Ir, In)


# --------------------------------------------------------------------------- range, rank

@pytest.mark.parametrize("bits", [5, 16, 64, 100])
@pytest.mark.parametrize("radius", [0, 2, 6, 200])
def test_range_search_matches_naive(bits, radius, small_chunks):
    rng = np.random.default_rng(bits + radius)
    db, q = random_codes(rng, 50, bits), random_codes(rng, 5, bits)
    db[:3] = q[0]                          # guarantee hits at distance 0
    index = HammingIndex(bits)
    index.add(db)
    lims, D, I = index.range_search(q, radius)
    ln, Dn, In = naive.range_search(q, db, bits, radius)
    assert lims.dtype == np.int64 and D.dtype == np.int32 and I.dtype == np.int64
    np.testing.assert_array_equal(lims, ln)
    np.testing.assert_array_equal(D, Dn)
    np.testing.assert_array_equal(I, In)


def test_range_search_matches_faiss_as_sets():
    bits = 32
    rng = np.random.default_rng(0)
    db, q = random_codes(rng, 400, bits), random_codes(rng, 7, bits)
    ours = HammingIndex(bits)
    ours.add(db)
    ref = faiss.IndexBinaryFlat(bits)
    ref.add(db)
    lims, D, I = ours.range_search(q, 12)
    lf, Df, If = ref.range_search(q, 13)   # faiss's binary range search keeps d < radius
    np.testing.assert_array_equal(lims, lf)
    for i in range(len(q)):
        s, e = lims[i], lims[i + 1]
        assert sorted(zip(If[s:e], Df[s:e])) == sorted(zip(I[s:e], D[s:e]))


def test_range_search_nothing_found():
    index = HammingIndex(8)
    index.add(np.zeros((4, 1), np.uint8))
    lims, D, I = index.range_search(np.full((2, 1), 255, np.uint8), 3)
    np.testing.assert_array_equal(lims, [0, 0, 0])
    assert D.size == 0 and I.size == 0


def test_rank_and_histogram(small_chunks):
    bits = 12
    rng = np.random.default_rng(5)
    db, q = random_codes(rng, 30, bits), random_codes(rng, 4, bits)
    index = HammingIndex(bits)
    index.add(db)
    I, D = index.rank(q, return_distances=True)
    dist = naive.hamming(q, db, bits)
    for i in range(len(q)):
        np.testing.assert_array_equal(I[i], naive.order(dist[i]))
        np.testing.assert_array_equal(D[i], dist[i][naive.order(dist[i])])
    hist = index.histogram(q)
    assert hist.shape == (4, bits + 1)
    for i in range(len(q)):
        np.testing.assert_array_equal(hist[i], np.bincount(dist[i], minlength=bits + 1))


# --------------------------------------------------------------------------- input checks

def test_strict_input_checks():
    index = HammingIndex(12)
    good = np.zeros((3, 2), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        index.add(good.astype(np.int64))
    with pytest.raises(TypeError, match="numpy"):
        index.add([[0, 0]])
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        index.add(np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        index.add(np.zeros(6, np.uint8))
    with pytest.raises(ValueError, match="C-contiguous"):
        index.add(np.zeros((3, 4), np.uint8)[:, ::2])
    with pytest.raises(ValueError, match="padding bits"):
        index.add(np.full((3, 2), 255, np.uint8))
    index.add(good)
    with pytest.raises(TypeError, match="uint8"):
        index.search(good.astype(np.float32), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(good, 0)
    with pytest.raises(TypeError, match="k must be an integer"):
        index.search(good, 2.0)
    with pytest.raises(ValueError, match="radius"):
        index.range_search(good, -1)
    with pytest.raises(ValueError, match="bits"):
        HammingIndex(0)
    with pytest.raises(ValueError, match="backend"):
        HammingIndex(8, backend="gpu")
    from vdsh_numba.backend import cuda_available
    if not cuda_available():  # no silent fallback: the error names what is missing
        with pytest.raises(RuntimeError, match="backend='cuda' needs"):
            HammingIndex(8, backend="cuda")
    assert index.ntotal == 3 and "ntotal=3" in repr(index)


def test_package_export():
    import vdsh_numba
    assert vdsh_numba.HammingIndex is HammingIndex


# --------------------------------------------------------------------------- vector primitives

def test_mask_intrinsics_match_numpy():
    """The 64-lane word masks and tzcnt of vdsh_numba.search.hamming against numpy bit by bit."""
    from numba import njit
    from vdsh_numba.search.hamming import trailing_zeros64, words_below_mask64

    @njit
    def mask(tiles, col, qw, q, t):
        return words_below_mask64(tiles, col, qw, q, t, qw.shape[1])

    @njit
    def tz(v):
        return trailing_zeros64(v)

    rng = np.random.default_rng(7)
    for W in (1, 2, 3, 5):
        tiles = rng.integers(0, 2**63, (W, 200), dtype=np.uint64)
        tiles |= rng.integers(0, 2, (W, 200), dtype=np.uint64) << np.uint64(63)   # top bits too
        qw = rng.integers(0, 2**63, (4, W), dtype=np.uint64)
        qw[2] = 2**64 - 1
        qw[3] = 0
        for col, t, q in [(0, 30 * W, 0), (3, 33 * W, 1), (136, 64 * W, 2), (100, 0, 3),
                          (17, 64 * W + 1, 0), (9, 1, 3)]:
            m = mask(tiles, col, qw, q, np.uint64(t))
            pops = [sum(bin(int(tiles[w, col + i]) ^ int(qw[q, w])).count("1") for w in range(W))
                    for i in range(64)]
            assert int(m) == sum(1 << i for i in range(64) if pops[i] < t)
    for v in (1, 2, 6, 1 << 40, 2**63, 2**64 - 1):
        assert int(tz(np.uint64(v))) == (v & -v).bit_length() - 1


def test_compress_offsets_match_numpy():
    """compress_offsets64 (64-bit lane compares for wide codes or dense sub-blocks, byte
    compares otherwise) appends exactly the offsets of the rows below t, in order."""
    from numba import njit
    from vdsh_numba.search.hamming import compress_offsets64

    @njit
    def offs(tiles, col, qw, q, t, out, pos, off0, dense):
        return compress_offsets64(tiles, col, qw, q, t, out, pos, off0, qw.shape[1], dense)

    rng = np.random.default_rng(11)
    for W in (1, 2, 3, 4, 5):
        tiles = rng.integers(0, 2**63, (W, 200), dtype=np.uint64)
        tiles |= rng.integers(0, 2, (W, 200), dtype=np.uint64) << np.uint64(63)
        qw = rng.integers(0, 2**63, (3, W), dtype=np.uint64)
        qw[2] = 2**64 - 1
        for col, t, q in [(0, 32 * W, 0), (5, 64 * W + 1, 1), (130, 0, 2), (70, 30 * W, 2),
                          (17, 1, 0), (99, 64 * W, 1)]:
            pops = np.array([sum(bin(int(tiles[w, col + i]) ^ int(qw[q, w])).count("1")
                                 for w in range(W)) for i in range(64)])
            want = 1000 + np.flatnonzero(pops < t)
            for dense in (False, True):
                out = np.zeros(7 + 64 + 64, np.uint16)
                got = offs(tiles, col, qw, q, np.uint64(t), out, 7, 1000, dense)
                assert int(got) == want.size
                np.testing.assert_array_equal(out[7:7 + want.size], want)
                assert not out[:7].any()


@pytest.fixture
def sampled(monkeypatch):
    """Estimate starting bounds on a small sample even for small inputs; small tiles."""
    from vdsh_numba.search.hamming import SUB_ROWS
    monkeypatch.setattr(config, "TOPK_SAMPLE_ROWS", 4 * SUB_ROWS)
    monkeypatch.setattr(config, "TOPK_SAMPLE_MIN", 1)
    monkeypatch.setattr(config, "TILE_ROWS", 3 * SUB_ROWS + 5)


@pytest.mark.parametrize("bits", [12, 64, 128, 200])
@pytest.mark.parametrize("pass_bins", [0, 10**6])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("deep_gap", [0, 2])
def test_search_with_estimated_bounds_matches_naive(bits, pass_bins, fused, deep_gap, sampled,
                                                    monkeypatch):
    """The sampled starting bound is used (and tight enough for most queries): same
    results as the naive (distance, index) order, with ties; through the tiled sweep
    and through the few-queries-at-a-time path of cache-sized databases; with and
    without the short list of the keys far below the largest distance."""
    monkeypatch.setattr(config, "TOPK_FUSED_BYTES", 1 << 30 if fused else 0)
    monkeypatch.setattr(config, "TOPK_DEEP_GAP", deep_gap)
    from vdsh_numba.search import hamming
    calls = []
    real = hamming.topk_words
    monkeypatch.setattr(hamming, "topk_words",
                        lambda qw, store, k, estimate=True: calls.append(estimate) or
                        real(qw, store, k, estimate))
    monkeypatch.setattr(config, "TOPK_PASS_BINS", pass_bins)   # counting sort / vector passes
    rng = np.random.default_rng(bits + 1)
    db = random_codes(rng, 3000, bits)
    db[1000:1300] = db[0]                          # a block of ties
    q = random_codes(rng, 9, bits)
    q[0] = db[0]
    index = HammingIndex(bits)
    index.add(db)
    for k in (60, 400):
        bounds = hamming.sample_bounds(index._queries(q), index._store, k, 1)
        assert bounds is not None and np.all(bounds < bits + 1)
        D, I = index.search(q, k)
        Dn, In = naive.search(q, db, bits, k)
        np.testing.assert_array_equal(D, Dn)
        np.testing.assert_array_equal(I, In)
    assert calls[0] is True


@pytest.mark.parametrize("bits", [12, 64, 128, 192, 256, 320])
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("estimate", [False, True])
def test_bucket_path_matches_naive(bits, batch, estimate, monkeypatch):
    """The cache-sized path (per-distance buckets, the bound tightened after every batch
    of sub-blocks): a batch of one sub-block (a drain after every 64 rows; 70 batches,
    more than a doubling batch size could count) and of 32, sparse and dense batches,
    the row-by-row tail (n % 64 = 37), a block of ties straddling batches, 1 to 3 words
    (distance bytes) and 4 to 5 (distances recomputed), with and without a sampled
    starting bound; the same (distance, index) order as the naive reference."""
    from vdsh_numba.search import hamming
    monkeypatch.setattr(config, "TOPK_BUCKET_BATCH", batch)
    monkeypatch.setattr(config, "TOPK_BUCKET_BYTES", 1 << 30)    # k = n - 1 at 320 bits too
    if estimate:
        monkeypatch.setattr(config, "TOPK_SAMPLE_ROWS", 4 * hamming.SUB_ROWS)
        monkeypatch.setattr(config, "TOPK_SAMPLE_MIN", 1)
    else:
        monkeypatch.setattr(config, "TOPK_SAMPLE_MIN", 10**9)
    calls = []
    real = hamming._topk_buckets
    monkeypatch.setattr(hamming, "_topk_buckets", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(bits + batch)
    n = 70 * hamming.SUB_ROWS + 37
    db = random_codes(rng, n, bits)
    db[40:400] = db[3]                             # ties across sub-blocks and batches
    q = random_codes(rng, 6, bits)
    q[0] = db[3]
    q[1, 0] ^= 1
    index = HammingIndex(bits)
    index.add(db)
    for k in (1, 7, 300, 1000, n - 1):
        D, I = index.search(q, k)
        Dn, In = naive.search(q, db, bits, k)
        np.testing.assert_array_equal(D, Dn)
        np.testing.assert_array_equal(I, In)
    assert len(calls) >= 5


def test_bucket_path_over_its_memory_takes_the_tiled_sweep(monkeypatch):
    """Buckets beyond config.TOPK_BUCKET_BYTES: the tiled sweep, same results."""
    from vdsh_numba.search import hamming
    calls = []
    real = hamming._topk_buckets
    monkeypatch.setattr(hamming, "_topk_buckets", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(5)
    db, q = random_codes(rng, 700, 64), random_codes(rng, 4, 64)
    index = HammingIndex(64)
    index.add(db)
    Dn, In = naive.search(q, db, 64, 50)
    for cap, used in ((8 << 20, 1), (1000, 0)):
        monkeypatch.setattr(config, "TOPK_BUCKET_BYTES", cap)
        calls.clear()
        D, I = index.search(q, 50)
        np.testing.assert_array_equal(D, Dn)
        np.testing.assert_array_equal(I, In)
        assert len(calls) == used


@pytest.mark.parametrize("fused", [False, True])
def test_search_estimate_too_tight_is_redone(fused, sampled, monkeypatch):
    """A first block full of copies of the query (or, in one block, copies on the
    sample's rows) makes the sample's bound 1, which holds fewer than k rows of the
    whole database: those queries are searched again."""
    from vdsh_numba.search import hamming
    calls = []
    real = hamming.topk_words
    monkeypatch.setattr(hamming, "topk_words",
                        lambda qw, store, k, estimate=True: calls.append(estimate) or
                        real(qw, store, k, estimate))
    monkeypatch.setattr(config, "TOPK_FUSED_BYTES", 1 << 30 if fused else 0)
    rng = np.random.default_rng(3)
    bits = 64
    q = random_codes(rng, 3, bits)
    first = np.repeat(q[:1], 256, axis=0)
    rest = random_codes(rng, 3000, bits)
    index = HammingIndex(bits)
    if fused:       # one block: the sample rows (spread over it) are the copies
        db = rest.copy()
        db[np.arange(256) * len(db) // 256] = q[0]
        index.add(db)
    else:
        db = np.concatenate([first, rest])
        index.add(first)
        index.add(rest)
    D, I = index.search(q, 500)
    Dn, In = naive.search(q, db, bits, 500)
    np.testing.assert_array_equal(D, Dn)
    np.testing.assert_array_equal(I, In)
    assert calls == [True, False]


@pytest.mark.parametrize("bits", [12, 64, 130])
def test_sample_bounds_match_naive(bits, sampled):
    """Every starting bound is the smallest t with at least `target` sample rows at a
    distance below t (naive distances), whatever the previous query's bound was: the
    galloping search goes up and down from it (queries far apart, and copies)."""
    from vdsh_numba.search import hamming
    rng = np.random.default_rng(bits)
    db = random_codes(rng, 3000, bits)
    q = random_codes(rng, 12, bits)
    q[3] = db[0]                                   # a bound far below its neighbours'
    q[5:8] = db[7]                                 # equal neighbours
    index = HammingIndex(bits)
    index.add(db)
    k = 300
    S = config.TOPK_SAMPLE_ROWS
    expect = k * S / db.shape[0]
    target = min(S, int(np.ceil(expect + 3.0 * np.sqrt(expect))))
    rows = np.arange(S) * db.shape[0] // S
    dist = naive.hamming(q, db[rows], bits)
    want = [next(t for t in range(bits + 2) if np.sum(dist[i] < t) >= target)
            for i in range(q.shape[0])]
    for nblocks in (1, 3):
        got = hamming.sample_bounds(index._queries(q), index._store, k, nblocks)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bits", [64, 128, 200])
@pytest.mark.parametrize("fused", [False, True])
def test_scratch_flushes_inside_a_tile(bits, fused, monkeypatch):
    """One tile of 5,000 rows: the per-tile offset scratch (SCRATCH_ROWS) fills and is
    turned into keys several times inside the tile, with buffer compactions between its
    pieces (small k, no estimated bound: every row of the first sub-blocks is a
    candidate); range search writes more hits per tile than the scratch holds."""
    from vdsh_numba.search import hamming
    monkeypatch.setattr(config, "TILE_ROWS", 1 << 20)
    monkeypatch.setattr(config, "TOPK_SAMPLE_MIN", 10**9)       # no estimate
    monkeypatch.setattr(config, "TOPK_FUSED_BYTES", 1 << 30 if fused else 0)
    assert hamming.SCRATCH_ROWS < 5000
    rng = np.random.default_rng(bits)
    x = rng.integers(0, 2, (5000, bits))
    x[:, 6:] = x[0, 6:]                              # 64 patterns: heavy ties
    x[::7] = rng.integers(0, 2, (len(x[::7]), bits))
    db = pack_codes(x)
    q = pack_codes(np.concatenate([x[:2], rng.integers(0, 2, (3, bits))]))
    index = HammingIndex(bits)
    index.add(db)
    for k in (5, 300, 2600, 4999):
        D, I = index.search(q, k)
        Dn, In = naive.search(q, db, bits, k)
        np.testing.assert_array_equal(D, Dn)
        np.testing.assert_array_equal(I, In)
    for radius in (3, bits // 2, bits):
        for a, b in zip(index.range_search(q, radius), naive.range_search(q, db, bits, radius)):
            np.testing.assert_array_equal(a, b)
