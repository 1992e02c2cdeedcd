"""Every Numba kernel of vdsh_numba.methods.vdsh.admm against the plain numpy version in tests/naive.py,
plus: VDSH learns (sklearn digits, naive mAP) and save/load gives identical codes."""
import numpy as np
import pytest

import naive
from vdsh_numba.methods.vdsh import admm
from vdsh_numba.methods.vdsh import VDSH, TRAIN_DEFAULTS, forward

RNG = np.random.default_rng(0)


def _arr(*shape, rng=RNG):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("residual", [False, True])
def test_bias_act(residual):
    p, a_prev, b = _arr(7, 5), _arr(7, 5), _arr(5)
    z, a = np.empty_like(p), np.empty_like(p)
    admm.bias_act(p, b, a_prev, residual, z, a)
    rz, ra = naive.bias_act(p, b, a_prev, residual)
    np.testing.assert_allclose(z, rz, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a, ra, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("beta,gamma", [(1.0, 1.0), (0.1, 2.0), (3.0, 0.05)])
def test_z_update(residual, beta, gamma):
    a, a_prev, p, lam, b = _arr(9, 6), _arr(9, 6), _arr(9, 6), 0.3 * _arr(9, 6), _arr(6)
    got = np.empty_like(p)
    admm.z_update(a, a_prev, p, b, lam, beta, gamma, residual, got)
    ref = naive.z_update(a, a_prev, p, b, lam, beta, gamma, residual)
    f_got = naive.z_objective(got, a, a_prev, p, b, lam, beta, gamma, residual)
    f_ref = naive.z_objective(ref, a, a_prev, p, b, lam, beta, gamma, residual)
    np.testing.assert_allclose(f_got, f_ref, rtol=1e-5, atol=1e-5)  # same (global) minimum
    # and no point of a fine grid does better
    m = p + b - lam
    grid = np.linspace(-6, 6, 4001)[:, None, None] + 0 * m
    f_grid = naive.z_objective(grid, a, a_prev, p, b, lam, beta, gamma, residual).min(0)
    assert np.all(f_got <= f_grid + 1e-4)


def test_dual_update_and_shift_target():
    lam, z, p, b = _arr(8, 4), _arr(8, 4), _arr(8, 4), _arr(4)
    ref_lam, ref_r = naive.dual_update(lam, z, p, b)
    got_lam = lam.copy()
    r = admm.dual_update(got_lam, z, p, b)
    np.testing.assert_allclose(got_lam, ref_lam, rtol=1e-6, atol=1e-6)
    assert r == pytest.approx(ref_r, rel=1e-5)
    out = np.empty_like(z)
    admm.shift_target(z, lam, b, out)
    np.testing.assert_allclose(out, naive.shift_target(z, lam, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("residual_l", [False, True])
@pytest.mark.parametrize("skip", [0.0, 0.7])
def test_a_rhs(residual_l, skip):
    q, an, zn, ap, zl = (_arr(6, 5) for _ in range(5))
    out = np.empty_like(q)
    admm.a_rhs(q, 0.4, an, zn, skip, ap, zl, 1.3, residual_l, out)
    np.testing.assert_allclose(out, naive.a_rhs(q, 0.4, an, zn, skip, ap, zl, 1.3, residual_l),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_a_residual_and_sq_dist(residual):
    a, ap, z = _arr(10, 3), _arr(10, 3), _arr(10, 3)
    assert admm.a_residual(a, ap, z, residual) == pytest.approx(naive.a_residual(a, ap, z, residual), rel=1e-5)
    assert admm.sq_dist(a, z) == pytest.approx(naive.sq_dist(a, z), rel=1e-6)


def test_dcc_codes():
    rng = np.random.default_rng(3)
    n, k = 20, 8
    B = np.where(rng.standard_normal((n, k)) > 0, 1.0, -1.0)
    Q = rng.standard_normal((n, k))
    G = rng.standard_normal((k, 4))
    S = G @ G.T
    ref, ref_f = naive.dcc_codes(B, Q, S, 3)
    got = B.copy()
    f = admm.dcc_codes(got, Q, S, 3)
    np.testing.assert_array_equal(got, ref)
    assert f == ref_f


def test_forward_matches_naive():
    rng = np.random.default_rng(1)
    X = _arr(12, 7, rng=rng)
    Ws = [_arr(5, 7, rng=rng), _arr(5, 5, rng=rng), _arr(5, 5, rng=rng)]
    bs = [_arr(5, rng=rng) for _ in Ws]
    Wo, bo = _arr(3, 5, rng=rng), _arr(3, rng=rng)
    for residual in (False, True):
        a = X.astype(np.float64)
        for h, (W, b) in enumerate(zip(Ws, bs)):
            a = naive.relu(a @ W.T + b) + (a if residual and h > 0 else 0.0)
        np.testing.assert_allclose(forward(X, Ws, bs, Wo, bo, residual), a @ Wo.T + bo, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from vdsh_numba.data.features import build_features
    d = load_digits()
    return build_features(d.images, d.target, 16, 20, 100, 0)


@pytest.fixture(scope="module")
def fitted(digits):
    m = VDSH(16, depth=4, width=64, seed=0, sweeps=8)
    return m.fit(digits["X_train"], digits["y_train"])


def _signs(m, X):
    return np.where(m.project(X) > 0, 1, -1)


def test_vdsh_learns(fitted, digits):
    F = digits
    mp = naive.mean_ap_signs(_signs(fitted, F["X_query"]), _signs(fitted, F["X_db"]), F["y_query"], F["y_db"])
    assert mp > 0.6  # chance is ~0.1
    h = fitted.history_
    assert len(h) == 8 and all(np.isfinite(x["objective"]) for x in h)
    # the monitored objective (weight decay nu*rho, the one both blocks descend; docs/algorithm.md
    # section 2) and the forward-vs-auxiliary gap both end lower than they start
    assert h[-1]["objective"] < h[0]["objective"]
    assert h[-1]["network_objective"] < h[0]["network_objective"]
    assert h[-1]["forward_gap"] < h[1]["forward_gap"]


def test_save_load_roundtrip(fitted, digits, tmp_path):
    p = tmp_path / "m.npz"
    fitted.save(p)
    m2 = VDSH.load(p)
    np.testing.assert_array_equal(m2.encode(digits["X_db"]), fitted.encode(digits["X_db"]))
    assert m2.get_params() == fitted.get_params()


def test_naive_variant_selectable(digits):
    m = VDSH(8, depth=3, width=32, seed=0, sweeps=2, residual=False, resync=False, multipliers=False)
    m.fit(digits["X_train"], digits["y_train"])
    assert m.encode(digits["X_query"]).shape == (digits["X_query"].shape[0], 1)


def test_unknown_param_rejected():
    with pytest.raises(ValueError, match="unknown VDSH training parameter"):
        VDSH(8, bogus=1)
    assert set(TRAIN_DEFAULTS) >= {"sweeps", "residual", "resync", "multipliers"}
