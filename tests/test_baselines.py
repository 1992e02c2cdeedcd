"""Baselines: every loss/update against its naive reference, every gradient against finite
differences, and each method end to end on a tiny problem (fit, encode, save/load, seed)."""
import json

import numpy as np
import pytest
import scipy.linalg

import naive
from vdsh_numba.methods.base import METHODS, label_matrix, load_model
from vdsh_numba.methods.baselines import dcwh, dpsh, dtsh, itq, mlp, sdh, tie_ap, vdsh_backprop
from vdsh_numba.methods.baselines._common import signs

DEEP = ["dpsh", "dtsh", "dcwh", "tie_ap", "classifier", "vdsh_backprop", "vdsh_backprop_residual"]
ALL = ["lsh", "itq", "sdh"] + DEEP


def num_grad(f, x, eps=1e-6):
    """Central finite differences of scalar ``f()`` w.r.t. every entry of ``x`` (in place)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        fp = f()
        x[idx] = old - eps
        fm = f()
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def away_from(U, points, margin=0.05):
    """Nudge entries of U away from the kinks ``points`` so finite differences stay on one side."""
    U = U.copy()
    for p in points:
        for s in (p, -p):
            close = np.abs(U - s) < margin
            U[close] = s + np.where(U[close] >= s, margin, -margin)
    return U


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def blobs(n_per=20, n_classes=3, d=8, seed=0, spread=0.3):
    r = np.random.default_rng(seed)
    centres = r.standard_normal((n_classes, d)) * 2
    y = np.repeat(np.arange(n_classes), n_per)
    X = centres[y] + spread * r.standard_normal((y.size, d))
    return X, y


def mean_ap(Uq, yq, Ud, yd):
    bits = Uq.shape[1]
    D = (bits - signs(Uq) @ signs(Ud).T) / 2
    return np.mean([naive.average_precision(D[i], yd == yq[i]) for i in range(len(yq))])


# --- the shared MLP --------------------------------------------------------------------------

@pytest.mark.parametrize("depth,residual", [(0, False), (1, False), (3, False), (3, True)])
def test_mlp_forward_matches_naive(rng, depth, residual):
    params = mlp.init_mlp(5, depth, 4, 3, rng)
    params = [p + 0.1 * rng.standard_normal(p.shape) for p in params]  # nonzero biases
    X = rng.standard_normal((6, 5))
    got, _ = mlp.mlp_forward(params, X, residual)
    np.testing.assert_allclose(got, naive.mlp_forward(params, X, residual), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("depth,residual", [(0, False), (2, False), (3, True)])
def test_mlp_backward_gradcheck(rng, depth, residual):
    params = mlp.init_mlp(5, depth, 4, 3, rng)
    params = [p + 0.1 * rng.standard_normal(p.shape) for p in params]
    X = rng.standard_normal((7, 5))
    T = rng.standard_normal((7, 3))

    def loss():
        U, _ = mlp.mlp_forward(params, X, residual)
        return 0.5 * np.sum((U - T) ** 2)

    U, cache = mlp.mlp_forward(params, X, residual)
    grads = mlp.mlp_backward(params, cache, U - T, residual)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(g, num_grad(loss, p), rtol=1e-5, atol=1e-7)


def test_adam_matches_naive(rng):
    p = [rng.standard_normal((3, 2)), rng.standard_normal(2)]
    q = [x.copy() for x in p]
    ms = [np.zeros_like(x) for x in p]
    vs = [np.zeros_like(x) for x in p]
    opt = mlp.Adam(p, lr=0.01)
    for t in range(1, 4):
        g = [rng.standard_normal(x.shape) for x in p]
        opt.step(p, g)
        for k in range(2):
            q[k], ms[k], vs[k] = naive.adam_step(q[k], g[k], ms[k], vs[k], t, lr=0.01)
    for a, b in zip(p, q):
        np.testing.assert_allclose(a, b, rtol=1e-12)


# --- deep losses: naive reference + gradient check -------------------------------------------

def test_dpsh_loss(rng):
    U = away_from(rng.standard_normal((4, 5)), [0.0])
    U_all = rng.standard_normal((9, 5))
    y, y_all = rng.integers(0, 3, 4), rng.integers(0, 3, 9)
    S = dpsh.similarity(label_matrix(y, 3), label_matrix(y_all, 3))
    loss, dU = dpsh.dpsh_loss(U, U_all, S, 10.0)
    assert loss == pytest.approx(naive.dpsh_loss(U, U_all, S, 10.0), rel=1e-12)
    np.testing.assert_allclose(dU, num_grad(lambda: dpsh.dpsh_loss(U, U_all, S, 10.0)[0], U),
                               rtol=1e-5, atol=1e-9)


def test_dpsh_loss_is_stable_for_large_inner_products():
    U = np.full((2, 4), 30.0)
    loss, dU = dpsh.dpsh_loss(U, U, np.zeros((2, 2)), 0.0)
    assert np.isfinite(loss) and np.all(np.isfinite(dU))


def test_dtsh_loss(rng):
    U = away_from(rng.standard_normal((7, 4)), [0.0])
    Y = label_matrix(rng.integers(0, 3, 7), 3)
    sim = dpsh.similarity(Y, Y) > 0
    loss, dU = dtsh.dtsh_loss(U, sim, 2.0, 0.5)
    assert loss == pytest.approx(naive.dtsh_loss(U, sim, 2.0, 0.5), rel=1e-12)
    np.testing.assert_allclose(dU, num_grad(lambda: dtsh.dtsh_loss(U, sim, 2.0, 0.5)[0], U),
                               rtol=1e-5, atol=1e-9)


def test_dtsh_triplet_kernel_extremes():
    # huge margins in both directions stay finite; no triplets -> zero loss and gradient
    theta = np.array([[0.0, 800.0, -800.0], [800.0, 0.0, 0.0], [-800.0, 0.0, 0.0]])
    sim = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    total, count, G = dtsh.triplet_theta_grad(theta, sim, 0.0)
    assert count == 2 and np.isfinite(total) and np.all(np.isfinite(G))
    total, count, G = dtsh.triplet_theta_grad(theta, np.ones((3, 3), bool), 0.0)
    assert count == 0 and total == 0.0 and not G.any()


def test_dcwh_loss(rng):
    U = away_from(1.5 * rng.standard_normal((6, 4)), [0.0, dcwh.CUBE])
    y = rng.integers(0, 3, 6)
    C = rng.standard_normal((3, 4))
    loss, dU = dcwh.dcwh_loss(U, y, C, 0.7, 0.3)
    assert loss == pytest.approx(naive.dcwh_loss(U, y, C, 0.7, 0.3), rel=1e-12)
    np.testing.assert_allclose(dU, num_grad(lambda: dcwh.dcwh_loss(U, y, C, 0.7, 0.3)[0], U),
                               rtol=1e-5, atol=1e-9)


def test_dcwh_class_centres(rng):
    U = rng.standard_normal((10, 3))
    y = np.array([0, 0, 1, 1, 1, 0, 3, 3, 0, 1])
    C = dcwh.class_centres(U, y, 4)
    for k in range(4):
        ref = U[y == k].mean(0) if np.any(y == k) else np.zeros(3)
        np.testing.assert_allclose(C[k], ref)


def test_tie_ap_matches_naive_and_gradcheck(rng):
    b, L = 9, 5
    U = rng.standard_normal((b, L))
    Y = label_matrix(rng.integers(0, 3, b), 3)
    sim = dpsh.similarity(Y, Y) > 0
    gamma = 1.3
    phi = np.tanh(0.5 * gamma * U)
    D = 0.5 * (L - phi @ phi.T)
    ap, nq, _ = tie_ap.soft_ap_dist_grad(D, sim, L + 1)
    assert ap == pytest.approx(naive.tie_ap_relaxed(D, sim, L), rel=1e-12)
    loss, dU = tie_ap.tie_ap_loss(U, sim, gamma)
    assert loss == pytest.approx(1.0 - ap)
    np.testing.assert_allclose(dU, num_grad(lambda: tie_ap.tie_ap_loss(U, sim, gamma)[0], U),
                               rtol=1e-4, atol=1e-8)


def test_tie_ap_is_exact_ap_without_ties(rng):
    # distinct integer distances: the relaxed tie-aware AP is the ordinary AP
    b, L = 8, 10
    D = np.zeros((b, b))
    for q in range(b):
        D[q] = rng.permutation(L + 1)[:b]
    y = rng.integers(0, 2, b)
    sim = y[:, None] == y[None, :]
    ap, nq, _ = tie_ap.soft_ap_dist_grad(D, sim, L + 1)
    ref = []
    for q in range(b):
        keep = np.arange(b) != q
        if sim[q, keep].any():
            ref.append(naive.average_precision(D[q, keep], sim[q, keep]))
    assert nq == len(ref)
    assert ap == pytest.approx(np.mean(ref), rel=1e-12)


@pytest.mark.parametrize("relax", ["tanh", "ste"])
def test_vdsh_backprop_loss(rng, relax):
    U = away_from(rng.standard_normal((5, 4)), [0.0, 1.0])
    Y = label_matrix(rng.integers(0, 3, 5), 3)
    G = rng.standard_normal((3, 4))
    args = (0.7, 0.2, 50)
    loss, dU, dG = vdsh_backprop.vdsh_bp_loss(U, Y, G, *args, relax=relax)
    assert loss == pytest.approx(naive.vdsh_bp_loss(U, Y, G, *args, relax=relax), rel=1e-12)
    f = lambda: vdsh_backprop.vdsh_bp_loss(U, Y, G, *args, relax=relax)[0]  # noqa: E731
    np.testing.assert_allclose(dG, num_grad(f, G), rtol=1e-5, atol=1e-9)
    if relax == "tanh":
        np.testing.assert_allclose(dU, num_grad(f, U), rtol=1e-5, atol=1e-9)
    else:  # straight-through: dL/dB̃ passed through the hard tanh's derivative 1[|u| ≤ 1]
        B = signs(U)
        R = B @ G.T - Y
        ref = 2 / 5 * ((R @ G) * (np.abs(U) <= 1) + 0.2 * (U - B))
        np.testing.assert_allclose(dU, ref, rtol=1e-12)


# --- classic methods --------------------------------------------------------------------------

def test_lsh_collision_rate_follows_angle():
    # sign random projections: P(bit differs) = angle / π (Charikar 2002)
    X = np.array([[1.0, 0.0, 0.0], [np.cos(1.0), np.sin(1.0), 0.0], [-1.0, 0.0, 0.0]])
    m = METHODS["lsh"](bits=4000, seed=1)
    m.fit(X, np.zeros(3, int))
    m.mean_[:] = 0.0  # hyperplanes through the origin for the check
    S = signs(m.project(X))
    assert np.mean(S[0] != S[1]) == pytest.approx(1.0 / np.pi, abs=0.03)
    np.testing.assert_array_equal(S[0], -S[2])


def test_itq_rotation_is_procrustes(rng):
    V = rng.standard_normal((30, 4))
    B = signs(rng.standard_normal((30, 4)))
    R = itq.itq_rotation(V, B)
    ref, _ = scipy.linalg.orthogonal_procrustes(V, B)
    np.testing.assert_allclose(R, ref, atol=1e-10)


def test_itq_quantization_loss_never_increases():
    X, y = blobs(30, 4, 10)
    m = METHODS["itq"](bits=6, n_iter=20, seed=0).fit(X, y)
    losses = [h["loss"] for h in m.history_]
    assert len(losses) == 20
    assert np.all(np.diff(losses) <= 1e-9 * max(losses))
    np.testing.assert_allclose(m.R_ @ m.R_.T, np.eye(6), atol=1e-10)
    with pytest.raises(ValueError, match="bits=11"):
        METHODS["itq"](bits=11).fit(X, y)


def test_sdh_pieces_match_naive(rng):
    X, A = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    np.testing.assert_allclose(sdh.rbf_features(X, A, 1.7), naive.rbf_features(X, A, 1.7),
                               rtol=1e-12)
    n, L, C = 12, 5, 3
    B = signs(rng.standard_normal((n, L)))
    Y = label_matrix(rng.integers(0, C, n), C)
    W = sdh.sdh_g_step(B, Y, 1.0)
    np.testing.assert_allclose((B.T @ B + np.eye(L)) @ W, B.T @ Y, atol=1e-10)
    Phi = rng.standard_normal((n, 4))
    P = sdh.sdh_f_step(Phi, B, 0.1)
    np.testing.assert_allclose((Phi.T @ Phi + 0.1 * np.eye(4)) @ P, Phi.T @ B, atol=1e-10)
    F = Phi @ P
    Q = Y @ W.T + 0.3 * F
    got = sdh.sdh_b_step(B, Q, W, max_sweeps=1)
    np.testing.assert_array_equal(got, naive.sdh_dcc_sweep(B, Y, W, F, 0.3))


def test_sdh_objective_decreases_over_b_steps():
    X, y = blobs(15, 3, 6)
    m = METHODS["sdh"](bits=8, n_anchors=20, n_iter=4, seed=0).fit(X, y)
    losses = [h["loss"] for h in m.history_]
    assert len(losses) == 4 and losses[-1] <= losses[0]


# --- every method end to end ------------------------------------------------------------------

def build(name, bits=8, seed=0, **over):
    params = {"seed": seed, "depth": 1, "width": 16, name: {}}
    if name in DEEP:
        params[name] = {"epochs": 8, "batch_size": 20, "lr": 1e-2, **over}
    elif name == "sdh":
        params[name] = {"n_anchors": 20, **over}
    return METHODS[name].from_params(bits, params)


@pytest.mark.parametrize("name", ALL)
def test_method_end_to_end(name, tmp_path, monkeypatch):
    X, y = blobs(20, 3, 8)
    Xq, yq = blobs(5, 3, 8, seed=0, spread=0.3)
    m = build(name).fit(X, y)
    U = m.project(Xq)
    assert U.shape == (15, 8) and U.dtype == np.float64
    codes = m.encode(Xq)
    assert codes.shape == (15, 1) and codes.dtype == np.uint8
    # save/load round trip reproduces the codes
    m.save(tmp_path / "m.npz")
    m2 = load_model(tmp_path / "m.npz")
    assert type(m2) is type(m) and m2.get_params() == m.get_params()
    np.testing.assert_array_equal(m2.encode(Xq), codes)
    json.dumps(m.get_params())
    # same seed -> same model; history recorded
    np.testing.assert_array_equal(build(name).fit(X, y).project(Xq), U)
    if name != "lsh":
        assert m.history_ and all(np.isfinite(h["loss"]) for h in m.history_)
    # supervised methods separate three easy blobs
    if name not in ("lsh", "itq"):
        assert mean_ap(U, yq, m.project(X), y) > 0.9


@pytest.mark.parametrize("name", DEEP)
def test_deep_training_lowers_the_loss(name):
    X, y = blobs(20, 3, 8, spread=1.0)
    m = build(name, epochs=15).fit(X, y)
    assert len(m.history_) == 15
    assert m.history_[-1]["loss"] < m.history_[0]["loss"]


def test_vdsh_backprop_residual_and_ste():
    X, y = blobs(20, 3, 8)
    for over in ({"residual": True}, {"relax": "ste"}):
        params = {"seed": 0, "depth": 3, "width": 8,
                  "vdsh_backprop": {"epochs": 20, "batch_size": 20, "lr": 1e-2, **over}}
        m = METHODS["vdsh_backprop"].from_params(8, params).fit(X, y)
        assert mean_ap(m.project(X), y, m.project(X), y) > 0.9
    with pytest.raises(ValueError, match="relax"):
        METHODS["vdsh_backprop"](bits=8, relax="sigmoid").fit(X, y)


def test_from_params_reads_sections_and_coerces():
    params = {"seed": 3, "depth": 4, "width": 32,
              "sdh": {"nu": "1e-5", "n_anchors": 50}, "dpsh": {"lam": 2, "epochs": 3}}
    s = METHODS["sdh"].from_params(16, params)
    assert (s.nu, s.n_anchors, s.seed, s.lam) == (1e-5, 50, 3, 1.0)
    d = METHODS["dpsh"].from_params(16, params)
    assert (d.depth, d.width, d.lam, d.epochs, d.seed) == (4, 32, 2.0, 3, 3)
    assert isinstance(d.lam, float)
    assert METHODS["lsh"].from_params(8, {"seed": 0}).get_params() == {"bits": 8, "seed": 0}
    assert METHODS["vdsh_backprop_residual"].from_params(8, {}).residual is True
    assert METHODS["vdsh_backprop"].from_params(8, {}).residual is False
    with pytest.raises(ValueError, match="unknown key"):
        METHODS["dtsh"].from_params(8, {"dtsh": {"depth": 3}})
    with pytest.raises(TypeError, match="integer"):
        METHODS["itq"].from_params(8, {"itq": {"n_iter": 2.5}})


def test_bad_hyperparameters_are_named():
    X, y = blobs(10, 2, 4)
    with pytest.raises(ValueError, match="epochs"):
        METHODS["dpsh"](bits=4, epochs=0).fit(X, y)
    with pytest.raises(ValueError, match="gamma"):
        METHODS["tie_ap"](bits=4, gamma=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="single-label"):
        METHODS["dcwh"](bits=4, epochs=1).fit(X, label_matrix(y).astype(int))


def test_multilabel_pairwise_methods_run():
    X, y = blobs(10, 3, 6)
    Y = label_matrix(y).astype(np.uint8)
    Y[::4, 0] = 1  # some items carry two labels
    for name in ("dpsh", "dtsh", "tie_ap", "vdsh_backprop", "sdh"):
        m = build(name, bits=4).fit(X, Y)
        assert np.all(np.isfinite(m.project(X)))


def test_pca_directions_match_svd(rng):
    for shape in ((40, 6), (5, 9)):
        Xc = rng.standard_normal(shape) * np.arange(1, shape[1] + 1)
        Xc -= Xc.mean(0)
        P = itq.pca_directions(Xc, 3)
        _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
        np.testing.assert_allclose(np.abs(P.T @ Vt[:3].T), np.eye(3), atol=1e-8)


def test_residual_init_keeps_the_forward_scale_at_depth():
    """Scaled residual branches: the second moment of the last hidden layer stays within a
    small factor of the first at depth 64 (unit-scale He branches grow it ~2x per layer)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 32))
    for depth in (4, 64):
        params = mlp.init_mlp(32, depth, 64, 8, rng, residual=True)
        _, (acts, _) = mlp.mlp_forward(params, X, residual=True)
        growth = np.mean(acts[-1] ** 2) / np.mean(acts[1] ** 2)
        assert 1.0 < growth < np.e ** 2, (depth, growth)
    unscaled = mlp.init_mlp(32, 16, 64, 8, np.random.default_rng(1))      # residual=False scales
    _, (acts, _) = mlp.mlp_forward(unscaled, X, residual=True)
    assert np.mean(acts[-1] ** 2) / np.mean(acts[1] ** 2) > 1000          # the failure it fixes


# --- the classifier sanity row (Sablayrolles et al. 2017) -------------------------------------

def test_classifier_cross_entropy_gradcheck(rng):
    from vdsh_numba.methods.baselines.classifier import softmax_cross_entropy
    U = rng.standard_normal((6, 4))
    Y = label_matrix(rng.integers(0, 4, 6), 4)
    _, dU = softmax_cross_entropy(U, Y)
    np.testing.assert_allclose(dU, num_grad(lambda: softmax_cross_entropy(U, Y)[0], U), atol=1e-7)
    # against the textbook formula: -mean log(exp(u_y) / sum exp(u))
    ref = -np.mean(np.log(np.exp(U[Y > 0]) / np.exp(U).sum(axis=1)))
    assert softmax_cross_entropy(U, Y)[0] == pytest.approx(ref, rel=1e-12)


def test_classifier_codes_are_the_predicted_class_codewords():
    from vdsh_numba.codes import pack_codes
    X, y = blobs(20, 4, 8, spread=1.0)
    m = build("classifier", bits=16, epochs=30).fit(X, y)
    pred = m.predict(X)
    assert np.mean(pred == y) > 0.9
    np.testing.assert_array_equal(m.encode(X), pack_codes(m.codebook_[pred]))
    C = m.codebook_
    assert C.shape == (4, 16) and set(np.unique(C)) == {-1.0, 1.0}
    dist = (16 - C @ C.T) / 2
    assert dist[~np.eye(4, dtype=bool)].min() >= 4  # codewords far apart
    with pytest.raises(ValueError, match="single-label"):
        build("classifier").fit(X, label_matrix(y))
