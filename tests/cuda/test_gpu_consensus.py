"""The consensus scheme's GPU tasks (vdsh_numba.methods.vdsh.gpu_consensus) against the CPU tasks: two network
steps of consensus_sweep with ops=gpu_consensus give the CPU's weights, duals and multipliers.

The device GEMM sums in another order than BLAS, hence a tolerance rather than bitwise equality;
the host halves (the w x w solves) are the very same functions on both sides.
"""
import copy

import numpy as np
import pytest
from numba import cuda

from vdsh_numba import config
from vdsh_numba.methods.vdsh import TRAIN_DEFAULTS, VDSH, consensus as cs, forward, gpu_consensus
from vdsh_numba.methods.vdsh.engine import residual_flags
from vdsh_numba.methods.vdsh.executors import SerialExecutor


def _state(local, residual):
    """A consensus state from the engine's start (the weights of VDSH's initialisation), with
    non-zero hidden weights and multipliers so that every term is exercised."""
    rng = np.random.default_rng(5)
    n, d, depth, width, bits = 12, 5, 3, 4, 3
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = np.arange(n) % 3
    m = VDSH(bits, depth=depth, width=width, first_width=0, seed=0, sweeps=0, residual=residual,
             init="random").fit(X, y)
    Ws = [(W if j == 0 else 0.3 * rng.standard_normal(W.shape)).astype(np.float32) for j, W in enumerate(m.W_)]
    Ws, bs = Ws + [m.Wo_], [b.copy() for b in m.b_] + [m.bo_]
    flags = residual_flags(residual, Ws[:depth])
    _, A, Z = forward(X, Ws[:depth], bs[:depth], Ws[depth], bs[depth], residual, keep=True)
    keys = cs.copy_keys(depth)
    copies = {(mm, j): (Ws[j].copy(), bs[j].copy()) for mm, j in keys}
    duals = {(mm, j): (np.zeros_like(Ws[j]), np.zeros_like(bs[j])) for mm, j in keys}
    Lam = [(0.1 * rng.standard_normal((n, W.shape[0]))).astype(np.float32) for W in Ws[:depth]]
    B = np.where(rng.standard_normal((n, bits)) > 0, 1.0, -1.0).astype(np.float32)
    o = {**TRAIN_DEFAULTS, "local": local}
    return cs.network_state(Ws, bs, A, Z, Lam, B, copies, duals, o, 0.1, 0.1, 0.1, flags)


def _to_device(S):
    G = copy.deepcopy(S)
    G["A"] = [cuda.to_device(a) for a in S["A"]]
    G["Z"] = [None] + [cuda.to_device(z) for z in S["Z"][1:]]
    G["Lam"] = [cuda.to_device(x) for x in S["Lam"]]
    G["B"] = cuda.to_device(S["B"])
    return G


@pytest.mark.parametrize("local,residual", [("split", True), ("through", False)])
def test_gpu_sweep_matches_cpu(local, residual):
    S = _state(local, residual)
    G = _to_device(S)
    ex = SerialExecutor()
    for _ in range(2):
        rc = cs.consensus_sweep(S, ex)
        rg = cs.consensus_sweep(G, ex, ops=gpu_consensus)
        for key in ("rz", "ra"):
            assert rg[key] == pytest.approx(rc[key], rel=1e-4, abs=1e-6)
    for a, b in zip(S["Ws"] + S["bs"], G["Ws"] + G["bs"]):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
    for key in S["U"]:
        np.testing.assert_allclose(G["U"][key][0], S["U"][key][0], rtol=1e-3, atol=1e-4)
    for h in range(1, len(S["A"])):
        np.testing.assert_allclose(G["A"][h].copy_to_host(), S["A"][h], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(G["Z"][h].copy_to_host(), S["Z"][h], rtol=1e-3, atol=1e-4)
    for a, b in zip(S["Lam"], G["Lam"]):
        np.testing.assert_allclose(b.copy_to_host(), a, rtol=1e-3, atol=1e-4)


def test_consensus_fit_cuda_equals_cpu_codes(monkeypatch):
    """VDSH(scheme="consensus", backend="cuda"): the engine runs the gpu_consensus tasks; a tiny
    fit (wide first layer, a residual layer, copies that differ) gives the CPU's codes and its
    weights to rounding."""
    for k, v in {"CUDA_THREADS_PER_BLOCK": 16, "CUDA_GEMM_TILE": 16, "CUDA_MAX_BLOCKS": 2}.items():
        monkeypatch.setattr(config, k, v)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 12)
    X = 3.0 * rng.standard_normal((4, 10))[y] + rng.standard_normal((48, 10))
    kw = dict(depth=3, width=8, first_width=12, seed=0, sweeps=2, scheme="consensus", local="through",
              eta=0.1)
    cpu = VDSH(8, **kw).fit(X, y)
    gpu = VDSH(8, backend="cuda", **kw).fit(X, y)
    assert cpu.history_[-1]["consensus"] > 0
    np.testing.assert_array_equal(gpu.B_train_, cpu.B_train_)
    for a, b in zip(cpu.W_ + [cpu.Wo_], gpu.W_ + [gpu.Wo_]):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="vdsh.scheduler is 'threads', but on backend 'cuda'"):
        VDSH(8, backend="cuda", scheduler="threads", workers=2, **kw).fit(X, y)
