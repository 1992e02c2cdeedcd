"""VDSH trained with ``backend="cuda"`` (numba's simulator, or a GPU) against the CPU backend.

One engine (vdsh_numba.methods.vdsh.engine) runs both backends, so every training feature is exercised
here on the CUDA ops: a wide first layer (first_width != width), a residual layer, a checkpoint
every sweep, a fit interrupted after a sweep and resumed from its checkpoint, the final refit,
and the divergence guard on a NaN injected into a device array.

The CUDA products sum in another order than the CPU's BLAS (float32), so weights agree to
rounding, not bit for bit; on this tiny, well separated problem the codes are equal. The
resumed CUDA fit is compared bitwise with the uninterrupted CUDA fit.
"""
import numpy as np
import pytest

from vdsh_numba import config
from vdsh_numba.methods.vdsh import VDSH, TrainingDiverged, cpu_ops, cuda_ops
from vdsh_numba.methods.vdsh.engine import project

# first layer 12 units -> width 8 (layer 2 maps 12 -> 8), layer 3 residual; all dims <= 16, so
# every simulated GEMM is one or two 16 x 16 tiles (the simulator's cost is per tile step)
PARAMS = dict(bits=8, depth=3, width=8, first_width=12, seed=0, sweeps=3, residual=True,
              final_refit=True, checkpoint_every=1)
LAUNCH = {"CUDA_THREADS_PER_BLOCK": 16, "CUDA_GEMM_TILE": 16, "CUDA_MAX_BLOCKS": 2}


class Stop(Exception):
    """Raised from the sweep hook: the process 'dies' after a sweep."""


def data(n=48, d=10, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n // classes)
    X = 3.0 * rng.standard_normal((classes, d))[y] + rng.standard_normal((n, d))
    return X / X.std(), y


def _arrays(m):
    return {**{k: np.asarray(v) for k, v in m._state().items()}, "B": m.B_train_}


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    saved = {k: getattr(config, k) for k in LAUNCH}
    for k, v in LAUNCH.items():
        setattr(config, k, v)
    tmp = tmp_path_factory.mktemp("ck")
    X, y = data()
    try:
        cpu = VDSH(**PARAMS).fit(X, y)
        full = VDSH(backend="cuda", **PARAMS).fit(X, y, checkpoint_path=tmp / "full.npz")
        ck = tmp / "killed.npz"
        killed = VDSH(backend="cuda", **PARAMS)

        def die(it, m):
            if it + 1 == 2:
                raise Stop
        killed.on_sweep = die
        with pytest.raises(Stop):
            killed.fit(X, y, checkpoint_path=ck)
        resumed = VDSH(backend="cuda", **PARAMS).fit(X, y, checkpoint_path=ck)
    finally:
        for k, v in saved.items():
            setattr(config, k, v)
    return X, y, cpu, full, resumed


def test_resumed_fit_is_bitwise_the_uninterrupted_one(fits):
    _, _, _, full, resumed = fits
    assert resumed.resumed_from_ == 2 and full.resumed_from_ == 0
    assert [h["iteration"] for h in resumed.history_] == [1, 2, 3]
    a, b = _arrays(full), _arrays(resumed)
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_codes_and_history_match_the_cpu_fit(fits):
    X, _, cpu, full, _ = fits
    assert [W.shape for W in full.W_] == [(12, 10), (8, 12), (8, 8)]
    np.testing.assert_array_equal(full.B_train_, cpu.B_train_)
    np.testing.assert_array_equal(full.encode(X), cpu.encode(X))
    assert len(full.history_) == len(cpu.history_) == PARAMS["sweeps"]
    for hg, hc in zip(full.history_, cpu.history_):
        assert set(hg) == set(hc)
        np.testing.assert_allclose(hg["objective"], hc["objective"], rtol=1e-4)
        np.testing.assert_allclose(hg["primal_z"], hc["primal_z"], rtol=1e-2, atol=1e-6)
    for Wg, Wc in zip(full.W_ + [full.Wo_], cpu.W_ + [cpu.Wo_]):
        np.testing.assert_allclose(Wg, Wc, rtol=1e-3, atol=1e-4)


def test_projection_matches_the_cpu_forward(fits, monkeypatch):
    X, _, _, full, _ = fits
    monkeypatch.setattr(config, "CUDA_FORWARD_ROWS", 20)  # three batches of rows
    monkeypatch.setattr(config, "CUDA_GEMM_TILE", 16)
    Xc = full._clip(X.astype(np.float32))
    args = (full.W_, full.b_, full.Wo_, full.bo_, full.train["residual"])
    np.testing.assert_allclose(project(cuda_ops, Xc, *args), project(cpu_ops, Xc, *args), rtol=1e-5, atol=1e-5)


def test_nan_in_the_cuda_path_names_sweep_and_layer(tmp_path, monkeypatch):
    for k, v in LAUNCH.items():
        monkeypatch.setattr(config, k, v)
    X, y = data()
    calls = []
    z_update = cuda_ops.z_update

    def poisoned(a, a_prev, p, b, lam, beta, gamma, residual, z_out):
        z_update(a, a_prev, p, b, lam, beta, gamma, residual, z_out)
        calls.append(z_out.shape)
        if len(calls) == 5:  # sweep 2 (3 layers per sweep, top-down): 3, then 2 -> hidden layer 2
            z = z_out.copy_to_host()
            z[3, 1] = np.nan
            z_out.copy_to_device(z)
    monkeypatch.setattr(cuda_ops, "z_update", poisoned)
    ck = tmp_path / "ck.npz"
    m = VDSH(backend="cuda", **{**PARAMS, "sweeps": 2})
    with pytest.raises(TrainingDiverged, match=r"sweep 2, hidden layer 2") as e:
        m.fit(X, y, checkpoint_path=ck)
    assert e.value.sweep == 2 and e.value.layer == 2 and e.value.checkpoint == str(ck)
    assert calls[4] == (48, 8)
    with np.load(ck) as d:  # the last checkpoint (sweep 1) is kept, finite
        assert all(np.isfinite(d[k]).all() for k in d.files if k != "__meta__")
