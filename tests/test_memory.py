"""Memory: the training estimate against a measured peak, the limits it honours, and search /
encoding of an ``np.memmap`` database under a data-size cap smaller than the database.

The cap is ``RLIMIT_DATA`` (``ulimit -d``): it bounds every private allocation (numpy arrays,
the heap) but not a read-only file mapping, so a memmap database may be larger than the cap
while any copy of it is refused with ``MemoryError``. (``RLIMIT_AS`` would also count the
mapping itself.) bench/memmap.py runs the same check on 200M codes (1.6 GB).
"""
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

from tests.conftest import ROOT
from vdsh_numba import VDSH
from vdsh_numba.memory import available_bytes


def test_estimate_bounds_the_measured_peak():
    rng = np.random.default_rng(0)
    n, d, L, w, k = 2000, 48, 3, 128, 16
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 10, n)
    VDSH(bits=k, depth=L, width=w, sweeps=1).fit(X[:50], y[:50])   # compile outside the trace
    tracemalloc.start()
    try:
        VDSH(bits=k, depth=L, width=w, sweeps=2).fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    est = VDSH(bits=k, depth=L, width=w, sweeps=2).training_bytes(n, d, 10)
    assert peak <= est <= 2.5 * peak, (peak, est)


def _python(code, timeout=300):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=timeout)


def test_available_bytes_honours_rlimits():
    r = _python("""
        import resource
        from vdsh_numba.memory import available_bytes, _proc_kib
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, resource.RLIM_INFINITY))
        b, why = available_bytes()
        assert b <= 6 * 2**30 - _proc_kib("/proc/self/status", "VmSize") + 2**20, b
        print(why)
        resource.setrlimit(resource.RLIMIT_DATA, (2**30, resource.RLIM_INFINITY))
        b, why = available_bytes()
        assert b <= 2**30 - _proc_kib("/proc/self/status", "VmData") + 2**20, b
        print(why)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["['RLIMIT_AS (ulimit -v)']", "['RLIMIT_DATA (ulimit -d)']"]
    b, why = available_bytes()
    assert b is None or b > 0


CAPPED = """
    import resource, numpy as np
    from vdsh_numba.memory import _proc_kib
    def cap(extra):
        lim = _proc_kib("/proc/self/status", "VmData") + extra
        resource.setrlimit(resource.RLIMIT_DATA, (lim, resource.RLIM_INFINITY))
        return lim
    path = {path!r}
    db = np.load(path, mmap_mode="r")
"""


@pytest.fixture(scope="module")
def db_file(tmp_path_factory):
    """2M random 64-bit codes (16 MB) as a .npy file, and 8 queries (3 planted database rows)."""
    n = 2_000_000
    p = tmp_path_factory.mktemp("memmap") / "db.npy"
    rng = np.random.default_rng(0)
    a = np.lib.format.open_memmap(p, mode="w+", dtype=np.uint8, shape=(n, 8))
    a[:] = np.frombuffer(rng.bytes(8 * n), np.uint8).reshape(n, 8)
    a.flush()
    del a
    return p, n


def test_search_of_a_memmap_database_stays_under_a_cap_smaller_than_it(db_file):
    path, n = db_file
    r = _python(CAPPED.format(path=str(path)) + """
    from vdsh_numba import HammingIndex
    rng = np.random.default_rng(1)
    q = np.ascontiguousarray(np.concatenate([db[[5, 1_234_567, len(db) - 1]],
                                             rng.integers(0, 256, (5, 8), dtype=np.uint8)]))
    ref = HammingIndex(64)                 # the reference, in memory, before the cap
    ref.add(np.array(db))
    D0, I0 = ref.search(q, 50)
    H0 = ref.histogram(q)
    L0 = ref.range_search(q, 18)
    del ref
    lim = cap(8 * 2**20)                   # 8 MiB more than now: half the database's 16 MB
    try:
        np.array(db)
        raise SystemExit("the cap does not bite: a copy of the database was allowed")
    except MemoryError:
        pass
    index = HammingIndex(64)
    index.add(db)
    D, I = index.search(q, 50)
    H = index.histogram(q)
    L = index.range_search(q, 18)
    assert (D == D0).all() and (I == I0).all() and (H == H0).all()
    assert all((a == b).all() for a, b in zip(L, L0))
    assert I[:3, 0].tolist() == [5, 1_234_567, len(db) - 1] and (D[:3, 0] == 0).all()
    print("ok", _proc_kib("/proc/self/status", "VmData") <= lim)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "True"]


def test_encoding_a_memmap_database_stays_under_a_cap(tmp_path):
    from vdsh_numba import pipeline
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 64)).astype(np.float32)
    m = VDSH(bits=16, depth=2, width=32, sweeps=2, first_width=0).fit(X, np.arange(300) % 5)
    m.save(tmp_path / "m.npz")
    big = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32,
                                    shape=(100_000, 64))          # 25.6 MB
    for s in range(0, big.shape[0], 20_000):
        big[s:s + 20_000] = rng.standard_normal((20_000, 64))
    big.flush()
    del big
    ref = pipeline.encode.encode_rows(m, np.load(tmp_path / "X.npy"))
    np.save(tmp_path / "ref.npy", ref)
    r = _python(CAPPED.format(path=str(tmp_path / "X.npy")) + f"""
    from vdsh_numba import pipeline
    from vdsh_numba.methods.base import load_model
    m = load_model({str(tmp_path / "m.npz")!r})
    ref = np.load({str(tmp_path / "ref.npy")!r})
    pipeline.encode.encode_rows(m, db[:100])                 # compile before the cap
    cap(16 * 2**20)                                  # below the 25.6 MB of features
    try:
        np.array(db)
        raise SystemExit("the cap does not bite")
    except MemoryError:
        pass
    codes = pipeline.encode.encode_rows(m, db)
    assert (codes == ref).all()
    print("ok")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok"]


def test_metrics_of_a_memmap_database_stay_under_a_cap(db_file, tmp_path):
    """Codes and labels both memmaps; the metrics under the cap equal a numpy reference
    (full stable argsort, ties by index) computed in memory before the cap."""
    path, n = db_file
    labels = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype=np.uint8, shape=(n,))
    labels[:] = np.random.default_rng(2).integers(0, 10, n)
    labels.flush()
    del labels
    r = _python(CAPPED.format(path=str(path)) + f"""
    from vdsh_numba.search import metrics
    y = np.load({str(tmp_path / "y.npy")!r}, mmap_mode="r")
    q = np.ascontiguousarray(db[[3, 999_999, 1_500_000, 7]]); yq = np.array([y[3], 4, y[1_500_000], 9], np.uint8)
    ref_ap, ref_p2, ref_p100 = [], [], []
    words, yy = np.array(db).view(np.uint64)[:, 0], np.array(y)
    for i in range(len(q)):                              # the reference, in memory, before the cap
        d = np.bitwise_count(words ^ q[i:i + 1].view(np.uint64)[0])
        rel = yy[np.argsort(d, kind="stable")] == yq[i]
        hits = np.cumsum(rel)
        ref_ap.append((hits[rel] / (np.flatnonzero(rel) + 1)).sum() / rel.sum())
        ref_p2.append((yy[d <= 2] == yq[i]).mean() if (d <= 2).any() else 0.0)
        ref_p100.append(rel[:100].mean())
    del words, yy, d, rel, hits
    metrics.evaluate_codes(q, np.array(db[:1000]), yq, np.array(y[:1000]), 64)   # compile first
    cap(8 * 2**20)                                       # half the 16 MB of codes
    for big in (db, y):
        try:
            np.array(big, dtype=np.int64)
            raise SystemExit("the cap does not bite")
        except MemoryError:
            pass
    p2, _ = metrics.precision_within_radius(q, db, yq, y, 2, bits=64)
    m = metrics.mean_average_precision(q, db, yq, y, ties="index", bits=64)
    s, _ = metrics.evaluate_codes(q, db, yq, y, 64)
    assert abs(m - np.mean(ref_ap)) < 1e-12 and abs(s["map"] - m) < 1e-12, (m, np.mean(ref_ap))
    assert abs(p2 - np.mean(ref_p2)) < 1e-12 and abs(s["precision_hamming2"] - p2) < 1e-12
    assert abs(s["precision_100"] - np.mean(ref_p100)) < 1e-12
    print("ok")
    """)
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.split() == ["ok"]
