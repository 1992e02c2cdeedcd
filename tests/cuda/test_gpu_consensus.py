"""The consensus scheme's GPU tasks (vdsh_numba.methods.vdsh.gpu_consensus) against the CPU tasks: two network
steps of consensus_sweep with ops=gpu_consensus give the CPU's weights, duals and multipliers.

The device GEMM sums in another order than BLAS, hence a tolerance rather than bitwise equality;
the host halves (the w x w solves) are the very same functions on both sides.
"""
import copy

import numpy as np
import pytest
from numba import cuda

from vdsh_numba.methods.vdsh import consensus as cs, gpu_consensus
from vdsh_numba.methods.vdsh.executors import SerialExecutor
from vdsh_numba.methods.vdsh import forward


def _state(local, residual):
    rng = np.random.default_rng(5)
    n, d, depth, width, bits = 12, 5, 3, 4, 3
    X = rng.standard_normal((n, d)).astype(np.float32)
    Y = np.eye(3)[np.arange(n) % 3]
    o = {**cs.CONSENSUS_DEFAULTS, "local": local, "residual": residual, "eta": 0.1}
    S, _, _ = cs.init_consensus(X, Y, depth, width, bits, 0, o)
    # non-zero hidden weights and multipliers so that every term is exercised
    for j in range(1, depth):
        S["Ws"][j] = (0.3 * rng.standard_normal(S["Ws"][j].shape)).astype(np.float32)
    S["copies"] = {key: (S["Ws"][key[1]].copy(), S["bs"][key[1]].copy()) for key in S["copies"]}
    S["residual"] = [cs.is_residual(residual, j, S["Ws"][j]) for j in range(depth)]
    S["Lam"] = [(0.1 * rng.standard_normal(L.shape)).astype(np.float32) for L in S["Lam"]]
    _, A, Z = forward(X, S["Ws"][:depth], S["bs"][:depth], S["Ws"][depth], S["bs"][depth], residual, keep=True)
    S["A"], S["Z"] = A, Z
    return S


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
