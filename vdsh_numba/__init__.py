"""vdsh-numba: VDSH (very deep supervised hashing trained by layer-wise ADMM) in Numba."""
from .codes import pack_codes, unpack_codes, code_bytes

__version__ = "0.1.0"
__all__ = ["pack_codes", "unpack_codes", "code_bytes", "VDSH", "HammingIndex"]


def __getattr__(name):  # lazy: importing the package stays cheap and never needs CUDA
    if name == "VDSH":
        from .methods.vdsh import VDSH
        return VDSH
    if name == "HammingIndex":
        from .search.hamming import HammingIndex
        return HammingIndex
    raise AttributeError(f"module 'vdsh_numba' has no attribute {name!r}")
