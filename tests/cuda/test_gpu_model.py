"""VDSH trained on the (simulated) GPU against the CPU backend: depth 3, width 16, 200 samples.

Tolerance (documented in vdsh_numba/gpu_model.py): the GPU's GEMMs sum in another order than
the CPU's BLAS, so parameters agree to float32 rounding, not bit for bit. Required: >= 99% of
the training codes and of the encoded codes identical, objectives within 1e-3 relative.
"""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from vdsh_numba.base import label_matrix
from vdsh_numba.gpu_model import fit_vdsh_gpu, project_gpu
from vdsh_numba.model import VDSH

PARAMS = dict(bits=12, depth=3, width=16, seed=0, sweeps=2, first_width=0)  # GPU: equal widths


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))[:200]
    X = (X[idx] - X.mean(0)) / (X.std() + 1e-9)
    return X.astype(np.float64), y[idx]


@pytest.fixture(scope="module")
def trained(data):
    # module-scoped, so the per-test small_launch patch is not active here. The simulator's cost
    # is per thread: few threads, each striding over many items, across several blocks.
    from vdsh_numba import config
    names = ("CUDA_THREADS_PER_BLOCK", "CUDA_GEMM_TILE", "CUDA_MAX_BLOCKS")
    saved = [getattr(config, k) for k in names]
    for k, v in zip(names, (32, 8, 4)):
        setattr(config, k, v)
    X, y = data
    cpu = VDSH(**PARAMS).fit(X, y)
    gpu = VDSH(**PARAMS)
    gpu.n_features_in_, gpu.history_ = X.shape[1], []
    Xc = gpu._clip(np.ascontiguousarray(X, dtype=np.float32))
    try:
        fit_vdsh_gpu(gpu, Xc, label_matrix(y))
    finally:
        for k, v in zip(names, saved):
            setattr(config, k, v)
    return cpu, gpu, Xc


def test_training_matches_cpu(trained):
    cpu, gpu, _ = trained
    assert len(gpu.history_) == len(cpu.history_) == PARAMS["sweeps"]
    assert set(gpu.history_[0]) == set(cpu.history_[0])
    agree = np.mean(gpu.B_train_ == cpu.B_train_)
    assert agree >= 0.99, f"training codes agree on {agree:.4f} of the bits"
    for hg, hc in zip(gpu.history_, cpu.history_):
        np.testing.assert_allclose(hg["objective"], hc["objective"], rtol=1e-3)
        np.testing.assert_allclose(hg["label_loss"], hc["label_loss"], rtol=1e-3)
    for Wg, Wc in zip(gpu.W_ + [gpu.Wo_], cpu.W_ + [cpu.Wo_]):
        np.testing.assert_allclose(Wg, Wc, rtol=1e-2, atol=1e-3)


def test_projection_matches_cpu(trained):
    cpu, gpu, Xc = trained
    U = project_gpu(Xc, gpu.W_, gpu.b_, gpu.Wo_, gpu.bo_, gpu.train["residual"])
    np.testing.assert_allclose(U, gpu._project(Xc), rtol=1e-4, atol=1e-4)  # same weights, CPU forward
    agree = np.mean((U > 0) == (cpu._project(Xc) > 0))
    assert agree >= 0.99, f"encoded bits agree on {agree:.4f}"
