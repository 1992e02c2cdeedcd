"""Sharded search on a LocalCluster of 2 worker processes equals the single-machine index."""
import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="CI installs dask[distributed]: see .ci/run")

from vdsh_numba.search.distributed import ShardedHammingIndex, ShardedSearchError, local_cluster, merge_topk  # noqa: E402
from vdsh_numba.search.hamming import HammingIndex  # noqa: E402
from tests import naive  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster, c = local_cluster(n_workers=2, threads_per_worker=1)
    yield c
    c.close()
    cluster.close()


def _single(codes, bits):
    idx = HammingIndex(bits)
    idx.add(codes)
    return idx


def gen_codes(start, stop, seed):
    """Deterministic per-row codes: row r depends only on (seed, r), so shards can be anywhere."""
    out = np.empty((stop - start, 6), np.uint8)
    for r in range(start, stop):
        out[r - start] = np.random.default_rng([seed, r]).integers(0, 4, 6, dtype=np.uint8)  # heavy ties
    return out


def slow_gen(start, stop, seed):
    time.sleep(0.4)
    return gen_codes(start, stop, seed)


@pytest.mark.parametrize("tied", [False, True])
def test_search_equals_single_machine(client, tied):
    rng = np.random.default_rng(0)
    bits = 44
    hi = 2 if tied else 256
    codes = rng.integers(0, hi, (3000, 6), dtype=np.uint8)
    codes[:, -1] &= 0xF0  # 44 bits: the low 4 bits of the last byte are zero padding
    q = rng.integers(0, hi, (37, 6), dtype=np.uint8)
    q[:, -1] &= 0xF0
    sh = ShardedHammingIndex(bits, client)
    for s, e in [(0, 701), (701, 2000), (2000, 2001), (2001, 3000)]:  # boundaries split ties
        sh.add(codes[s:e])
    assert sh.ntotal == 3000 and sh.nshards == 4
    ref = _single(codes, bits)
    for k in (1, 50, 3000, 3005):
        D, I = sh.search(q, k)
        Dr, Ir = ref.search(q, k)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
    lims, D, I = sh.range_search(q, 20)
    lr, Dr, Ir = ref.range_search(q, 20)
    np.testing.assert_array_equal(lims, lr)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_generated_on_workers(client):
    sh = ShardedHammingIndex(48, client)
    sh.add_generated(gen_codes, 2500, 600, seed=7)
    full = gen_codes(0, 2500, 7)
    q = gen_codes(5000, 5020, 7)
    D, I = sh.search(q, 64)
    Dr, Ir = _single(full, 48).search(q, 64)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_merge_topk_against_lexsort():
    rng = np.random.default_rng(3)
    Da = np.sort(rng.integers(0, 5, (10, 8)).astype(np.int32), axis=1)
    Db = np.sort(rng.integers(0, 5, (10, 6)).astype(np.int32), axis=1)
    Ia = np.tile(np.arange(8), (10, 1)).astype(np.int64)       # shard a: rows 0..7
    Ib = np.tile(np.arange(100, 106), (10, 1)).astype(np.int64)  # shard b: rows 100..105
    D, I = merge_topk((Da, Ia), (Db, Ib), 9)
    for q in range(10):
        d = np.concatenate([Da[q], Db[q]])
        i = np.concatenate([Ia[q], Ib[q]])
        o = np.lexsort((i, d))[:9]
        np.testing.assert_array_equal(D[q], d[o])
        np.testing.assert_array_equal(I[q], i[o])


def test_worker_killed_mid_search_completes_or_fails_clearly(client):
    sh = ShardedHammingIndex(48, client, retries=3, timeout=30)
    sh.add_generated(slow_gen, 1200, 200, seed=1)
    q = gen_codes(9000, 9010, 1)
    Dr, Ir = _single(gen_codes(0, 1200, 1), 48).search(q, 30)
    out = {}

    def run():
        try:
            out["r"] = sh.search(q, 30)
        except ShardedSearchError as e:
            out["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.6)
    pids = client.run(os.getpid)
    os.kill(next(iter(pids.values())), signal.SIGKILL)  # a worker process dies; its nanny restarts it
    t.join(120)
    assert not t.is_alive()
    if "r" in out:  # lost shards were recomputed from their tasks: the answer must be exact
        np.testing.assert_array_equal(out["r"][0], Dr)
        np.testing.assert_array_equal(out["r"][1], Ir)
    else:
        assert "sharded search over 6 shards failed" in str(out["e"])


def test_restart_loses_shards_and_says_so(client):
    sh = ShardedHammingIndex(48, client, retries=1, timeout=30)
    sh.add_generated(gen_codes, 300, 100, seed=2)
    sh.persist()
    client.restart()
    with pytest.raises(ShardedSearchError, match="failed after 2 attempts"):
        sh.search(gen_codes(0, 3, 2), 5)


@pytest.mark.parametrize("multi,topk", [(False, None), (False, 200), (True, 150)])
def test_sharded_metrics_equal_single_machine(client, multi, topk):
    """Every key of evaluate_codes, and only those, equal on one machine and on 4 shards (one
    empty, boundaries inside ties); the main ones also against the naive references."""
    from vdsh_numba.search.metrics import evaluate_codes
    rng = np.random.default_rng(5)
    bits = 16
    db = rng.integers(0, 256, (1500, 2), dtype=np.uint8)
    db[:, 1] &= 0x0F  # few distinct codes in the second byte: many ties
    q = rng.integers(0, 256, (25, 2), dtype=np.uint8)
    if multi:
        dl = (rng.random((1500, 4)) < 0.3).astype(np.uint8)
        qlab = (rng.random((25, 4)) < 0.3).astype(np.uint8)
    else:
        dl = rng.integers(0, 5, 1500)
        qlab = rng.integers(0, 5, 25)
    sh = ShardedHammingIndex(bits, client)
    for s, e in [(0, 400), (400, 1100), (1100, 1100), (1100, 1500)]:
        sh.add(db[s:e], labels=dl[s:e])
    got, pr = sh.evaluate(q, qlab, radius=2, topk=topk)
    ref, pr_ref = evaluate_codes(q, db, qlab, dl, bits, radius=2, topk=topk)
    assert set(got) == set(ref)
    if topk is not None:
        assert {f"map_at_{topk}", f"map_at_{topk}_tie_aware"} <= set(got)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert len(pr) == len(pr_ref) == bits + 1
    for row, row_ref in zip(pr, pr_ref):          # rows of the PR curve: {radius, precision, recall}
        assert row.keys() == row_ref.keys()
        for key in row_ref:
            assert row[key] == pytest.approx(row_ref[key], abs=1e-12), key
    # independent references (tests/naive.py): ties broken by global index
    assert got["map"] == pytest.approx(naive.mean_ap(q, db, qlab, dl, bits), abs=1e-12)
    assert got["ndcg_100"] == pytest.approx(naive.mean_ndcg(q, db, qlab, dl, bits, 100), abs=1e-12)
    p100, r100 = naive.precision_recall_at_k(q, db, qlab, dl, bits, 100)
    assert got["precision_100"] == pytest.approx(p100, abs=1e-12)
    assert got["recall_100"] == pytest.approx(r100, abs=1e-12)
    P, E, Rc = naive.radius_stats(q, db, qlab, dl, bits, 2)
    assert got["precision_hamming2"] == pytest.approx(P.mean(), abs=1e-12)
    assert got["precision_hamming2_empty_fraction"] == pytest.approx(E.mean(), abs=1e-12)
    assert got["recall_hamming2"] == pytest.approx(Rc.mean(), abs=1e-12)
    dist, rel = naive.hamming(q, db, bits), naive.graded(qlab, dl) > 0
    ap_t = np.mean([naive.ap_tie_aware_direct(dist[i], rel[i]) for i in range(len(q))])
    assert got["map_tie_aware"] == pytest.approx(ap_t, abs=1e-12)
    if topk is not None:
        assert got[f"map_at_{topk}"] == pytest.approx(naive.mean_ap(q, db, qlab, dl, bits, topk), abs=1e-12)
        ap_tk = np.mean([naive.ap_tie_aware_direct(dist[i], rel[i], topk) for i in range(len(q))])
        assert got[f"map_at_{topk}_tie_aware"] == pytest.approx(ap_tk, abs=1e-12)


def test_sharded_evaluate_needs_labels_and_checks_its_arguments(client):
    sh = ShardedHammingIndex(16, client)
    with pytest.raises(ValueError, match="empty"):
        sh.evaluate(np.zeros((2, 2), np.uint8), np.zeros(2, np.int64))
    sh.add(np.zeros((5, 2), np.uint8))
    with pytest.raises(ValueError, match="labels of every shard"):
        sh.evaluate(np.zeros((2, 2), np.uint8), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="topk must be >= 1, got 0"):
        sh.evaluate(np.zeros((2, 2), np.uint8), np.zeros(2, np.int64), topk=0)
    bad = ShardedHammingIndex(16, client)             # rows misstated: 4 recorded, 5 held
    bad.add_futures([client.scatter(np.zeros((5, 2), np.uint8))], [4], labels=[np.zeros(5, np.int64)])
    with pytest.raises(ShardedSearchError, match=r"hold \[5\] rows, the index recorded \[4\]"):
        bad.evaluate(np.zeros((2, 2), np.uint8), np.zeros(2, np.int64))


def test_pipeline_switch_distributed_equals_local(tmp_path, monkeypatch):
    """encode + evaluate with evaluate.scheduler=distributed give the local stages' numbers."""
    import copy
    import json

    import yaml

    from tests.conftest import ROOT
    from vdsh_numba import pipeline
    from vdsh_numba.pipeline import Layout
    from vdsh_numba.pipeline.params import validate_params

    p = validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    p.update({"bits": [16], "depth": 2, "width": 32})
    p["vdsh"]["sweeps"] = 3
    p["evaluate"]["topk"] = 50                      # mAP@topk reaches both schedulers
    monkeypatch.chdir(tmp_path)
    pipeline.download.run(p)
    pipeline.features.run(p)
    pipeline.train.run(p, "vdsh", 16)
    pipeline.encode.run(p, "vdsh", 16)
    pipeline.evaluate.run(p, "vdsh", 16)
    local = json.loads(Layout().eval("vdsh", 16).read_text())
    local_codes = np.load(Layout().codes("vdsh", 16))["db"]
    q = copy.deepcopy(p)
    q["evaluate"].update({"scheduler": "distributed", "shards": 3})
    validate_params(q)
    pipeline.encode.run(q, "vdsh", 16)
    np.testing.assert_array_equal(np.load(Layout().codes("vdsh", 16))["db"], local_codes)
    pipeline.evaluate.run(q, "vdsh", 16)
    dist = json.loads(Layout().eval("vdsh", 16).read_text())
    assert dist.pop("scheduler") == "distributed" and dist.pop("shards") == 3
    assert set(dist) == set(local)                  # reports/eval/*.json has one shape
    assert "map_at_50" in local
    for key in local:
        if isinstance(local[key], float):
            assert dist[key] == pytest.approx(local[key], abs=1e-12), key
        else:
            assert dist[key] == local[key], key
