"""Packed binary codes: the one bit order used everywhere in vdsh_numba.

Bit order (numpy's ``packbits`` default, "big"): bit ``j`` of a code of length
``bits`` lives in byte ``j // 8`` at value ``1 << (7 - j % 8)``; the unused low
bits of the last byte are zero. Zero padding leaves Hamming distances unchanged.

A code bit is 1 where the input is strictly positive, so ``{-1, +1}`` signs,
``{0, 1}`` bits and real network outputs (bit = ``sign(u) > 0``) all pack with the
same rule.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pack_codes", "unpack_codes", "code_bytes"]


def code_bytes(bits: int) -> int:
    """Bytes per packed code: ``ceil(bits / 8)``."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
        raise ValueError(f"bits must be an integer >= 1, got {bits!r}")
    return (int(bits) + 7) // 8


def pack_codes(signs_or_bits) -> np.ndarray:
    """Pack a ``(n, bits)`` array of signs, bits or real values into ``uint8`` codes.

    Parameters
    ----------
    signs_or_bits : array_like, shape (n, bits)
        Bit ``j`` of row ``i`` is 1 where ``signs_or_bits[i, j] > 0``.

    Returns
    -------
    codes : ndarray of uint8, shape (n, ceil(bits / 8)), C-contiguous.
    """
    a = np.asarray(signs_or_bits)
    if a.ndim != 2:
        raise ValueError(f"signs_or_bits must be 2-D (n, bits), got shape {a.shape}")
    if a.shape[1] < 1:
        raise ValueError("signs_or_bits must have at least one bit column")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"signs_or_bits must be numeric or bool, got dtype {a.dtype}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError("signs_or_bits contains NaN or Inf")
    return np.ascontiguousarray(np.packbits(a > 0, axis=1, bitorder="big"))


def unpack_codes(codes, bits: int, signed: bool = False) -> np.ndarray:
    """Inverse of :func:`pack_codes`.

    Returns ``uint8`` bits in {0, 1} of shape ``(n, bits)``, or ``int8`` signs in
    {-1, +1} with ``signed=True``.
    """
    nb = code_bytes(bits)
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
        raise TypeError(f"codes must be a numpy uint8 array, got {type(codes).__name__} "
                        f"of dtype {getattr(codes, 'dtype', None)}")
    if codes.ndim != 2 or codes.shape[1] != nb:
        raise ValueError(f"codes must have shape (n, {nb}) for bits={bits}, got {codes.shape}")
    b = np.unpackbits(codes, axis=1, count=bits, bitorder="big")
    if signed:
        return (b.astype(np.int8) * 2 - 1)
    return b
