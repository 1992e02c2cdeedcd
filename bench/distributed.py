"""Sharded Hamming search on Dask: throughput at 1 and 2 workers against one process.

    python bench/distributed.py                # 100M codes of 64 bits (800 MB), 1,000 queries, top-10
    python bench/distributed.py --n 10000000   # a smaller run

The codes are generated shard by shard on the workers (never gathered to the client); the
single-process anchor runs in a subprocess over the same codes (same generator). Prints the
medians, the speed-ups and the client's peak memory (ru_maxrss), which must stay < 200 MB.
"""
from __future__ import annotations

import os
import sys

# this file's name shadows the `distributed` package when run as a script: drop its folder
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import json
import resource
import statistics
import subprocess
import time

import numpy as np

BLOCK = 1_000_000  # rows per generator block: data do not depend on the sharding


def gen(start, stop, seed):
    """Codes of global rows start..stop (multiples of BLOCK, except the end)."""
    out = []
    for b in range(start // BLOCK, (stop + BLOCK - 1) // BLOCK):
        s, e = max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
        blk = np.random.default_rng([seed, b]).integers(0, 256, (BLOCK, 8), dtype=np.uint8)
        out.append(blk[s - b * BLOCK:e - b * BLOCK])
    return np.ascontiguousarray(np.concatenate(out))


def queries(nq, seed):
    return np.random.default_rng([seed, 10**6]).integers(0, 256, (nq, 8), dtype=np.uint8)


def single_process(n, nq, k, repeats, seed):
    from vdsh_numba.search.hamming import HammingIndex
    idx = HammingIndex(64)
    for s in range(0, n, BLOCK * 10):
        idx.add(gen(s, min(n, s + BLOCK * 10), seed))
    q = queries(nq, seed)
    idx.search(q[:2], k)  # compile
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        D, I = idx.search(q, k)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), D, I


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000_000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.single:
        t, D, I = single_process(a.n, a.nq, a.k, a.repeats, a.seed)
        print(json.dumps({"seconds": t, "D": D[:5].tolist(), "I": I[:5].tolist()}))
        return
    from vdsh_numba.search.distributed import ShardedHammingIndex, local_cluster
    q = queries(a.nq, a.seed)
    res = {}
    for workers in (1, 2):
        # one thread (one core) per worker: 1 worker uses one core, 2 workers both
        cluster, client = local_cluster(n_workers=workers, threads_per_worker=1)
        try:
            sh = ShardedHammingIndex(64, client)
            shard = max(BLOCK, (a.n // (2 * workers) // BLOCK) * BLOCK)
            t = time.perf_counter()
            sh.add_generated(gen, a.n, shard, seed=a.seed)
            sh.persist()
            gen_s = time.perf_counter() - t
            sh.search(q[:2], a.k)  # compile on the workers
            ts = []
            for _ in range(a.repeats):
                t = time.perf_counter()
                D, I = sh.search(q, a.k)
                ts.append(time.perf_counter() - t)
            res[workers] = (statistics.median(ts), gen_s, sh.nshards, D, I)
        finally:
            client.close()
            cluster.close()
    out = subprocess.run([sys.executable, __file__, "--single", "--n", str(a.n), "--nq", str(a.nq),
                          "--k", str(a.k), "--repeats", str(a.repeats), "--seed", str(a.seed)],
                         capture_output=True, text=True, check=True)
    single = json.loads(out.stdout.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.n:,} codes x 64 bits ({a.n * 8 / 1e6:.0f} MB), {a.nq} queries, top-{a.k}, median of {a.repeats}")
    print(f"single process (2 threads): {single['seconds']:.3f} s  ({a.nq / single['seconds']:.0f} queries/s)")
    for w, (t, g, ns, D, I) in res.items():
        same = D[:5].tolist() == single["D"] and I[:5].tolist() == single["I"]
        print(f"dask {w} worker(s), {ns} shards: {t:.3f} s ({a.nq / t:.0f} queries/s), "
              f"{single['seconds'] / t:.2f}x single process; generated on workers in {g:.1f} s; "
              f"same top-k as single process: {same}")
    print(f"2 workers vs 1 worker: {res[1][0] / res[2][0]:.2f}x")
    print(f"client peak memory (ru_maxrss): {peak_mb:.0f} MB (limit 200 MB)")


if __name__ == "__main__":
    main()
