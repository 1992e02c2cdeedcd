"""A database larger than the memory cap: HammingIndex on an np.memmap of 200M 64-bit codes (1.6 GB).

    python bench/memmap.py [--n 200000000] [--cap-mib 256] [--dir /tmp] [--keep]

Writes random codes to ``<dir>/vdsh_memmap_<n>.npy`` (reused when present), compiles the kernels
on a small in-memory database, then caps the process's data size (``RLIMIT_DATA`` = current
data size + ``--cap-mib``; a read-only file mapping does not count, every copy does) and runs
top-k search, the distance histogram and range search on the memmap. Prints times, the codes
streamed per second, the data size and the peak anonymous resident memory (sampled), and checks
planted queries (database rows) come back first at distance 0. Then labels (another n bytes,
a memmap too) and every metric of the evaluate stage (``metrics.evaluate_codes``: mAP, tie-aware
mAP, P@k, NDCG, radius metrics, PR curve) under the same cap, with its time and peak memory.
"""
import argparse
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vdsh_numba import HammingIndex
from vdsh_numba.search import metrics  # noqa: E402


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class PeakAnon(threading.Thread):
    """Samples RssAnon (anonymous resident bytes: not the file pages of the memmap)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, status("RssAnon"))
            time.sleep(0.005)


def make(path, n, seed=0):
    if path.exists() and np.load(path, mmap_mode="r").shape == (n, 8):
        return 0.0
    t = time.perf_counter()
    a = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 8))
    rng = np.random.default_rng(seed)
    step = 1 << 24
    for s in range(0, n, step):
        e = min(s + step, n)
        a[s:e] = np.frombuffer(rng.bytes(8 * (e - s)), np.uint8).reshape(-1, 8)
    a.flush()
    del a
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000_000)
    ap.add_argument("--cap-mib", type=int, default=256)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    a = ap.parse_args()
    path = Path(a.dir) / f"vdsh_memmap_{a.n}.npy"
    gen = make(path, a.n)
    size = path.stat().st_size
    print(f"database: {a.n:,} codes x 64 bits = {size / 1e9:.2f} GB in {path}"
          + (f" (written in {gen:.1f} s)" if gen else " (reused)"))

    warm = HammingIndex(64)                     # compile outside the cap
    small = np.random.default_rng(1).integers(0, 256, (5000, 8), dtype=np.uint8)
    warm.add(small)
    warm.search(small[:4], 10), warm.histogram(small[:4]), warm.range_search(small[:4], 3)
    y_small = (np.arange(5000) % 10).astype(np.uint8)
    metrics.evaluate_codes(small[:4], small, y_small[:4], y_small, 64)
    del warm

    base = status("VmData")
    cap = base + a.cap_mib * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.RLIM_INFINITY))
    print(f"cap: RLIMIT_DATA = data size now {base / 2**20:.0f} MiB + {a.cap_mib} MiB "
          f"({cap / 2**20:.0f} MiB; the database is {size / 2**20:.0f} MiB)")
    db = np.load(path, mmap_mode="r")
    if size > (a.cap_mib + 64) * 2**20:
        try:
            np.array(db[: (a.cap_mib + 64) * 2**20 // 8])
            print("WARNING: the cap does not bite (a copy larger than it was allowed)")
        except MemoryError:
            print("the cap bites: a copy of (cap + 64 MiB) of the database is refused")
    plant = [0, a.n // 2 + 12345, a.n - 1]
    rng = np.random.default_rng(2)
    q = np.ascontiguousarray(np.concatenate([db[plant], rng.integers(0, 256, (a.queries - 3, 8), dtype=np.uint8)]))
    index = HammingIndex(64)
    index.add(db)
    mon = PeakAnon()
    mon.start()
    rows = []
    t = time.perf_counter()
    D, I = index.search(q, a.k)
    rows.append(("search top-%d" % a.k, time.perf_counter() - t))
    assert I[:3, 0].tolist() == plant and (D[:3, 0] == 0).all(), (I[:3, 0], D[:3, 0])
    t = time.perf_counter()
    H = index.histogram(q)
    rows.append(("histogram", time.perf_counter() - t))
    assert (H.sum(axis=1) == a.n).all()
    t = time.perf_counter()
    lims, _, _ = index.range_search(q, 6)
    rows.append(("range_search r=6", time.perf_counter() - t))
    assert np.all(np.diff(lims)[:3] >= 1)    # the planted rows themselves
    mon.stop = True
    mon.join()
    for name, s in rows:
        print(f"{name:>18}: {s:6.2f} s  ({a.queries * a.n / s / 1e9:.2f} G code comparisons/s)")
    print(f"data size after: {status('VmData') / 2**20:.0f} MiB (cap {cap / 2**20:.0f} MiB); "
          f"peak anonymous resident {mon.peak / 2**20:.0f} MiB; planted queries found at distance 0")

    lpath = Path(a.dir) / f"vdsh_memmap_labels_{a.n}.npy"     # labels: n bytes, a memmap too
    try:
        y = np.lib.format.open_memmap(lpath, mode="w+", dtype=np.uint8, shape=(a.n,))
        for s in range(0, a.n, 1 << 20):
            y[s:s + (1 << 20)] = np.arange(s, min(s + (1 << 20), a.n), dtype=np.int32) % 10
        y.flush()
        del y
        y = np.load(lpath, mmap_mode="r")
        yq = np.concatenate([y[plant], np.arange(a.queries - 3) % 10]).astype(np.uint8)
        mon = PeakAnon()
        mon.start()
        t = time.perf_counter()
        scal, _ = metrics.evaluate_codes(q, db, yq, y, 64)
        dt = time.perf_counter() - t
        mon.stop = True
        mon.join()
        print(f"metrics (evaluate_codes, every metric, two passes): {dt:.2f} s under the cap "
              f"({2 * a.queries * a.n / dt / 1e9:.2f} G item visits/s); mAP {scal['map']:.6f}, "
              f"tie-aware {scal['map_tie_aware']:.6f}, P@100 {scal['precision_100']:.4f}; "
              f"data size {status('VmData') / 2**20:.0f} MiB, peak anonymous resident "
              f"{mon.peak / 2**20:.0f} MiB")
    except MemoryError as e:
        print(f"metrics: refused under the cap ({e})")
    finally:
        lpath.unlink(missing_ok=True)
        if not a.keep:
            path.unlink()


if __name__ == "__main__":
    main()
