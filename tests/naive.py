"""Slow, obviously correct numpy references for every kernel (stumpy's tests/naive.py habit).

Every kernel test has the shape ``ref = naive.f(...)``, ``got = f(...)``, compare.
"""
import numpy as np


def pack_codes(x):
    """Bit j of row i -> byte j // 8, value 1 << (7 - j % 8), bit = x > 0."""
    x = np.asarray(x)
    n, bits = x.shape
    out = np.zeros((n, (bits + 7) // 8), dtype=np.uint8)
    for i in range(n):
        for j in range(bits):
            if x[i, j] > 0:
                out[i, j // 8] |= np.uint8(1 << (7 - j % 8))
    return out
