"""The consensus scheme (vdsh_numba.methods.vdsh.consensus): every local solve against a stacked least-squares
reference in tests/naive.py, the consensus and dual steps against their formulas, bitwise-equal
weights on serial / 2 threads / 2 Dask workers, and the residuals falling on sklearn digits."""
import numpy as np
import pytest

import naive
from vdsh_numba.methods.vdsh import consensus as cs
from vdsh_numba.methods.vdsh.executors import DaskExecutor, SerialExecutor, ThreadExecutor, make_executor

RNG = np.random.default_rng(1)


def _arr(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("eta", [0.0, 0.3])
@pytest.mark.parametrize("c,r", [(1.0, 1e-2), (0.05, 0.2)])
def test_ridge_consensus(eta, c, r):
    A, T = _arr(60, 7), _arr(60, 5)
    A[:, 0] += 2.0  # a non-zero mean: the intercept and the consensus on b interact
    V, v = _arr(5, 7, scale=0.5), _arr(5, scale=0.5)
    W, b = cs.ridge_consensus(A, T, c, r, eta, V, v)
    rW, rb = naive.ridge_consensus(A, T, c, r, eta, V, v)
    np.testing.assert_allclose(W, rW, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(b, rb, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("through", [False, True])
@pytest.mark.parametrize("residual_mid", [False, True])
def test_local_solve(through, residual_mid):
    n, w, k = 50, 6, 4
    A = np.abs(_arr(n, w))
    lo = (A, _arr(n, w), _arr(n, w, scale=0.1), 0.05, 0.005, _arr(w, w, scale=0.3), _arr(w, scale=0.3))
    hi = (np.abs(_arr(n, w)), np.sign(_arr(n, k)), None, 1.0, 0.01, _arr(k, w, scale=0.3), _arr(k, scale=0.3))
    prob = {"lo": lo, "hi": hi, "eta": 0.2, "through": through, "residual_mid": residual_mid}
    got = cs.local_solve(prob)
    ref = naive.consensus_local(prob)
    for (W, b), (rW, rb) in zip(got, ref):
        np.testing.assert_allclose(W, rW, rtol=5e-4, atol=5e-5)
        np.testing.assert_allclose(b, rb, rtol=5e-4, atol=5e-5)


@pytest.mark.parametrize("top", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_block_update(top, residual):
    n, w, k = 40, 5, 3
    wa = k if top else w
    blk = {"a_prev": np.abs(_arr(n, w)), "z": _arr(n, w), "lam": _arr(n, w, scale=0.1),
           "below": [(_arr(w, w, scale=0.4), _arr(w, scale=0.2), 0.5), (_arr(w, w, scale=0.4), _arr(w, scale=0.2), 0.5)],
           "above": ([(_arr(k, w, scale=0.4), _arr(k, scale=0.2), 1.0)] if top else
                     [(_arr(w, w, scale=0.4), _arr(w, scale=0.2), 0.5), (_arr(w, w, scale=0.4), _arr(w, scale=0.2), 0.5)]),
           "T_z": np.sign(_arr(n, wa)) if top else _arr(n, wa), "T_lam": None if top else _arr(n, wa, scale=0.1),
           "coef": 1.0 if top else 0.3, "a_next": None if top else np.abs(_arr(n, w)),
           "z_next": None if top else _arr(n, w), "skip": 0.0 if top else 0.7,
           "residual": residual, "beta": 0.3, "gamma": 0.2}
    a, z = cs.block_update(blk)
    ra = naive.consensus_a(blk)
    np.testing.assert_allclose(a, ra, rtol=5e-4, atol=5e-5)
    # z: the brute-force minimiser with the average of the copies below as the prediction
    Wb = sum(om * W.astype(np.float64) for W, _, om in blk["below"])
    bb = sum(om * b.astype(np.float64) for _, b, om in blk["below"])
    p = blk["a_prev"].astype(np.float64) @ Wb.T
    rz = naive.z_update(a, blk["a_prev"], p, bb, blk["lam"], 0.3, 0.2, residual)
    f = naive.z_objective(z, a, blk["a_prev"], p, bb, blk["lam"], 0.3, 0.2, residual)
    rf = naive.z_objective(rz, a, blk["a_prev"], p, bb, blk["lam"], 0.3, 0.2, residual)
    np.testing.assert_allclose(f, rf, rtol=1e-4, atol=1e-5)


def test_consensus_dual_and_multiplier_steps():
    copies, duals = [_arr(4, 3), _arr(4, 3)], [_arr(4, 3, scale=0.1), _arr(4, 3, scale=0.1)]
    theta = cs.consensus_step(copies, duals)
    np.testing.assert_allclose(theta, naive.consensus_mean(copies, duals), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cs.consensus_step(copies[:1], duals[:1]), copies[0] + duals[0], rtol=1e-6)
    np.testing.assert_allclose(cs.dual_step(duals[1], copies[1], theta), duals[1] + copies[1] - theta,
                               rtol=1e-6, atol=1e-7)
    lam, z, a, ap, W, b = _arr(9, 4), _arr(9, 4), _arr(9, 4), _arr(9, 5), _arr(4, 5), _arr(4)
    for residual in (False, True):
        app = ap[:, :4] if residual else ap
        Wr = W[:, :4] if residual else W
        out, rz, ra = cs.multiplier_step(lam, z, a, np.ascontiguousarray(app), np.ascontiguousarray(Wr), b, residual)
        rlam, rrz = naive.dual_update(lam, z, app.astype(np.float64) @ Wr.T, b)
        np.testing.assert_allclose(out, rlam, rtol=1e-5, atol=1e-5)
        assert rz == pytest.approx(rrz, rel=1e-5)
        assert ra == pytest.approx(naive.a_residual(a, app, z, residual), rel=1e-5)


def test_owners_and_bad_input():
    assert cs.owners(0, 3) == [0] and cs.owners(1, 3) == [0, 1] and cs.owners(3, 3) == [2]
    assert cs.owners(1, 1) == [0]
    with pytest.raises(ValueError, match="weight layer j"):
        cs.owners(4, 3)
    with pytest.raises(ValueError, match="train.workers"):
        ThreadExecutor(0)
    with pytest.raises(ValueError, match="train.scheduler"):
        make_executor("mpi")
    X, Y = _arr(20, 4), np.eye(2)[np.arange(20) % 2]
    with pytest.raises(ValueError, match="train.local"):
        cs.fit_consensus(X, Y, 2, 4, 4, sweeps=1, local="joint")
    with pytest.raises(ValueError, match="train.order"):
        cs.fit_consensus(X, Y, 2, 4, 4, sweeps=1, order="random")
    with pytest.raises(ValueError, match="unknown consensus training parameter"):
        cs.fit_consensus(X, Y, 2, 4, 4, sweeps=1, workers=3)
    with pytest.raises(ValueError, match="depth"):
        cs.fit_consensus(X, Y, 0, 4, 4, sweeps=1)


def _small():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((240, 12)).astype(np.float32)
    y = (X[:, :3].sum(1) > 0).astype(int) + 2 * (X[:, 3] > 0)
    return X, np.eye(4)[y]


def _fit(executor):
    X, Y = _small()
    S, G, hist = cs.fit_consensus(X, Y, 3, 12, 8, seed=0, executor=executor, sweeps=3,
                                  local="through", resync=False)
    return S, hist


def _assert_bitwise(S1, S2):
    for W1, W2 in zip(S1["Ws"] + S1["bs"], S2["Ws"] + S2["bs"]):
        assert np.array_equal(W1, W2)
    for key in S1["U"]:
        assert np.array_equal(S1["U"][key][0], S2["U"][key][0])
    for L1, L2 in zip(S1["Lam"], S2["Lam"]):
        assert np.array_equal(L1, L2)


def test_serial_threads_dask_bitwise_equal():
    S1, h1 = _fit(SerialExecutor())
    assert h1[-1]["consensus"] > 0  # the copies differ: the duals carry something
    ex = ThreadExecutor(2)
    try:
        S2, _ = _fit(ex)
    finally:
        ex.close()
    _assert_bitwise(S1, S2)
    from vdsh_numba.search.distributed import local_cluster
    cluster, client = local_cluster(n_workers=2, threads_per_worker=1)
    try:
        ex = DaskExecutor(client, timeout=60, scatter_bytes=1024)  # the aux arrays scattered, weights inline
        assert ex.workers == 2
        S3, _ = _fit(ex)
    finally:
        client.close()
        cluster.close()
    _assert_bitwise(S1, S3)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    X = d.data.astype(np.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    return X[:1000], np.eye(10)[d.target[:1000]]


def _drop(hist, key, k=3):
    v = [h[key] for h in hist]
    return np.mean(v[:k]), np.mean(v[-k:])


def test_digits_residuals_fall(digits):
    X, Y = digits
    # resync (the default): objective and both constraint residuals fall over 20 sweeps
    _, _, hist = cs.fit_consensus(X, Y, 4, 64, 16, seed=0, sweeps=20)
    obj = [h["objective"] for h in hist]
    assert np.all(np.isfinite(obj)) and obj[-1] < 0.95 * obj[0]
    for key in ("primal_z", "primal_a"):
        first, last = _drop(hist, key)
        assert last < 0.8 * first, (key, first, last)
    assert max(h["consensus"] for h in hist) == 0.0  # split: the copies agree exactly (docs §10.2)
    # the local problem through the substructure, plain ADMM (no resync), eta = 0.1: the copies
    # differ, and the objective, the z residual, the consensus residual and the step of theta fall
    _, _, hist = cs.fit_consensus(X, Y, 4, 64, 16, seed=0, sweeps=20, local="through", resync=False, eta=0.1)
    assert max(h["consensus"] for h in hist) > 1e-3
    for key, factor in (("objective", 0.9), ("primal_z", 0.6), ("consensus", 0.1), ("dtheta", 0.3)):
        first, last = _drop(hist, key)
        assert last < factor * first, (key, first, last)
