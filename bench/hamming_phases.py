"""Benchmark: where the time of an exact top-k goes (HammingIndex, CPU kernels).

Times each phase of ``HammingIndex.search`` on random codes and prints it next to the
plain popcount loop over the same data, measured in the same run (the anchor of
``bench/hamming.py``), with the 1-minute load average before and after and the rule of
``bench/hamming.py``: UNRELIABLE when other processes used more than 0.5 core per core
over the run (``/proc/stat`` minus this process's CPU time; the load average lags and
counts our own threads). The default is one thread and process CPU time, the steadier
measure on a shared machine. Medians of ``--repeats`` calls.

    python bench/hamming_phases.py [--n 59000] [--k 1000] [--bits 64] [--threads 1] [--repeats 15]

Phases (the kernels of :mod:`vdsh_numba.search.hamming`): the starting bounds from the
sample; the cache-sized path (``_topk_buckets``, where the database fits
``config.TOPK_FUSED_BYTES``: masks and distance bytes, offsets, bucket appends, output)
with the bound 0 (every row costs the vector compare and every mask the offset pass,
nothing is appended) and from the estimated bounds; the tiled sweep (databases beyond
the cache) with the bound 0 and from the estimated bounds (compress, key pass), and the
sort of its candidates (``_topk_finish``); the output alone; the whole ``search``. The
candidates per query of the bucket path are counted by a numpy replay of its bound on
the first 100 queries (``bucket_candidates``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")    # as bench/hamming.py

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hamming import load_note, plain_popcount_loop, snapshot, words, write_output  # noqa: E402
from vdsh_numba import config  # noqa: E402
from vdsh_numba.search import hamming as H  # noqa: E402


def bucket_candidates(q, db, bounds, k, rows):
    """Mean rows the bucket path appends per query: a numpy replay of its bound (rows
    below ``t`` appended a batch at a time, batches of 64, 128, ... up to ``rows`` rows,
    then ``t`` drops while the rows appended below it number ``k`` or more; the ragged
    tail counted with the last batch)."""
    bits = 8 * q.shape[1]
    x = np.unpackbits(q, axis=1).astype(np.int32)
    y = np.unpackbits(db, axis=1).astype(np.int32)
    dist = x.sum(1)[:, None] + y.sum(1)[None, :] - 2 * x @ y.T
    total = 0
    for i in range(q.shape[0]):
        t = int(bounds[i])
        cnt = np.zeros(bits + 2, np.int64)
        s, size = 0, 64
        while s < db.shape[0]:
            d = dist[i, s:s + size]
            s += size
            size = min(2 * size, rows)
            d = d[d < t]
            total += d.size
            cnt += np.bincount(d, minlength=bits + 2)
            while cnt[:t].sum() >= k:
                t -= 1
    return total / q.shape[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=59_000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--bits", type=int, default=64, help="a multiple of 8")
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--wall", action="store_true", help="wall clock instead of CPU time")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.bits % 8 or a.k >= a.n:
        ap.error("--bits must be a multiple of 8 and --k below --n")
    numba.set_num_threads(a.threads)
    clock = time.perf_counter if a.wall else time.process_time
    rng = np.random.default_rng(a.seed)
    q = rng.integers(0, 256, (a.nq, a.bits // 8), dtype=np.uint8)
    db = rng.integers(0, 256, (a.n, a.bits // 8), dtype=np.uint8)
    index = H.HammingIndex(a.bits)
    index.add(db)
    store = index._store
    qw = index._queries(q)
    W = qw.shape[1]
    nq, n, k = a.nq, a.n, a.k
    nb = H.n_blocks(nq)
    tile = max(1, config.TILE_ROWS // W)
    C = min(n, 2 * k + H.SUB_ROWS + min(2 * k, config.TOPK_BUFFER_EXTRA))
    bounds = H.sample_bounds(qw, store, k, nb)
    if bounds is None:
        bounds = np.full(nq, 64 * W + 1, np.int64)
    na0 = tile * k // n
    whole = store.whole()
    ck = np.empty((nq, C + H.SUB_ROWS), np.uint64)
    state = np.zeros((nq, 3), np.int64)
    D = np.empty((nq, k), np.int32)
    I = np.empty((nq, k), np.int64)
    kept = np.empty(nq, np.int64)
    dbt = np.ascontiguousarray(whole.T)
    dbtw = words(db).T.copy()
    out = np.empty(nq, np.uint64)

    def med(fn):
        fn()
        ts = []
        for _ in range(a.repeats):
            t = clock()
            fn()
            ts.append(clock() - t)
        return statistics.median(ts)

    batch = config.TOPK_BUCKET_BATCH
    bins = int(bounds.max())
    cap = k + batch * H.SUB_ROWS
    zero = np.zeros(nq, np.int64)

    def buckets(b, nbins):
        return lambda: H._topk_buckets(qw, dbt, b, k, batch, nbins, cap, D, I, kept, nb)

    def sweep(b, na):
        def run():
            state[:, 0] = 0
            state[:, 1] = b
            state[:, 2] = na
            H._topk_chunk(qw, whole, 0, ck, state, k, tile, nb)
        return run

    s0 = snapshot()
    t_plain = med(lambda: plain_popcount_loop(qw, dbtw, out))
    rows = [
        ("plain popcount loop (the anchor)", t_plain),
        ("sample bounds", med(lambda: H.sample_bounds(qw, store, k, nb))),
        ("bucket path, bound 0 (nothing appended)", med(buckets(zero, 1))),
        ("bucket path from the estimated bounds", med(buckets(bounds, bins))),
        ("tiled sweep, bound 0 (nothing appended)", med(sweep(0, 0))),
        ("tiled sweep from the estimated bounds", med(sweep(bounds, na0))),
    ]
    sweep(bounds, na0)()
    st = state.copy()
    rows.append(("  its sort (_topk_finish, buffers in memory)",
                 med(lambda: H._topk_finish(ck, st, D, I, 64 * W + 1, config.TOPK_PASS_BINS,
                                                  config.TOPK_DEEP_GAP, nb))))
    rows.append(("output alone (D, I allocated + written)",
                 med(lambda: write_output(np.empty((nq, k), np.int32), np.empty((nq, k), np.int64)))))
    rows.append(("search (all of it)", med(lambda: index.search(q, k))))
    note, _ = load_note(s0, snapshot())
    nc = bucket_candidates(q[:100], db, bounds[:100], k, batch * H.SUB_ROWS)
    print(f"top-{k} of {n} x {nq} queries, {a.bits} bits, {a.threads} thread(s), "
          f"{'wall clock' if a.wall else 'process CPU time'}, medians of {a.repeats}; "
          f"candidates per query: bucket path {nc:.0f}, tiled sweep {st[:, 0].mean():.0f}; {note}")
    if whole.nbytes > config.TOPK_FUSED_BYTES:
        print(f"  (search takes the tiled path here: {whole.nbytes} bytes > TOPK_FUSED_BYTES)")
    for name, t in rows:
        print(f"  {name:<46} {t * 1e3:8.2f} ms  = {t / t_plain:5.2f} x the plain loop")


if __name__ == "__main__":
    main()
