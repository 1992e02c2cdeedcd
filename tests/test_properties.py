"""Hypothesis properties of the kernels against tests/naive.py: pack/unpack round trips, Hamming
distances (histograms), top-k and range search (stable counting sort: ties keep index order),
and metric invariants (mAP = 1 for perfect codes, tie-aware metrics invariant to database
permutation, index-order mAP equal to the naive list AP)."""
import contextlib

import numpy as np
from hypothesis import given, settings, strategies as st

from tests import naive
from vdsh_numba import HammingIndex, config, pack_codes, unpack_codes
from vdsh_numba.search import metrics as M

SETTINGS = settings(max_examples=30, deadline=None)


@contextlib.contextmanager
def chunks(small):
    """Tiny chunks and tiles (``small``) so tiny inputs cross the streaming merges."""
    old = config.CHUNK_ROWS, config.SPLIT_MEMORY_BLOCKS, config.TILE_ROWS
    if small:
        config.CHUNK_ROWS, config.SPLIT_MEMORY_BLOCKS, config.TILE_ROWS = 5, True, 3
    try:
        yield
    finally:
        config.CHUNK_ROWS, config.SPLIT_MEMORY_BLOCKS, config.TILE_ROWS = old


@st.composite
def code_sets(draw, max_bits=130, max_n=30, max_q=5, dense_ties=None):
    """(bits, queries, database) packed codes; ``dense_ties`` draws from few distinct codes."""
    bits = draw(st.integers(1, max_bits))
    n, nq = draw(st.integers(0, max_n)), draw(st.integers(0, max_q))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    few = draw(st.booleans()) if dense_ties is None else dense_ties
    if few:   # many equal distances: the order of ties is what is tested
        pool = rng.integers(0, 2, (3, bits))
        db = pool[rng.integers(0, 3, n)]
        q = pool[rng.integers(0, 3, nq)]
    else:
        db, q = rng.integers(0, 2, (n, bits)), rng.integers(0, 2, (nq, bits))
    return bits, pack_codes(q.reshape(nq, bits)), pack_codes(db.reshape(n, bits))


@SETTINGS
@given(st.integers(1, 200), st.integers(0, 9), st.integers(0, 2**32 - 1))
def test_unpack_pack_round_trip(bits, n, seed):
    bitsm = np.random.default_rng(seed).integers(0, 2, (n, bits)).astype(np.uint8)
    codes = pack_codes(bitsm)
    np.testing.assert_array_equal(codes, naive.pack_codes(bitsm))
    np.testing.assert_array_equal(unpack_codes(codes, bits), bitsm)
    np.testing.assert_array_equal(pack_codes(unpack_codes(codes, bits)), codes)
    np.testing.assert_array_equal(pack_codes(unpack_codes(codes, bits, signed=True)), codes)


@SETTINGS
@given(code_sets(), st.booleans())
def test_distance_histogram_matches_naive(cs, small):
    bits, q, db = cs
    index = HammingIndex(bits)
    index.add(db)
    with chunks(small):
        got = index.histogram(q)
    np.testing.assert_array_equal(got, naive.histogram(q, db, bits))


@SETTINGS
@given(code_sets(), st.integers(1, 40), st.booleans())
def test_topk_matches_naive_with_ties_by_index(cs, k, small):
    bits, q, db = cs
    index = HammingIndex(bits)
    index.add(db[: len(db) // 2])
    index.add(db[len(db) // 2:])
    with chunks(small):
        D, I = index.search(q, k)
    D0, I0 = naive.search(q, db, bits, k)
    np.testing.assert_array_equal(D, D0)
    np.testing.assert_array_equal(I, I0)


@SETTINGS
@given(code_sets(dense_ties=True), st.integers(0, 130), st.booleans())
def test_range_search_is_a_stable_counting_sort(cs, radius, small):
    bits, q, db = cs
    index = HammingIndex(bits)
    index.add(db)
    with chunks(small):
        lims, D, I = index.range_search(q, radius)
    dist = naive.hamming(q, db, bits)
    for i in range(len(q)):
        hits = [j for j in range(len(db)) if dist[i, j] <= radius]   # database order
        d0, i0 = naive.stable_sort_by_distance([dist[i, j] for j in hits], hits)
        assert D[lims[i]:lims[i + 1]].tolist() == d0 and I[lims[i]:lims[i + 1]].tolist() == i0


@st.composite
def labelled(draw, multi=None):
    bits, q, db = draw(code_sets(max_bits=40, max_n=25, max_q=4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    multi = draw(st.booleans()) if multi is None else multi
    if multi:
        ql = (rng.random((len(q), 3)) < 0.5).astype(np.uint8)
        dl = (rng.random((len(db), 3)) < 0.5).astype(np.uint8)
    else:
        ql, dl = rng.integers(0, 3, len(q)), rng.integers(0, 3, len(db))
    return bits, q, db, ql, dl


@SETTINGS
@given(labelled(), st.booleans())
def test_index_order_map_matches_naive(data, small):
    bits, q, db, ql, dl = data
    if len(db) == 0 or len(q) == 0:
        return
    with chunks(small):
        got = M.mean_average_precision(q, db, ql, dl, bits=bits)
    dist, rel = naive.hamming(q, db, bits), naive.graded(ql, dl) > 0
    ref = np.mean([naive.ap_of_list(rel[i][naive.order(dist[i])]) for i in range(len(q))])
    assert abs(got - ref) < 1e-12


@SETTINGS
@given(st.integers(2, 6), st.integers(3, 64), st.integers(1, 8), st.integers(0, 2**32 - 1), st.booleans())
def test_perfect_codes_have_map_one(n_classes, bits, per_class, seed, small):
    rng = np.random.default_rng(seed)
    book = rng.integers(0, 2, (n_classes, bits))
    while len(np.unique(book, axis=0)) < n_classes:          # one distinct codeword per class
        book = rng.integers(0, 2, (n_classes, bits))
    dl = rng.permutation(np.repeat(np.arange(n_classes), per_class))
    ql = rng.integers(0, n_classes, 5)
    q, db = pack_codes(book[ql]), pack_codes(book[dl])
    with chunks(small):
        for ties in ("index", "average"):
            assert M.mean_average_precision(q, db, ql, dl, ties=ties, bits=bits) == 1.0
        s, _ = M.evaluate_codes(q, db, ql, dl, bits)
    assert s["map"] == 1.0 and s["map_tie_aware"] == 1.0 and s["recall_hamming2"] == 1.0


@SETTINGS
@given(labelled(), st.integers(0, 2**32 - 1), st.integers(1, 30))
def test_tie_aware_metrics_invariant_to_database_permutation(data, seed, k):
    bits, q, db, ql, dl = data
    if len(db) == 0 or len(q) == 0:
        return
    p = np.random.default_rng(seed).permutation(len(db))
    for f in (lambda a, b: M.mean_average_precision(q, a, ql, b, ties="average", bits=bits),
              lambda a, b: M.mean_average_precision(q, a, ql, b, topk=k, ties="average", bits=bits),
              lambda a, b: M.ndcg(q, a, ql, b, k, ties="average", bits=bits),
              lambda a, b: M.precision_at_k(q, a, ql, b, k, ties="average", bits=bits),
              lambda a, b: M.precision_within_radius(q, a, ql, b, 2, bits=bits)[0]):
        assert abs(f(db, dl) - f(np.ascontiguousarray(db[p]), dl[p])) < 1e-12
