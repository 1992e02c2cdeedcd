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


def gist(img):
    """One image, line by line after Torralba's LMgist.m (createGabor, prefilt, gistGabor, downN)
    with its defaults (8 8 8 8 orientations, 4 blocks, fc_prefilt 4, boundary 32), float64."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        img = img.mean(axis=2)
    img = img - img.min()
    if img.max() > 0:
        img = 255 * img / img.max()
    # prefilt
    w, fc = 5, 4.0
    s1 = fc / np.sqrt(np.log(2))
    x = np.pad(np.log(img + 1), w, mode="symmetric")
    sn, sm = x.shape
    n = max(sn, sm)
    n = n + n % 2
    x = np.pad(x, ((0, n - sn), (0, n - sm)), mode="symmetric")
    fx, fy = np.meshgrid(np.arange(-n / 2, n / 2), np.arange(-n / 2, n / 2))
    gf = np.fft.fftshift(np.exp(-(fx ** 2 + fy ** 2) / s1 ** 2))
    out = x - np.real(np.fft.ifft2(np.fft.fft2(x) * gf))
    localstd = np.sqrt(np.abs(np.fft.ifft2(np.fft.fft2(out ** 2) * gf)))
    out = out / (0.2 + localstd)
    out = out[w:sn - w, w:sm - w]
    # createGabor on the padded size
    be = 32
    nr, nc = out.shape
    N = nr + 2 * be  # square images only, as LMgist
    fx, fy = np.meshgrid(np.arange(-N / 2, N / 2), np.arange(-N / 2, N / 2))
    fr = np.fft.fftshift(np.sqrt(fx ** 2 + fy ** 2))
    t = np.fft.fftshift(np.angle(fx + 1j * fy))
    G = []
    for i in range(4):
        for j in range(8):
            a, f0, b, th = 0.35, 0.3 / 1.85 ** i, 16 * 8 ** 2 / 32 ** 2, np.pi / 8 * j
            tr = t + th
            tr = tr + 2 * np.pi * (tr < -np.pi) - 2 * np.pi * (tr > np.pi)
            G.append(np.exp(-10 * a * (fr / N / f0 - 1) ** 2 - 2 * b * np.pi * tr ** 2))
    # gistGabor + downN
    F = np.fft.fft2(np.pad(out, be, mode="symmetric"))
    nx = np.fix(np.linspace(0, nr, 5)).astype(int)
    ny = np.fix(np.linspace(0, nc, 5)).astype(int)
    g = []
    for Gk in G:
        ig = np.abs(np.fft.ifft2(F * Gk))[be:be + nr, be:be + nc]
        v = np.zeros((4, 4))
        for xx in range(4):
            for yy in range(4):
                v[xx, yy] = ig[nx[xx]:nx[xx + 1], ny[yy]:ny[yy + 1]].mean()
        g.extend(v.reshape(-1, order="F"))  # MATLAB's column-major reshape(v, [W N])
    return np.array(g)
