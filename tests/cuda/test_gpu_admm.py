"""Every kernel of vdsh_numba.methods.vdsh.gpu_admm against its CPU twin (vdsh_numba.methods.vdsh.admm) and tests/naive.py.

Under the simulator the elementwise kernels reproduce the CPU bit for bit (same code, same
types); on a GPU NVVM may contract multiply-adds into FMAs, hence the small tolerance there.
Reductions sum each row in order and the row sums with numpy, as the CPU kernels do: equal
under the simulator, relative 1e-12 on a GPU.
"""
import numpy as np
import pytest
from numba import cuda
from numba.core import config as numba_config

from tests import naive
from vdsh_numba.methods.vdsh import admm, gpu_admm
from vdsh_numba import config

SIM = bool(numba_config.ENABLE_CUDASIM)
N, W = 13, 7  # 91 threads: 12 blocks of 8


def _arr(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def same_sum(got, cpu):
    """Reductions: row sums in order, then numpy's sum, as on the CPU: equal under the simulator."""
    if SIM:
        assert got == cpu
    else:
        np.testing.assert_allclose(got, cpu, rtol=1e-12)


def same(got, cpu):
    if SIM:
        np.testing.assert_array_equal(got, cpu)
    else:
        np.testing.assert_allclose(got, cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("residual", [False, True])
def test_bias_act(residual):
    rng = np.random.default_rng(1)
    p, a_prev, b = _arr(rng, N, W), _arr(rng, N, W), _arr(rng, W)
    z, a = np.empty_like(p), np.empty_like(p)
    admm.bias_act(p, b, a_prev, residual, z, a)
    zd, ad = cuda.device_array_like(p), cuda.device_array_like(p)
    gpu_admm.bias_act(cuda.to_device(p), cuda.to_device(b), cuda.to_device(a_prev), residual, zd, ad)
    same(zd.copy_to_host(), z)
    same(ad.copy_to_host(), a)
    rz, ra = naive.bias_act(p, b, a_prev, residual)
    np.testing.assert_allclose(ad.copy_to_host(), ra, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("beta,gamma", [(1.0, 1.0), (0.1, 2.0)])
def test_z_update(residual, beta, gamma):
    rng = np.random.default_rng(2)
    a, a_prev, p, lam, b = _arr(rng, N, W), _arr(rng, N, W), _arr(rng, N, W), 0.3 * _arr(rng, N, W), _arr(rng, W)
    cpu = np.empty_like(p)
    admm.z_update(a, a_prev, p, b, lam, beta, gamma, residual, cpu)
    out = cuda.device_array_like(p)
    gpu_admm.z_update(*(cuda.to_device(x) for x in (a, a_prev, p, b, lam)), beta, gamma, residual, out)
    got = out.copy_to_host()
    same(got, cpu)
    ref = naive.z_update(a, a_prev, p, b, lam, beta, gamma, residual)
    np.testing.assert_allclose(naive.z_objective(got, a, a_prev, p, b, lam, beta, gamma, residual),
                               naive.z_objective(ref, a, a_prev, p, b, lam, beta, gamma, residual),
                               rtol=1e-5, atol=1e-5)


def test_dual_update_and_shift_target():
    rng = np.random.default_rng(3)
    lam, z, p, b = _arr(rng, N, W), _arr(rng, N, W), _arr(rng, N, W), _arr(rng, W)
    lam_c = lam.copy()
    s_cpu = admm.dual_update(lam_c, z, p, b)
    lam_d = cuda.to_device(lam)
    s_gpu = gpu_admm.dual_update(lam_d, cuda.to_device(z), cuda.to_device(p), cuda.to_device(b))
    same(lam_d.copy_to_host(), lam_c)
    same_sum(s_gpu, s_cpu)
    ref_lam, ref_s = naive.dual_update(lam, z, p, b)
    np.testing.assert_allclose(s_gpu, ref_s, rtol=1e-6)
    cpu = np.empty_like(z)
    admm.shift_target(z, lam, b, cpu)
    out = cuda.device_array_like(z)
    gpu_admm.shift_target(cuda.to_device(z), cuda.to_device(lam), cuda.to_device(b), out)
    same(out.copy_to_host(), cpu)
    np.testing.assert_allclose(out.copy_to_host(), naive.shift_target(z, lam, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("residual_l,skip", [(False, 0.0), (True, 2.0)])
def test_a_rhs(residual_l, skip):
    rng = np.random.default_rng(4)
    q, a_next, z_next, a_prev, z_l = (_arr(rng, N, W) for _ in range(5))
    cpu = np.empty_like(q)
    admm.a_rhs(q, 0.7, a_next, z_next, skip, a_prev, z_l, 0.3, residual_l, cpu)
    out = cuda.device_array_like(q)
    d = [cuda.to_device(x) for x in (q, a_next, z_next, a_prev, z_l)]
    gpu_admm.a_rhs(d[0], 0.7, d[1], d[2], skip, d[3], d[4], 0.3, residual_l, out)
    same(out.copy_to_host(), cpu)
    ref = naive.a_rhs(q, 0.7, a_next, z_next, skip, a_prev, z_l, 0.3, residual_l)
    np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_a_residual_and_sq_dist(residual):
    rng = np.random.default_rng(5)
    a, a_prev, z = _arr(rng, N, W), _arr(rng, N, W), _arr(rng, N, W)
    got = gpu_admm.a_residual(cuda.to_device(a), cuda.to_device(a_prev), cuda.to_device(z), residual)
    same_sum(got, admm.a_residual(a, a_prev, z, residual))
    np.testing.assert_allclose(got, naive.a_residual(a, a_prev, z, residual), rtol=1e-6)
    B = np.where(rng.standard_normal((N, 5)) > 0, 1.0, -1.0)
    for x, y in ((a, z), (B, a[:, :5])):  # float32 pairs and float64 codes vs float32 outputs
        got = gpu_admm.sq_dist(cuda.to_device(x), cuda.to_device(np.ascontiguousarray(y)))
        same_sum(got, admm.sq_dist(x, np.ascontiguousarray(y)))
        np.testing.assert_allclose(got, naive.sq_dist(x, y), rtol=1e-12)


def test_dcc_codes():
    rng = np.random.default_rng(6)
    n, k = 21, 6
    B = np.where(rng.standard_normal((n, k)) > 0, 1.0, -1.0)
    Q = rng.standard_normal((n, k))
    G = rng.standard_normal((k, 3))
    S = G @ G.T
    Bc = B.copy()
    f_cpu = admm.dcc_codes(Bc, Q, S, 3)
    Bd = cuda.to_device(B)
    f_gpu = gpu_admm.dcc_codes(Bd, cuda.to_device(Q), cuda.to_device(S), 3)
    np.testing.assert_array_equal(Bd.copy_to_host(), Bc)
    assert f_gpu == f_cpu
    Bn, fn = naive.dcc_codes(B, Q, S, 3)
    np.testing.assert_array_equal(Bd.copy_to_host(), Bn)
    assert f_gpu == fn > 0


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_tiled(ta, tb, monkeypatch):
    monkeypatch.setattr(config, "CUDA_USE_CUPY", False)
    rng = np.random.default_rng(7)
    M, K, Nc = 9, 11, 6  # not multiples of the 4x4 tile: 3 x 2 blocks, 3 k-steps
    A = _arr(rng, K, M) if ta else _arr(rng, M, K)
    B = _arr(rng, Nc, K) if tb else _arr(rng, K, Nc)
    ref = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
    out = cuda.device_array((M, Nc), np.float32)
    gpu_admm.gemm(cuda.to_device(A), cuda.to_device(B), out, transA=ta, transB=tb)
    np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-5, atol=1e-5)
    C0 = _arr(rng, M, Nc)
    out = cuda.to_device(C0)
    gpu_admm.gemm(cuda.to_device(A), cuda.to_device(B), out, ta, tb, alpha=0.5, beta=2.0)
    np.testing.assert_allclose(out.copy_to_host(), 0.5 * ref + 2.0 * C0, rtol=1e-5, atol=1e-5)


def test_gemm_checks():
    a = cuda.device_array((3, 4), np.float32)
    with pytest.raises(ValueError, match="gemm"):
        gpu_admm.gemm(a, a, cuda.device_array((3, 3), np.float32))
    with pytest.raises(TypeError, match="float32"):
        gpu_admm.gemm(a, a, cuda.device_array((3, 3), np.float64), transB=True)


def test_helpers():
    rng = np.random.default_rng(8)
    x, b = _arr(rng, N, W), _arr(rng, W)
    out = cuda.device_array_like(x)
    gpu_admm.add_bias(cuda.to_device(x), cuda.to_device(b), out)
    same(out.copy_to_host(), x + b)
    mu = cuda.device_array(W, np.float64)
    gpu_admm.col_mean(cuda.to_device(x), mu)
    np.testing.assert_allclose(mu.copy_to_host(), x.mean(axis=0, dtype=np.float64), rtol=1e-12)
    B = np.where(rng.standard_normal((N, 4)) > 0, 1.0, -1.0)
    Bf = cuda.device_array(B.shape, np.float32)
    gpu_admm.cast(cuda.to_device(B), Bf)
    np.testing.assert_array_equal(Bf.copy_to_host(), B.astype(np.float32))
    Y = np.eye(3)[rng.integers(0, 3, N)]
    G, U = rng.standard_normal((4, 3)), _arr(rng, N, 4)
    Q = cuda.device_array((N, 4), np.float64)
    gpu_admm.codes_rhs(cuda.to_device(Y), cuda.to_device(G), cuda.to_device(U), 0.01, Q)
    np.testing.assert_array_equal(Q.copy_to_host(), Y @ G.T + 0.01 * U)  # one-hot Y: exact
    assert gpu_admm.sign_agreement(cuda.to_device(U), cuda.to_device(B)) == int(((U > 0) == (B > 0)).sum())
