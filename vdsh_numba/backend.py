"""The one place that decides whether ``backend="cuda"`` can run, and says why not.

``backend="cuda"`` never falls back to the CPU: :func:`require_cuda` raises a
``RuntimeError`` naming what is missing. Under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported) the CUDA backend is
available: kernels then run, slowly, on the CPU, which is how the CUDA code is
tested on machines without a GPU.

Importing this module never needs CUDA.

(Not named ``cuda_support``: numba-cuda's import redirector treats every module whose
dotted name contains ``numba.cuda`` -- ``vdsh_numba.cuda_support`` does -- as part of
``numba.cuda`` and recurses forever.)
"""
from __future__ import annotations

__all__ = ["BACKENDS", "check_backend", "cuda_available", "require_cuda", "simulated",
           "cupy_or_none"]

BACKENDS = ("cpu", "cuda")


def simulated() -> bool:
    """True when numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before numba's import)."""
    from numba.core import config
    return bool(config.ENABLE_CUDASIM)


def _missing() -> str | None:
    """Why the CUDA backend cannot run here, or None when it can."""
    try:
        from numba import cuda
    except ImportError as e:  # pragma: no cover - numba always ships a cuda module
        return f"backend='cuda' needs numba's CUDA target: importing numba.cuda failed ({e})"
    if simulated():
        return None
    if getattr(cuda, "implementation", "NVIDIA") != "NVIDIA":  # pragma: no cover
        return ("backend='cuda' needs the numba-cuda package: pip install 'vdsh-numba[cuda]'")
    try:
        ok = cuda.is_available()
    except Exception as e:  # pragma: no cover - a broken driver install
        return f"backend='cuda' needs a working NVIDIA driver: numba.cuda.is_available() raised {e!r}"
    if not ok:
        return ("backend='cuda' needs an NVIDIA GPU and driver: numba.cuda.is_available() is False "
                "(no GPU, no driver, or CUDA_VISIBLE_DEVICES hides it); use backend='cpu'")
    return None


def cuda_available() -> bool:
    """Whether ``backend="cuda"`` can run here (a GPU with a driver, or the simulator)."""
    return _missing() is None


def require_cuda() -> bool:
    """Return True if the CUDA backend can run, else raise ``RuntimeError`` saying what is missing."""
    why = _missing()
    if why is not None:
        raise RuntimeError(why)
    return True


def check_backend(backend, name: str = "backend") -> str:
    """Validate a backend name at a public boundary; for ``"cuda"`` also :func:`require_cuda`."""
    if backend not in BACKENDS:
        raise ValueError(f"{name} must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "cuda":
        require_cuda()
    return backend


def cupy_or_none():
    """CuPy if it is importable and usable (never under the simulator), else None.

    CuPy is an optional extra: it only supplies cuBLAS for the dense products; every
    kernel also has a ``numba.cuda`` path.
    """
    from . import config
    if simulated() or not config.CUDA_USE_CUPY:
        return None
    try:
        import cupy
    except ImportError:
        return None
    return cupy
