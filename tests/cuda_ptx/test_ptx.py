"""Compile every CUDA kernel to PTX for compute capability 9.0 (H100/H200), without a GPU.

The simulator does no type checking; NVVM does. This test runs in the ordinary pytest run
(simulator off). It needs numba-cuda with NVVM (``pip install 'vdsh-numba[cuda]'``): where
that is missing it skips, unless ``VDSH_REQUIRE_PTX=1`` (set in CI), which makes it fail.
Every kernel must be listed in its module's ``KERNELS`` and have signatures here, so a new
kernel cannot go unchecked.
"""
import inspect
import os

import pytest
from numba import types as t
from numba.core import config as numba_config

CC = (9, 0)
f32, f64, u64, i32, i64, b1 = t.float32, t.float64, t.uint64, t.int32, t.int64, t.boolean
M32, M64 = f32[:, ::1], f64[:, ::1]
V32, V64 = f32[::1], f64[::1]

SIGNATURES = {
    "methods.vdsh.gpu_admm": {
        "_bias_act_kernel": [(M32, V32, M32, b1, M32, M32)],
        "_z_update_kernel": [(M32, M32, M32, V32, M32, f64, f64, b1, M32)],
        "_dual_update_kernel": [(M32, M32, M32, V32, V64)],
        "_shift_target_kernel": [(M32, M32, V32, M32)],
        "_a_rhs_kernel": [(M32, f64, M32, M32, f64, M32, M32, f64, b1, M32)],
        "_a_residual_kernel": [(M32, M32, M32, b1, V64)],
        "_sq_dist_kernel": [(M32, M32, V64), (M64, M32, V64)],
        "_dcc_codes_kernel": [(M64, M64, M64, i64, i64[::1])],
        "_add_bias_kernel": [(M32, V32, M32)],
        "_col_mean_kernel": [(M32, V64)],
        "_cast_kernel": [(M64, M32), (M32, M32)],  # codes -> float32; zeros (multipliers off)
        "_codes_rhs_kernel": [(M64, M64, M32, f64, M64)],
        "_sign_agreement_kernel": [(M32, M64, V64)],
        "_gemm_kernel": [(M32, M32, M32, b1, b1, f64, f64, i64),
                         (f32[:, :], f32[:, :], M32, b1, b1, f64, f64, i64)],
    },
    "search.gpu_hamming": {
        "_hist_kernel": [(u64[:, ::1], u64[:, ::1], i64, i64, i32[:, :, ::1])],
        "_plan_kernel": [(i32[:, :, ::1], i64, b1, i32[::1], i64[::1])],
        "_select_kernel": [(u64[:, ::1], u64[:, ::1], i64, i32[::1], i64[::1], i64[::1],
                            i32[:, :, ::1], i32[::1], i64[::1])],
    },
}


def _nvvm_missing():
    if numba_config.ENABLE_CUDASIM:
        return "the simulator is on: PTX is compiled in the ordinary (non-simulator) run"
    try:
        from numba import cuda
        cuda.compile_ptx(lambda x: None, (t.int32,), cc=CC)
    except Exception as e:  # no numba-cuda, no NVVM/NVRTC
        return f"cannot compile PTX here ({type(e).__name__}: {e}); pip install 'vdsh-numba[cuda]'"
    return None


@pytest.fixture(scope="module")
def nvvm():
    why = _nvvm_missing()
    if why:
        if os.environ.get("VDSH_REQUIRE_PTX") == "1" and not numba_config.ENABLE_CUDASIM:
            pytest.fail(why)
        pytest.skip(why)


CASES = [(m, k, i) for m, ks in SIGNATURES.items() for k, sigs in ks.items() for i in range(len(sigs))]


@pytest.mark.parametrize("module,kernel,which", CASES, ids=[f"{m}.{k}[{i}]" for m, k, i in CASES])
def test_kernel_compiles_to_ptx(nvvm, module, kernel, which):
    import importlib
    from numba import cuda
    mod = importlib.import_module(f"vdsh_numba.{module}")
    fn = getattr(mod, kernel)
    ptx, resty = cuda.compile_ptx(fn.py_func, SIGNATURES[module][kernel][which], cc=CC)
    assert resty == t.void and ".entry" in ptx and "sm_90" in ptx


@pytest.mark.parametrize("module", sorted(SIGNATURES))
def test_every_kernel_has_signatures(module):
    """Every ``@cuda.jit`` kernel of the module is in its ``KERNELS`` and in SIGNATURES."""
    import importlib
    mod = importlib.import_module(f"vdsh_numba.{module}")
    found = set()
    for name, obj in vars(mod).items():
        py = getattr(obj, "py_func", None)
        if py is None or not inspect.isfunction(py) or py.__module__ != mod.__name__:
            continue
        if getattr(obj, "targetoptions", {}).get("device") or getattr(obj, "_device", False):
            continue  # device functions are compiled inside the kernels
        found.add(name)
    if not numba_config.ENABLE_CUDASIM:
        assert found == set(mod.KERNELS), f"kernels of {module} vs its KERNELS"
    assert set(mod.KERNELS) == set(SIGNATURES[module]), f"{module}.KERNELS vs SIGNATURES"
