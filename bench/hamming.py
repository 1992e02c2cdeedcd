"""Benchmark: vdsh_numba.HammingIndex and metrics against faiss-cpu IndexBinaryFlat.

Same random data for both, measured in the same run, 2 threads each, medians of
``--repeats`` runs (first call, which includes numba compilation or cache loading,
is reported apart). Prints ratios (faiss time / ours); > 1 means faster than faiss.

    python bench/hamming.py [--repeats 5] [--threads 2] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vdsh_numba import metrics  # noqa: E402
from vdsh_numba.hamming import HammingIndex, popcount64  # noqa: E402


@numba.njit(parallel=True, cache=True)
def plain_popcount_loop(qw, dbw, out):
    """The machine's practical limit: sum of popcount(q ^ x) over the same memory."""
    for q in numba.prange(qw.shape[0]):
        x = qw[q, 0]
        s = 0
        for j in range(dbw.shape[0]):
            s += popcount64(dbw[j, 0] ^ x)
        out[q] = s


def timeit(fn, repeats):
    first = time.perf_counter()
    fn()
    first = time.perf_counter() - first
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), first


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    args = ap.parse_args(argv)
    import faiss

    numba.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    bits, nq = 64, 1000
    n_small, n_big = (5900, 100_000) if args.quick else (59_000, 1_000_000)
    q = rng.integers(0, 256, (nq, bits // 8), dtype=np.uint8)
    db_small = rng.integers(0, 256, (n_small, bits // 8), dtype=np.uint8)
    db_big = rng.integers(0, 256, (n_big, bits // 8), dtype=np.uint8)
    labels_q = rng.integers(0, 10, nq)
    labels_db = rng.integers(0, 10, n_small)
    print(f"numba {numba.__version__} ({numba.get_num_threads()} threads), faiss {faiss.__version__} "
          f"({args.threads} threads), medians of {args.repeats}, {bits}-bit random codes")
    rows = []

    def compare(name, ours, theirs, check=None):
        t_ours, first = timeit(ours, args.repeats)
        t_faiss, _ = timeit(theirs, args.repeats)
        if check is not None:
            check()
        rows.append((name, t_ours, t_faiss))
        print(f"{name:<44} ours {t_ours * 1e3:9.1f} ms  (first call {first * 1e3:7.1f} ms)  "
              f"faiss {t_faiss * 1e3:9.1f} ms  faiss/ours {t_faiss / t_ours:6.2f}x", flush=True)
        return t_ours, t_faiss

    ours_small = HammingIndex(bits)
    ours_small.add(db_small)
    fa_small = faiss.IndexBinaryFlat(bits)
    fa_small.add(db_small)
    ours_big = HammingIndex(bits)
    ours_big.add(db_big)
    fa_big = faiss.IndexBinaryFlat(bits)
    fa_big.add(db_big)

    def same_distances(a, b, k):
        def check():
            D1, _ = a.search(q, k)
            D2, _ = b.search(q, k)
            assert np.array_equal(D1, D2), "distances differ from faiss"
        return check

    compare(f"top-1000, {nq} x {n_small}", lambda: ours_small.search(q, 1000),
            lambda: fa_small.search(q, 1000), same_distances(ours_small, fa_small, 1000))
    t_k10, _ = compare(f"top-10, {nq} x {n_big}", lambda: ours_big.search(q, 10),
                       lambda: fa_big.search(q, 10), same_distances(ours_big, fa_big, 10))

    def ours_map():
        return metrics.mean_average_precision(q, db_small, labels_q, labels_db, bits=bits)

    def faiss_map():
        _, I = fa_small.search(q, n_small)           # the full ranking
        rel = labels_db[I] == labels_q[:, None]
        hits = np.cumsum(rel, axis=1)
        ranks = np.arange(1, n_small + 1)
        R = rel.sum(axis=1)
        return float(np.mean(np.where(R > 0, (rel * hits / ranks).sum(axis=1) / np.maximum(R, 1), 0)))

    def check_map():
        a, b = ours_map(), faiss_map()
        assert abs(a - b) < 1e-9, (a, b)

    t_map, t_fmap = compare(f"full ranking + mAP@all, {nq} x {n_small}", ours_map, faiss_map,
                            check_map)
    t_fs, _ = timeit(lambda: fa_small.search(q, n_small), args.repeats)
    print(f"{'  (faiss search k=' + str(n_small) + ' alone)':<44} {t_fs * 1e3:9.1f} ms  "
          f"faiss-search/ours-mAP {t_fs / t_map:6.2f}x")
    t_fr, _ = timeit(lambda: ours_small.search(q, n_small), max(1, args.repeats // 2))
    print(f"{'  (ours search k=' + str(n_small) + ', D and I)':<44} {t_fr * 1e3:9.1f} ms  "
          f"faiss-search/ours-search {t_fs / t_fr:6.2f}x")

    qw = q.view(np.uint64).copy()
    dbw = db_big.view(np.uint64).copy()
    out = np.empty(nq, dtype=np.int64)
    t_plain, _ = timeit(lambda: plain_popcount_loop(qw, dbw, out), args.repeats)
    dps = nq * n_big
    print(f"plain popcount loop, {nq} x {n_big}: {t_plain * 1e3:.1f} ms = {dps / t_plain / 1e9:.2f} "
          f"G distances/s; top-10 kernel {dps / t_k10 / 1e9:.2f} G/s = "
          f"{t_plain / t_k10:.2f} of the plain loop")

    print("\ntargets:")
    r1 = rows[0][2] / rows[0][1]
    r2 = rows[1][2] / rows[1][1]
    print(f"  top-1000 over {n_small}:   {r1:6.2f}x  (target >= 5x)   {'OK' if r1 >= 5 else 'MISSED'}")
    print(f"  top-10 over {n_big}:  {r2:6.2f}x  (target >= 1.5x) {'OK' if r2 >= 1.5 else 'MISSED'}")
    r3 = t_fs / t_map
    print(f"  mAP@all:                {t_map:.3f} s (target <= 0.15 s) "
          f"{'OK' if t_map <= 0.15 else 'MISSED'};  vs faiss k={n_small}: {r3:6.1f}x "
          f"(target >= 30x) {'OK' if r3 >= 30 else 'MISSED'}")


if __name__ == "__main__":
    main()
