"""The CUDA tests: numba's simulator (``NUMBA_ENABLE_CUDASIM=1``) on the CPU, or a real GPU.

Run them in their own process, with the variable set before numba is imported::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/cuda

In the ordinary ``python -m pytest`` run (simulator off) they are skipped, with the reason,
unless an NVIDIA GPU is usable, in which case they run on it. Every test patches the launch
parameters of :mod:`vdsh_numba.config` small so that tiny inputs span several blocks.
"""
import os

import pytest
from numba.core import config as numba_config

SIM = bool(numba_config.ENABLE_CUDASIM)

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" and not SIM:
    raise pytest.UsageError(
        "NUMBA_ENABLE_CUDASIM=1 was set after numba was imported: numba only reads it at import. "
        "Run `NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/cuda` in its own process.")


def _skip_reason():
    if SIM:
        return None
    from vdsh_numba.backend import cuda_available
    if cuda_available():
        return None
    return ("CUDA tests need numba's simulator or a GPU: run "
            "`NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/cuda` in its own process")


if _skip_reason():  # ordinary run without simulator or GPU: not collected (module fixtures train)
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True)
def _cuda_or_skip():
    why = _skip_reason()
    if why:
        pytest.skip(why)


@pytest.fixture(autouse=True)
def small_launch(monkeypatch):
    """Launch parameters small enough that inputs of a few dozen rows span several blocks."""
    from vdsh_numba import config
    if SIM:
        monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 8)
        monkeypatch.setattr(config, "CUDA_GEMM_TILE", 4)
        monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 3)  # several blocks, several items per thread
        monkeypatch.setattr(config, "CUDA_HAMMING_QUERIES_PER_BLOCK", 3)
        monkeypatch.setattr(config, "CUDA_HAMMING_TARGET_THREADS", 64)
        monkeypatch.setattr(config, "CUDA_HAMMING_MIN_SEGMENT_ROWS", 7)
    return config
