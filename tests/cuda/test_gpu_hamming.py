"""GPU Hamming index (vdsh_numba.search.gpu_hamming) against the CPU index and tests/naive.py.

Exact equality everywhere: the CUDA backend returns the CPU index's (D, I), ties by index.
"""
import numpy as np
import pytest

from tests import naive
from vdsh_numba import config
from vdsh_numba.search import gpu_hamming
from vdsh_numba.search.hamming import HammingIndex


def _codes(rng, n, bits, levels=None):
    """Random codes; ``levels`` < bits draws from few distinct patterns (many ties)."""
    x = rng.integers(0, 2, size=(n, bits))
    if levels:
        x[:, levels:] = 0
    return naive.pack_codes(x)


def _pair(bits, db):
    cpu, gpu = HammingIndex(bits), HammingIndex(bits, backend="cuda")
    for block in db:
        cpu.add(block)
        gpu.add(block)
    return cpu, gpu


@pytest.mark.parametrize("bits,n,nq,k,levels", [
    (13, 61, 5, 7, None),     # one word, padding bits
    (64, 40, 4, 40, 5),       # k = n, heavy ties
    (70, 33, 3, 50, None),    # two words, k > n: padding
    (8, 50, 6, 9, 3),         # ties across the threshold distance and across segments
])
def test_search_equals_cpu_and_naive(bits, n, nq, k, levels):
    rng = np.random.default_rng(bits + n)
    db = _codes(rng, n, bits, levels)
    q = _codes(rng, nq, bits, levels)
    cpu, gpu = _pair(bits, [db[:n // 3], db[n // 3:]])
    S, _ = gpu_hamming.plan_segments(nq, n)
    assert S > 1 and -(-nq // config.CUDA_THREADS_PER_BLOCK) * S >= 2  # several blocks
    D, I = gpu.search(q, k)
    Dc, Ic = cpu.search(q, k)
    Dn, In = naive.search(q, db, bits, k)
    assert D.dtype == np.int32 and I.dtype == np.int64
    np.testing.assert_array_equal(D, Dc)
    np.testing.assert_array_equal(I, Ic)
    np.testing.assert_array_equal(D, Dn)
    np.testing.assert_array_equal(I, In)


@pytest.mark.parametrize("bits,radius,levels", [(16, 3, None), (9, 2, 4), (65, 30, None)])
def test_range_search_equals_cpu_and_naive(bits, radius, levels):
    rng = np.random.default_rng(radius)
    db = _codes(rng, 45, bits, levels)
    q = _codes(rng, 4, bits, levels)
    cpu, gpu = _pair(bits, [db])
    got = gpu.range_search(q, radius)
    for ref in (cpu.range_search(q, radius), naive.range_search(q, db, bits, radius)):
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    assert got[1].dtype == np.int32 and got[2].dtype == np.int64


def test_histogram_equals_cpu():
    rng = np.random.default_rng(3)
    db, q = _codes(rng, 37, 20), _codes(rng, 5, 20)
    cpu, gpu = _pair(20, [db])
    h = gpu.histogram(q)
    np.testing.assert_array_equal(h, cpu.histogram(q))
    assert h.shape == (5, 21) and (h.sum(axis=1) == 37).all()


def test_empty_and_incremental(tmp_path):
    rng = np.random.default_rng(4)
    gpu = HammingIndex(12, backend="cuda")
    q = _codes(rng, 2, 12)
    D, I = gpu.search(q, 3)
    assert (I == -1).all() and (D == np.iinfo(np.int32).max).all()
    lims, D, I = gpu.range_search(q, 12)
    assert lims.tolist() == [0, 0, 0] and D.size == 0
    db = _codes(rng, 20, 12)
    path = tmp_path / "db.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=db.shape)
    mm[:] = db
    mm.flush()
    cpu = HammingIndex(12)
    for idx in (gpu, cpu):
        idx.add(db[:5])
        idx.search(q, 2)          # the device copy is refreshed after the next add
        idx.add(np.memmap(path, dtype=np.uint8, mode="r", shape=db.shape))
    for a, b in zip(gpu.search(q, 30), cpu.search(q, 30)):
        np.testing.assert_array_equal(a, b)
    assert "backend='cuda'" in repr(gpu)
