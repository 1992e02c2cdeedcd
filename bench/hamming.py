"""Benchmark: vdsh_numba.HammingIndex and metrics against faiss-cpu IndexBinaryFlat.

Same random data for both, measured in the same run, 2 threads each, medians of
``--repeats`` runs, ours and faiss interleaved (the first call, which includes numba
compilation or cache loading, is reported apart). Prints ratios (faiss time / ours);
> 1 means faster than faiss. The machine's limit is measured in the same run: a plain
loop summing ``popcount(q ^ x)`` over the same queries and database ("plain loop"),
no top-k; the top-k kernels' rates are printed as a fraction of it.

Both sides' OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE`` unless set
otherwise): spinning idle threads of one side's pool take the cores from the other.

Reliability: every measurement prints the 1-minute load average before and after it
and, measured directly over the measurement's own interval, the CPU time that OTHER
processes used: the machine's busy time from ``/proc/stat`` (user, nice, system, irq,
softirq, steal jiffies) minus this process's own CPU time (``os.times``: user +
system, all its threads, numba's and faiss's included), divided by the wall-clock
interval, in cores (every measurement lasts at least ``MIN_WINDOW`` = 1 s, repeating
the calls past ``--repeats`` if needed, so that the tick counters resolve it). A
measurement is marked UNRELIABLE when other processes used
more than 0.5 of a core per core on average (``others > 0.5 * cores``): they took
time from one side of the comparison. The load average is printed for information
only: it counts the benchmark's own threads (a 2-thread run on 2 cores reads about 2
after a minute by itself), so a rule on it could never pass. Where ``/proc/stat`` is
missing the rule falls back to the load average (above 0.5 per core: UNRELIABLE).

    python bench/hamming.py [--repeats 5] [--threads 2] [--quick] [--cpu-time]

``--cpu-time`` times each call by the process's CPU time instead of the wall clock:
with ``--threads 1`` on a shared machine, a measure of the work each side does that
other processes disturb less (they still share caches and cores); the load marks
stay. Wall-clock ratios at 2 threads on an idle machine are the claims.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep at once instead of spinning (libgomp spins for a while after
# every parallel region by default). faiss's wheel bundles its own libgomp and numba's
# "omp" threading layer uses the system's: two thread pools, and the one that has just
# run spins on the cores the other one needs next, which slows whichever side runs second
# in an interleaved comparison (measured here: our top-1000 over 59,000 took 12.0 ms right
# after faiss calls, 6.4 ms alone). Set before numba or faiss start their runtimes;
# an OMP_WAIT_POLICY already in the environment is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vdsh_numba.search import metrics  # noqa: E402
from vdsh_numba.search.hamming import HammingIndex, popcount64  # noqa: E402

NCPU = os.cpu_count() or 1


@numba.njit(parallel=True, cache=True)
def plain_popcount_loop(qw, dbt, out):
    """The machine's practical limit: sum of popcount(q ^ x) over the same memory.

    ``dbt`` is the database word-major, ``(W, n)``: one contiguous, vectorisable loop per
    word (a row-major loop over a runtime number of words does not vectorise).
    """
    for q in numba.prange(qw.shape[0]):
        s = np.uint64(0)
        for w in range(qw.shape[1]):
            x = qw[q, w]
            r = dbt[w]
            for j in range(r.shape[0]):
                s += popcount64(r[j] ^ x)
        out[q] = s


@numba.njit(parallel=True, cache=True)
def write_output(D, I):
    """The output alone: every ``(distance, index)`` pair of a top-k written once."""
    for q in numba.prange(D.shape[0]):
        for i in range(D.shape[1]):
            D[q, i] = i
            I[q, i] = i


def load():
    return os.getloadavg()[0]


def _busy_seconds():
    """Seconds of CPU time the whole machine has spent busy since boot, or ``None``."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:9]]       # user nice system idle iowait irq softirq steal
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy / os.sysconf("SC_CLK_TCK")


def snapshot():
    """``(wall, machine busy s, own CPU s, load)`` at one instant."""
    t = os.times()
    return time.perf_counter(), _busy_seconds(), t.user + t.system, load()


def others_cores(s0, s1):
    """CPU used by other processes between two snapshots, in cores (``None`` if unknown)."""
    wall = s1[0] - s0[0]
    if s0[1] is None or s1[1] is None or wall <= 0:
        return None
    return max(0.0, ((s1[1] - s0[1]) - (s1[2] - s0[2])) / wall)


def load_note(s0, s1):
    """``[load a -> b, others c cores]`` and UNRELIABLE when other processes used more than
    0.5 of a core per core over the interval (see the module docstring); the load
    average decides only where ``/proc/stat`` is missing."""
    l0, l1 = s0[3], s1[3]
    other = others_cores(s0, s1)
    if other is None:
        worst = max(l0, l1)
        ok = worst <= 0.5 * NCPU
        why = f"load > {0.5 * NCPU:.1f}"
        txt = "others n/a"
    else:
        ok = other <= 0.5 * NCPU
        why = f"others > {0.5 * NCPU:.1f} cores"
        txt = f"others {other:.2f} cores"
    flag = "" if ok else f"  UNRELIABLE ({why})"
    return f"[load {l0:.2f} -> {l1:.2f}, {txt}]{flag}", ok


CLOCK = time.perf_counter


#: Shortest measurement window (s): /proc/stat and os.times count in clock ticks (1/100 s),
#: so a window of 1 s resolves the other processes' share to about 0.02 cores.
MIN_WINDOW = 1.0


def timed(fns, repeats):
    """Medians of interleaved repeats of every function; first calls apart. Repeats go
    on past ``repeats`` (at most 20x) until the window lasts ``MIN_WINDOW`` seconds."""
    firsts = []
    for fn in fns:
        t = CLOCK()
        fn()
        firsts.append(CLOCK() - t)
    ts = [[] for _ in fns]
    start = time.perf_counter()
    r = 0
    while r < repeats or (time.perf_counter() - start < MIN_WINDOW and r < 20 * repeats):
        for i, fn in enumerate(fns):
            t = CLOCK()
            fn()
            ts[i].append(CLOCK() - t)
        r += 1
    return [statistics.median(x) for x in ts], firsts


def words(codes):
    W = -(-codes.shape[1] // 8)
    buf = np.zeros((codes.shape[0], 8 * W), np.uint8)
    buf[:, :codes.shape[1]] = codes
    return np.ascontiguousarray(buf.view(np.uint64))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time by process CPU time (use with --threads 1 on a shared machine)")
    args = ap.parse_args(argv)
    import faiss

    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    numba.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    nq = 1000
    n_small, n_big = (5900, 100_000) if args.quick else (59_000, 1_000_000)
    print(f"numba {numba.__version__} ({numba.get_num_threads()} threads), faiss {faiss.__version__} "
          f"({args.threads} threads), medians of >= {args.repeats} (more to fill a {MIN_WINDOW:.0f} s window), random codes, {NCPU} cores, "
          f"{'process CPU time' if args.cpu_time else 'wall clock'}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
          f"UNRELIABLE = other processes above {0.5 * NCPU:.1f} cores during the measurement")
    results = {}

    def data(bits, n):
        """Random packed codes (padding bits of the last byte zero)."""
        nb = -(-bits // 8)
        out = []
        for rows in (nq, n):
            c = rng.integers(0, 256, (rows, nb), dtype=np.uint8)
            c[:, -1] &= np.uint8((0xFF << (-bits % 8)) & 0xFF)
            out.append(c)
        return out

    def indexes(bits, db):
        ours = HammingIndex(bits)
        ours.add(db)
        theirs = faiss.IndexBinaryFlat(bits)
        theirs.add(db)
        return ours, theirs

    def compare(key, name, ours, theirs, check):
        s0 = snapshot()
        (t_ours, t_faiss), (first, _) = timed([ours, theirs], args.repeats)
        note, ok = load_note(s0, snapshot())
        check()
        results[key] = (t_ours, t_faiss, ok)
        print(f"{name:<40} ours {t_ours * 1e3:8.1f} ms (first {first * 1e3:7.1f})  faiss "
              f"{t_faiss * 1e3:8.1f} ms  faiss/ours {t_faiss / t_ours:6.2f}x  {note}", flush=True)

    def plain(key, q, db):
        qw, dbt = words(q), np.ascontiguousarray(words(db).T)
        out = np.empty(nq, dtype=np.uint64)
        s0 = snapshot()
        (t,), _ = timed([lambda: plain_popcount_loop(qw, dbt, out)], args.repeats)
        note, ok = load_note(s0, snapshot())
        results[key] = (t, ok)
        rate = nq * db.shape[0] / t / 1e9
        print(f"{'  plain loop, same data':<40} {t * 1e3:8.1f} ms = {rate:5.2f} G distances/s  {note}",
              flush=True)
        return t

    def floor(key, k, t_plain):
        """The output's own cost: fresh ``D``/``I`` of ``nq x k`` written once (no search).
        Plain loop + this is a floor no top-k can go under."""
        s0 = snapshot()
        (t,), _ = timed([lambda: write_output(np.empty((nq, k), np.int32),
                                              np.empty((nq, k), np.int64))], args.repeats)
        note, ok = load_note(s0, snapshot())
        t_o = results[key][0]
        print(f"{'  output alone (D, I allocated + written)':<40} {t * 1e3:8.1f} ms  {note}", flush=True)
        print(f"{'  plain loop + output':<40} {(t_plain + t) * 1e3:8.1f} ms = {t_plain / (t_plain + t):.2f} "
              f"of the plain loop's rate at best; the kernel is at {(t_plain + t) / t_o:.2f} of that floor",
              flush=True)
        results[key + "_floor"] = (t, ok)

    def topk(bits, n, k):
        """Ours vs faiss (bits % 8 == 0) and vs the plain loop on the same data."""
        q, db = data(bits, n)
        key = f"top{k}_{bits}_{n}"
        name = f"top-{k}, {nq} x {n}, {bits} bits"
        if bits % 8:                                   # faiss needs whole bytes: ours alone
            ours = HammingIndex(bits)
            ours.add(db)
            s0 = snapshot()
            (t_ours,), (first,) = timed([lambda: ours.search(q, k)], args.repeats)
            note, ok = load_note(s0, snapshot())
            results[key] = (t_ours, float("nan"), ok)
            print(f"{name:<40} ours {t_ours * 1e3:8.1f} ms (first {first * 1e3:7.1f})  (no faiss: "
                  f"bits % 8 != 0)  {note}", flush=True)
        else:
            ours, theirs = indexes(bits, db)

            def check():
                D1, _ = ours.search(q, k)
                D2, _ = theirs.search(q, k)
                assert np.array_equal(D1, D2), "distances differ from faiss"

            compare(key, name, lambda: ours.search(q, k), lambda: theirs.search(q, k), check)
        t_plain = plain(f"plain_{bits}_{n}", q, db)
        frac = t_plain / results[key][0]
        print(f"{'  top-k kernel / plain loop':<40} {frac:8.2f} of the plain loop's rate", flush=True)
        results[key + "_frac"] = frac
        if k >= 100:
            floor(key, k, t_plain)
        if bits % 8 == 0:
            return q, db, ours, theirs

    # --- top-k: 64 bits, then 128 and 256 bits (more words per code), odd widths ----------
    q, db_small, ours_small, fa_small = topk(64, n_small, 1000)
    topk(64, n_big, 10)
    topk(128, n_small, 1000)
    topk(128, n_big, 10)
    topk(256, n_big, 10)
    topk(12, n_big, 10)       # padded to one 64-bit word: the 64-bit path
    topk(48, n_big, 10)

    # --- range search (faiss keeps d < radius: ours radius r = faiss r + 1) ----------------
    # r = 20: about 110 hits per query (branch on empty sub-blocks); r = 24: about 1,800
    # (a hit per two sub-blocks or more: the branch-free writes)
    for r in (20, 24):
        def check_range(r=r):
            lims, _, _ = ours_small.range_search(q, r)
            lf, _, _ = fa_small.range_search(q, r + 1)
            assert np.array_equal(lims, lf), "range search counts differ from faiss"

        compare("range" if r == 20 else f"range{r}", f"range search r<={r}, {nq} x {n_small}",
                lambda r=r: ours_small.range_search(q, r),
                lambda r=r: fa_small.range_search(q, r + 1), check_range)

    # --- full ranking + mAP@all ----------------------------------------------------------
    labels_q = rng.integers(0, 10, nq)
    labels_db = rng.integers(0, 10, n_small)

    def ours_map():
        return metrics.mean_average_precision(q, db_small, labels_q, labels_db, bits=64)

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

    compare("map", f"full ranking + mAP@all, {nq} x {n_small}", ours_map, faiss_map, check_map)
    compare("rank", f"full ranking (search k={n_small}, D and I)", lambda: ours_small.search(q, n_small),
            lambda: fa_small.search(q, n_small), lambda: None)

    # --- targets (issue 16) --------------------------------------------------------------
    def line(label, value, target, ok_value, reliable):
        mark = "OK" if ok_value else "MISSED"
        print(f"  {label:<44} {value:<22} (target {target}) {mark}"
              f"{'' if reliable else '  [UNRELIABLE: other processes]'}")

    print("\ntargets:")
    for key, label in ((f"top1000_64_{n_small}", f"top-1000 over {n_small}, 64 bits"),
                       (f"top10_64_{n_big}", f"top-10 over {n_big}, 64 bits")):
        t_o, t_f, ok = results[key]
        pk = key.replace("top1000", "plain").replace("top10", "plain")
        frac = results[key + "_frac"]
        line(label + ": vs faiss", f"{t_f / t_o:6.2f}x", ">= 8x", t_f / t_o >= 8, ok)
        line(label + ": of plain loop", f"{frac:6.2f}", ">= 0.6", frac >= 0.6,
             ok and results[pk][1])
    for key in (f"top1000_128_{n_small}", f"top10_128_{n_big}"):
        t_o, t_f, ok = results[key]
        line(key.replace("_", " ") + ": vs faiss", f"{t_f / t_o:6.2f}x", ">= 5x", t_f / t_o >= 5, ok)
    t_map, _, ok = results["map"]
    if args.cpu_time or args.threads != 2:
        print(f"  {'full ranking + mAP@all':<44} {t_map * 1e3:6.1f} ms{'':<14} (the target, 74.6 ms, "
              f"is 2 threads, wall clock: not comparable)")
    else:
        line("full ranking + mAP@all", f"{t_map * 1e3:6.1f} ms", "<= 74.6 ms, the issue's 'today'",
             t_map <= 0.0746, ok)


if __name__ == "__main__":
    main()
