"""vdsh_numba.search.metrics against tests/naive.py, brute force over tie orderings, and scikit-learn."""
import numpy as np
import pytest

from tests import naive
from vdsh_numba import config, pack_codes
from vdsh_numba.search import metrics as M


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Tiny chunks so that tiny inputs exercise the streaming passes."""
    monkeypatch.setattr(config, "CHUNK_ROWS", 23)
    monkeypatch.setattr(config, "SPLIT_MEMORY_BLOCKS", True)
    monkeypatch.setattr(config, "QUERY_BLOCK", 3)
    monkeypatch.setattr(M, "HARMONIC_TABLE", 7)     # tie-aware sums cross table -> digamma


def make(rng, nq, n, bits, multi, n_classes=3):
    q = pack_codes(rng.integers(0, 2, (nq, bits)))
    db = pack_codes(rng.integers(0, 2, (n, bits)))
    if multi:
        ql = (rng.random((nq, n_classes)) < 0.4).astype(np.uint8)
        dl = (rng.random((n, n_classes)) < 0.4).astype(np.uint8)
    else:
        ql = rng.integers(0, n_classes, nq)
        dl = rng.integers(0, n_classes, n)
    return q, db, ql, dl


CASES = [(12, False), (12, True), (64, False), (70, True), (5, False)]


def per_query(q, db, ql, dl, bits):
    return naive.hamming(q, db, bits), naive.graded(ql, dl)


@pytest.mark.parametrize("bits,multi", CASES)
def test_map_index_ties_matches_naive(bits, multi):
    rng = np.random.default_rng(bits + multi)
    q, db, ql, dl = make(rng, 8, 90, bits, multi)
    assert M.mean_average_precision(q, db, ql, dl, bits=bits) == pytest.approx(
        naive.mean_ap(q, db, ql, dl, bits), abs=1e-12)
    for topk in (1, 10, 50, 90, 500):
        assert M.mean_average_precision(q, db, ql, dl, topk=topk, bits=bits) == pytest.approx(
            naive.mean_ap(q, db, ql, dl, bits, topk), abs=1e-12)


@pytest.mark.parametrize("bits,multi", CASES)
def test_map_tie_aware_matches_direct_sum(bits, multi):
    rng = np.random.default_rng(bits * 3 + multi)
    q, db, ql, dl = make(rng, 7, 80, bits, multi)
    dist, g = per_query(q, db, ql, dl, bits)
    for topk in (None, 1, 13, 80, 300):
        ref = np.mean([naive.ap_tie_aware_direct(dist[i], g[i] > 0, topk) for i in range(len(q))])
        got = M.mean_average_precision(q, db, ql, dl, topk=topk, ties="average", bits=bits)
        assert got == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_tie_aware_ap_and_ndcg_equal_brute_force_over_permutations(seed):
    rng = np.random.default_rng(seed)
    bits = 2                                # 3 possible distances: many ties
    n = 7
    q, db, ql, dl = make(rng, 3, n, bits, multi=seed % 2 == 1)
    dist, g = per_query(q, db, ql, dl, bits)
    for topk in (None, 2, 5):
        ref = np.mean([naive.ap_tie_aware_bruteforce(dist[i], g[i] > 0, topk)
                       for i in range(len(q))])
        got = M.mean_average_precision(q, db, ql, dl, topk=topk, ties="average", bits=bits)
        assert got == pytest.approx(ref, abs=1e-12)
    for k in (1, 3, 7, 10):
        ref = np.mean([naive.ndcg_tie_aware_bruteforce(dist[i], g[i], k) for i in range(len(q))])
        assert M.ndcg(q, db, ql, dl, k, ties="average", bits=bits) == pytest.approx(ref, abs=1e-12)
        rp = np.mean([np.mean([(g[i][o][:k] > 0).sum() / min(k, n) for o in naive.tie_orderings(dist[i])])
                      for i in range(len(q))])
        assert M.precision_at_k(q, db, ql, dl, k, ties="average", bits=bits) == pytest.approx(rp)


def test_map_equals_sklearn_without_ties():
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(0)
    bits = 16
    # database item i has exactly i one-bits: every distance to the zero query differs
    signs = np.zeros((bits + 1, bits), np.uint8)
    for i in range(bits + 1):
        signs[i, :i] = 1
    perm = rng.permutation(bits + 1)
    db = pack_codes(signs[perm])
    q = pack_codes(np.zeros((1, bits)))
    dl = rng.integers(0, 2, bits + 1)
    dl[0] = 1
    ql = np.array([1])
    dist = naive.hamming(q, db, bits)[0]
    assert len(np.unique(dist)) == bits + 1
    ref = average_precision_score(dl == 1, -dist)
    for ties in ("index", "average", "deephash"):
        assert M.mean_average_precision(q, db, ql, dl, ties=ties, bits=bits) == pytest.approx(ref)


@pytest.mark.parametrize("bits,multi", CASES)
def test_deephash_matches_calc_top_map(bits, multi):
    rng = np.random.default_rng(bits + 7 * multi)
    q, db, ql, dl = make(rng, 6, 70, bits, multi)
    qB = naive.unpack(q, bits).astype(np.float32) * 2 - 1
    rB = naive.unpack(db, bits).astype(np.float32) * 2 - 1
    onehot = (lambda y: np.eye(3, dtype=np.float32)[y]) if not multi else (lambda y: y.astype(np.float32))
    for topk in (5, 30, 70, 100):
        ref = naive.calc_top_map(rB, qB, onehot(dl), onehot(ql), topk)
        got = M.mean_average_precision(q, db, ql, dl, topk=topk, ties="deephash", bits=bits)
        assert got == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("bits,multi", CASES)
def test_ndcg_precision_recall_match_naive(bits, multi):
    rng = np.random.default_rng(bits + 11 * multi)
    q, db, ql, dl = make(rng, 6, 60, bits, multi, n_classes=4)
    for k in (1, 7, 60, 100):
        assert M.ndcg(q, db, ql, dl, k, bits=bits) == pytest.approx(
            naive.mean_ndcg(q, db, ql, dl, bits, k), abs=1e-12)
        p, r = naive.precision_recall_at_k(q, db, ql, dl, bits, k)
        assert M.precision_at_k(q, db, ql, dl, k, bits=bits) == pytest.approx(p)
        assert M.recall_at_k(q, db, ql, dl, k, bits=bits) == pytest.approx(r)


@pytest.mark.parametrize("bits,multi", CASES)
def test_radius_metrics_match_naive(bits, multi):
    rng = np.random.default_rng(bits + 13 * multi)
    q, db, ql, dl = make(rng, 9, 50, bits, multi)
    for radius in (0, 1, 2, bits // 2, bits):
        P, E, Rc = naive.radius_stats(q, db, ql, dl, bits, radius)
        p, frac = M.precision_within_radius(q, db, ql, dl, radius=radius, bits=bits)
        assert p == pytest.approx(P.mean()) and frac == pytest.approx(E.mean())
        ps, _ = M.precision_within_radius(q, db, ql, dl, radius=radius, bits=bits, empty="skip")
        assert ps == pytest.approx(P[~E].mean() if (~E).any() else 0.0)
    r, prec, rec, empty = M.precision_recall_curve(q, db, ql, dl, bits=bits)
    np.testing.assert_array_equal(r, np.arange(bits + 1))
    for radius in range(bits + 1):
        P, E, Rc = naive.radius_stats(q, db, ql, dl, bits, radius)
        assert prec[radius] == pytest.approx(P.mean())
        assert rec[radius] == pytest.approx(Rc.mean())
        assert empty[radius] == pytest.approx(E.mean())


# --------------------------------------------------------------------------- adversarial

def test_all_equal_codes():
    bits, n = 24, 40
    db = np.zeros((n, 3), np.uint8)
    q = np.zeros((4, 3), np.uint8)
    rng = np.random.default_rng(1)
    ql, dl = rng.integers(0, 2, 4), rng.integers(0, 2, n)
    # every item at distance 0: ties by index = database order
    assert M.mean_average_precision(q, db, ql, dl, bits=bits) == pytest.approx(
        naive.mean_ap(q, db, ql, dl, bits))
    # tie-aware AP of one big tie: (1/R) * sum_t (r/n) (1 + (t-1)(r-1)/(n-1)) / t
    dist, g = per_query(q, db, ql, dl, bits)
    ref = np.mean([naive.ap_tie_aware_direct(dist[i], g[i] > 0) for i in range(4)])
    assert M.mean_average_precision(q, db, ql, dl, ties="average", bits=bits) == pytest.approx(ref)
    p, frac = M.precision_within_radius(q, db, ql, dl, bits=bits)
    assert frac == 0.0 and p == pytest.approx(np.mean([(dl == c).mean() for c in ql]))


def test_every_item_at_the_same_nonzero_distance():
    bits = 8
    db = np.zeros((10, 1), np.uint8)
    q = np.full((2, 1), 0b11100000, np.uint8)          # distance 3 to everything
    ql, dl = np.array([0, 1]), np.arange(10) % 2
    p, frac = M.precision_within_radius(q, db, ql, dl, radius=2, bits=bits)
    assert p == 0.0 and frac == 1.0                     # nothing within radius 2
    assert M.precision_within_radius(q, db, ql, dl, radius=2, bits=bits, empty="skip") == (0.0, 1.0)
    # expected precision of any prefix is the base rate in a full tie
    assert M.precision_at_k(q, db, ql, dl, 3, ties="average", bits=bits) == pytest.approx(0.5)
    assert M.mean_average_precision(q, db, ql, dl, ties="average", bits=bits) == pytest.approx(
        np.mean([naive.ap_tie_aware_direct(np.full(10, 3), dl == c) for c in ql]))


def test_query_without_relevant_items_counts_zero():
    rng = np.random.default_rng(2)
    bits = 12
    q, db, _, _ = make(rng, 3, 30, bits, False)
    ql = np.array([0, 1, 9])                            # class 9 never occurs in the database
    dl = rng.integers(0, 2, 30)
    full = naive.mean_ap(q, db, ql, dl, bits)
    assert M.mean_average_precision(q, db, ql, dl, bits=bits) == pytest.approx(full)
    two = naive.mean_ap(q[:2], db, ql[:2], dl, bits)
    assert full == pytest.approx(two * 2 / 3)
    for ties in ("index", "average"):
        assert M.recall_at_k(q[2:], db, ql[2:], dl, 5, ties=ties, bits=bits) == 0.0
        assert M.ndcg(q[2:], db, ql[2:], dl, 5, ties=ties, bits=bits) == 0.0
        assert M.mean_average_precision(q[2:], db, ql[2:], dl, ties=ties, bits=bits) == 0.0
    assert M.mean_average_precision(q[2:], db, ql[2:], dl, topk=5, ties="deephash", bits=bits) == 0.0


def test_k_larger_than_database():
    rng = np.random.default_rng(4)
    bits = 12
    q, db, ql, dl = make(rng, 5, 20, bits, False)
    big = M.mean_average_precision(q, db, ql, dl, topk=1000, bits=bits)
    assert big == pytest.approx(M.mean_average_precision(q, db, ql, dl, bits=bits))
    assert M.precision_at_k(q, db, ql, dl, 1000, bits=bits) == pytest.approx(
        np.mean([(dl == c).mean() for c in ql]))        # denominator min(k, n)
    assert M.recall_at_k(q, db, ql, dl, 1000, bits=bits) == pytest.approx(
        np.mean([1.0 if (dl == c).any() else 0.0 for c in ql]))


def test_memmap_database(tmp_path):
    rng = np.random.default_rng(6)
    bits = 48
    q, db, ql, dl = make(rng, 5, 70, bits, True)
    mm = np.memmap(tmp_path / "db.u8", dtype=np.uint8, mode="w+", shape=db.shape)
    mm[:] = db
    s1, pr1 = M.evaluate_codes(q, mm, ql, dl, bits, topk=30)
    s2, pr2 = M.evaluate_codes(q, db, ql, dl, bits, topk=30)
    assert s1 == s2 and pr1 == pr2


# --------------------------------------------------------------------------- evaluate_codes

@pytest.mark.parametrize("bits,multi", [(12, False), (24, True)])
def test_evaluate_codes_agrees_with_the_single_metrics(bits, multi):
    rng = np.random.default_rng(bits)
    q, db, ql, dl = make(rng, 8, 150, bits, multi)
    scalars, pr = M.evaluate_codes(q, db, ql, dl, bits, radius=2, topk=50)
    assert all(type(v) is float for v in scalars.values())
    f = dict(bits=bits)
    expect = {
        "map": M.mean_average_precision(q, db, ql, dl, **f),
        "map_tie_aware": M.mean_average_precision(q, db, ql, dl, ties="average", **f),
        "map_at_50": M.mean_average_precision(q, db, ql, dl, topk=50, **f),
        "map_at_50_tie_aware": M.mean_average_precision(q, db, ql, dl, topk=50, ties="average", **f),
        "ndcg_100": M.ndcg(q, db, ql, dl, 100, **f),
        "ndcg_100_tie_aware": M.ndcg(q, db, ql, dl, 100, ties="average", **f),
        "precision_100": M.precision_at_k(q, db, ql, dl, 100, **f),
        "precision_1000": M.precision_at_k(q, db, ql, dl, 1000, **f),
        "recall_100": M.recall_at_k(q, db, ql, dl, 100, **f),
        "recall_1000": M.recall_at_k(q, db, ql, dl, 1000, **f),
        "precision_hamming2": M.precision_within_radius(q, db, ql, dl, 2, **f)[0],
        "precision_hamming2_empty_fraction": M.precision_within_radius(q, db, ql, dl, 2, **f)[1],
    }
    for key, v in expect.items():
        assert scalars[key] == pytest.approx(v, abs=1e-12), key
    assert "recall_hamming2" in scalars
    r, prec, rec, _ = M.precision_recall_curve(q, db, ql, dl, bits=bits)
    assert [d["radius"] for d in pr] == list(range(bits + 1))
    assert [d["precision"] for d in pr] == pytest.approx(list(prec))
    assert [d["recall"] for d in pr] == pytest.approx(list(rec))
    assert set(pr[0]) == {"radius", "precision", "recall"}


def test_evaluate_codes_without_topk_has_no_map_at():
    rng = np.random.default_rng(0)
    q, db, ql, dl = make(rng, 3, 20, 12, False)
    scalars, pr = M.evaluate_codes(q, db, ql, dl, 12)
    assert not any(k.startswith("map_at") for k in scalars) and len(pr) == 13


# --------------------------------------------------------------------------- input checks

def test_metric_input_checks():
    rng = np.random.default_rng(0)
    q, db, ql, dl = make(rng, 3, 20, 12, False)
    with pytest.raises(ValueError, match="ties"):
        M.mean_average_precision(q, db, ql, dl, ties="random")
    with pytest.raises(ValueError, match="rows"):
        M.mean_average_precision(q, db, ql[:2], dl)
    with pytest.raises(TypeError, match="integer dtype"):
        M.mean_average_precision(q, db, ql.astype(float), dl.astype(float))
    with pytest.raises(ValueError, match="both single-label"):
        M.mean_average_precision(q, db, ql, np.eye(3, dtype=np.uint8)[dl])
    with pytest.raises(ValueError, match="only 0 and 1"):
        M.mean_average_precision(q, db, np.full((3, 2), 2), np.zeros((20, 2)))
    with pytest.raises(ValueError, match="label columns"):
        M.mean_average_precision(q, db, np.zeros((3, 2)), np.zeros((20, 3)))
    with pytest.raises(TypeError, match="uint8"):
        M.mean_average_precision(q.astype(np.int16), db, ql, dl)
    with pytest.raises(ValueError, match="padding bits"):
        M.mean_average_precision(q, np.full((20, 2), 255, np.uint8), ql, dl, bits=12)
    with pytest.raises(ValueError, match="topk must be >= 1"):
        M.mean_average_precision(q, db, ql, dl, topk=0)
    with pytest.raises(ValueError, match="radius"):
        M.precision_within_radius(q, db, ql, dl, radius=-1)
    with pytest.raises(ValueError, match="empty"):
        M.precision_within_radius(q, db, ql, dl, empty="nan")


def test_harmonic_numbers_match_exact_sums_across_the_table_limit():
    import math
    xs = np.array([0, 1, 2, 6, 7, 8, 9, 50, 1000, 123457])
    exact = np.array([math.fsum(1.0 / t for t in range(1, x + 1)) for x in xs])
    got = M.harmonic(xs)
    assert np.allclose(got, exact, rtol=1e-14, atol=0), got - exact
    # differences of nearby large arguments (the tie-aware AP uses H(b) - H(a))
    d = M.harmonic(np.array([123457])) - M.harmonic(np.array([123450]))
    assert abs(d[0] - math.fsum(1.0 / t for t in range(123451, 123458))) < 1e-13


@pytest.mark.parametrize("bits,multi", [(12, False), (12, True), (5, False)])
def test_shard_passes_merge_to_the_whole_database(bits, multi):
    """The public shard API (the Dask path's pieces, run here in one process): shards with an
    empty one and boundaries inside ties give every key of evaluate_codes, and the naive mAP,
    mAP@k and NDCG@100 (ties by global index)."""
    rng = np.random.default_rng(40 + bits + multi)
    q, db, ql, dl = make(rng, 7, 130, bits, multi)
    bounds = [(0, 31), (31, 31), (31, 100), (100, 130)]
    ev = M.Evaluation(130, radius=1, topk=40)
    parts = [M.RankingPasses(q, db[s:e], ql, dl[s:e], bits, allow_empty=True) for s, e in bounds]
    hists = [p.histogram() for p in parts]
    accs = [p.rank_sums(ba, br, ev.cutoffs, ev.ndcg_k)
            for p, (ba, br) in zip(parts, M.shard_offsets(hists))]
    got, pr = ev.scores(M.merge_ranking_stats(hists, accs, 130, ev.cutoffs, ev.ndcg_k))
    ref, pr_ref = M.evaluate_codes(q, db, ql, dl, bits, radius=1, topk=40)
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert len(pr) == len(pr_ref) == bits + 1
    for row, row_ref in zip(pr, pr_ref):
        assert row.keys() == row_ref.keys()
        for key in row_ref:
            assert row[key] == pytest.approx(row_ref[key], abs=1e-12), key
    assert got["map"] == pytest.approx(naive.mean_ap(q, db, ql, dl, bits), abs=1e-12)
    assert got["map_at_40"] == pytest.approx(naive.mean_ap(q, db, ql, dl, bits, 40), abs=1e-12)
    assert got["ndcg_100"] == pytest.approx(naive.mean_ndcg(q, db, ql, dl, bits, 100), abs=1e-12)


def test_evaluation_checks_its_arguments():
    with pytest.raises(ValueError, match="topk must be >= 1, got 0"):
        M.Evaluation(10, topk=0)
    with pytest.raises(ValueError, match="radius must be >= 0, got -1"):
        M.Evaluation(10, radius=-1)
    rng = np.random.default_rng(0)
    q, db, ql, dl = make(rng, 3, 20, 12, False)
    st = M.ranking_stats(q, db, ql, dl, 12, cutoffs=[20])
    with pytest.raises(ValueError, match="cover 20 items, this evaluation was planned for 21"):
        M.Evaluation(21).scores(st)


@pytest.mark.parametrize("bits,multi", CASES)
def test_one_pass_path_matches_naive(bits, multi, monkeypatch):
    """A database in one piece with single labels takes the one-pass kernel (both passes
    in one sweep); the metrics still match the naive references, and multi-label data
    still takes the two passes."""
    monkeypatch.setattr(config, "SPLIT_MEMORY_BLOCKS", False)
    monkeypatch.setattr(config, "CHUNK_ROWS", 1 << 18)
    results = []
    real = M.RankingPasses.one_pass

    def spy(self, *args):
        out = real(self, *args)
        results.append(out)
        return out

    monkeypatch.setattr(M.RankingPasses, "one_pass", spy)
    test_map_index_ties_matches_naive(bits, multi)
    test_ndcg_precision_recall_match_naive(bits, multi)
    test_evaluate_codes_agrees_with_the_single_metrics(bits, multi)
    assert results and all((r is None) == multi for r in results)


@pytest.mark.parametrize("bits", [5, 64, 70, 130])
def test_one_pass_equals_the_two_passes(bits, monkeypatch):
    """Histograms equal and sums bitwise equal: the same items summed in the same order."""
    monkeypatch.setattr(config, "SPLIT_MEMORY_BLOCKS", False)
    monkeypatch.setattr(config, "CHUNK_ROWS", 1 << 18)
    rng = np.random.default_rng(bits)
    q, db, ql, dl = make(rng, 9, 301, bits, False, n_classes=4)
    passes = M.RankingPasses(q, db, ql, dl, bits)
    cut = np.array([1, 10, 64, 300, 301])
    hist, acc = passes.one_pass(cut, 50)
    h2 = passes.histogram()
    (ba, br), = M.shard_offsets([h2])
    np.testing.assert_array_equal(hist, h2)
    np.testing.assert_array_equal(acc, passes.rank_sums(ba, br, cut, 50))
