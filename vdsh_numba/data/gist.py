"""The GIST descriptor (Oliva & Torralba 2001) as the hashing literature computes it for CIFAR-10.

This is a batched port of Torralba's reference MATLAB code ``LMgist.m`` (``createGabor``,
``prefilt``, ``gistGabor``, ``downN``) with its default parameters, which is what papers from
Spectral Hashing (Weiss et al. 2008) to VDSH (Zhang et al. 2016) mean by "512-d GIST" on
CIFAR-10's 32 x 32 images:

1. grayscale = mean of the RGB channels; rescaled per image to [0, 255];
2. prefilter (``prefilt``, ``fc = 4``): ``log(1 + x)``, 5-pixel symmetric padding, whitening
   ``x - lowpass(x)`` and local contrast normalisation ``x / (0.2 + sqrt(lowpass(x^2)))`` with
   the Gaussian low-pass ``exp(-(fx^2 + fy^2) / s1^2)``, ``s1 = fc / sqrt(log 2)``;
3. symmetric padding by ``boundary = 32`` pixels; a bank of 4 scales x 8 orientations of Gabor
   transfer functions (``createGabor``) applied in the Fourier domain; magnitude of the response;
4. the magnitude cropped back to the image and averaged on a 4 x 4 grid (``downN``).

Output layout (LMgist's): feature ``f * 16 + col_block * 4 + row_block`` is filter ``f``
(``f = scale * 8 + orientation``, scale 0 the finest) averaged over block (row_block, col_block).

The FFTs are scipy.fft's (real FFTs for the prefilter, whose Gaussian is real and even; single
precision for the Gabor stage as in LMgist); the filter product and the magnitude/block
averaging are Numba kernels. The inverse FFT of each filtered spectrum is pruned: the first
1-D pass runs only on the spectrum lines where the filter exceeds ``SUPPORT_THRESHOLD`` (1e-7 of
its peak), the second only on the image's columns, not the padding's. The Numba kernels are
serial (``nogil``) and scipy.fft's ``workers`` parallelise the FFTs: on this shared 2-core
machine OpenMP-parallel kernels were 1.7x slower end to end (their spinning threads compete
with the FFT workers).
"""
from __future__ import annotations

import os
import sys

import numba
import numpy as np
import scipy.fft

__all__ = ["to_gray_255", "gist", "gabor_bank", "prefilter", "GIST_DEFAULTS", "gist_dim"]

#: LMgist's defaults (``param.orientationsPerScale``, ``numberBlocks``, ``fc_prefilt``,
#: ``boundaryExtension``)
GIST_DEFAULTS = {"orientations_per_scale": (8, 8, 8, 8), "n_blocks": 4, "fc_prefilt": 4.0,
                 "boundary": 32}


def gist_dim(orientations_per_scale=(8, 8, 8, 8), n_blocks=4) -> int:
    return int(sum(orientations_per_scale)) * n_blocks * n_blocks


def _freq_index(n):
    """Integer frequency indices in FFT order (for even ``n``: LMgist's
    ``fftshift(-n/2 : n/2-1)``; also right for odd ``n``)."""
    return np.fft.fftfreq(n) * n


def gabor_bank(shape, orientations_per_scale=(8, 8, 8, 8)) -> np.ndarray:
    """Transfer functions of LMgist's Gabor bank on an FFT grid of ``shape = (h, w)``.

    Returns float32 ``(n_filters, h, w)`` in FFT order (DC at ``[0, 0]``). Filter ``i * o + j``
    (scale ``i``, orientation ``j`` of ``o``) peaks (value 1) at radial frequency
    ``0.3 / 1.85**i`` cycles/pixel and at the spectral angle ``atan2(fy, fx) = -pi * j / o``.

    Notes
    -----
    ``createGabor.m``: ``exp(-10 a (f / f0 - 1)^2 - 2 b pi theta^2)`` with ``a = 0.35``,
    ``f0 = 0.3 / 1.85^i``, ``b = 16 o^2 / 32^2``. Frequencies are normalised per axis
    (``fx / w``, ``fy / h``), which equals LMgist's ``fr / n`` on its square grids.
    """
    h, w = (int(shape[0]), int(shape[1]))
    fy, fx = np.meshgrid(_freq_index(h) / h, _freq_index(w) / w, indexing="ij")
    fr = np.hypot(fx, fy)
    t = np.arctan2(fy, fx)
    out = []
    for i, o in enumerate(orientations_per_scale):
        f0 = 0.3 / 1.85 ** i
        b = 16.0 * o * o / 32.0 ** 2
        for j in range(o):
            tr = t + np.pi / o * j
            tr = tr + 2 * np.pi * (tr < -np.pi) - 2 * np.pi * (tr > np.pi)
            out.append(np.exp(-10 * 0.35 * (fr / f0 - 1) ** 2 - 2 * b * np.pi * tr ** 2))
    return np.asarray(out, dtype=np.float32)


def _gauss_half(n, fc):
    """The prefilter's low-pass ``exp(-(fx^2 + fy^2) / s1^2)`` on an n x n grid, rfft layout."""
    s1 = fc / np.sqrt(np.log(2.0))
    fy, fx = np.meshgrid(_freq_index(n), _freq_index(n)[: n // 2 + 1], indexing="ij")
    fx = np.abs(fx)  # the rfft half-plane holds the non-negative fx (Nyquist included)
    return np.exp(-(fx ** 2 + fy ** 2) / s1 ** 2)


def prefilter(img, fc=4.0, workers=None) -> np.ndarray:
    """LMgist's ``prefilt``: whitening + local contrast normalisation of ``(n, H, W)`` images
    given in [0, 255]. Returns float64 ``(n, H, W)``."""
    img = np.log(np.asarray(img, dtype=np.float64) + 1.0)
    w = 5
    img = np.pad(img, ((0, 0), (w, w), (w, w)), mode="symmetric")
    sn, sm = img.shape[1:]
    n = max(sn, sm)
    n += n % 2
    img = np.pad(img, ((0, 0), (0, n - sn), (0, n - sm)), mode="symmetric")
    gf = _gauss_half(n, fc)
    workers = workers or os.cpu_count()
    out = img - scipy.fft.irfft2(scipy.fft.rfft2(img, workers=workers) * gf, s=(n, n), workers=workers)
    local = np.sqrt(np.abs(scipy.fft.irfft2(scipy.fft.rfft2(out * out, workers=workers) * gf,
                                            s=(n, n), workers=workers)))
    out /= 0.2 + local
    return out[:, w:sn - w, w:sm - w]


@numba.njit(cache=True, nogil=True)
def _gather_mul(F, line, Gl, out):
    """out[b, m, :] = F[b, line[m], :] * Gl[m, :]: the spectrum lines in the filters' support,
    each multiplied by its filter's transfer function on that line."""
    nb, nm, L = out.shape
    for bm in range(nb * nm):
        b = bm // nm
        m = bm - b * nm
        r = line[m]
        for j in range(L):
            out[b, m, j] = F[b, r, j] * Gl[m, j]


@numba.njit(cache=True, nogil=True)
def _scatter(P, pos, c0, Z):
    """Z[b, k, r, j] = P[b, pos[k, r], c0 + j], or 0 where ``pos[k, r] < 0`` (line r outside
    filter k's support); one pass over Z, no separate zeroing."""
    nb, nk, L1, nc = Z.shape
    for bk in range(nb * nk):
        b = bk // nk
        k = bk - b * nk
        for r in range(L1):
            m = pos[k, r]
            if m < 0:
                for j in range(nc):
                    Z[b, k, r, j] = 0
            else:
                for j in range(nc):
                    Z[b, k, r, j] = P[b, m, c0 + j]


@numba.njit(cache=True, nogil=True)
def _block_abs_means(Y, r0, transposed, fid, redges, cedges, out):
    """out[b, fid[k]*N*N + cb*N + rb] = mean |y| over block (rb, cb), where the image's pixel
    (i, j) of filter k is ``Y[b, k, r0 + i, j]`` (``Y[b, k, r0 + j, i]`` when ``transposed``);
    block edges as LMgist's ``fix(linspace(0, H, N+1))``."""
    N = redges.shape[0] - 1
    nb, nk = Y.shape[0], Y.shape[1]
    for bk in range(nb * nk):
        b = bk // nk
        k = bk - b * nk
        for cb in range(N):
            for rb in range(N):
                s = 0.0
                for i in range(redges[rb], redges[rb + 1]):
                    for j in range(cedges[cb], cedges[cb + 1]):
                        if transposed:
                            s += abs(Y[b, k, r0 + j, i])
                        else:
                            s += abs(Y[b, k, r0 + i, j])
                cnt = (redges[rb + 1] - redges[rb]) * (cedges[cb + 1] - cedges[cb])
                out[b, fid[k] * N * N + cb * N + rb] = s / cnt


#: transfer-function values below this (peak = 1) are treated as 0 when pruning the inverse FFTs
SUPPORT_THRESHOLD = 1e-7


def _plan(G, threshold=SUPPORT_THRESHOLD):
    """Group the filters by the cheaper first inverse-FFT axis and list their support lines.

    A filter's support lines are the rows of the spectrum (fy fixed) or, for the ``transposed``
    group, its columns (fx fixed) on which some value exceeds ``threshold``, whichever are fewer.
    Returns ``{transposed: (fid, line, Gl, pos)}``: global filter ids of the group; per support
    line its index and the transfer function on it; ``pos[k, r]``, the support line holding line
    ``r`` of the group's filter ``k`` (-1 outside the support).
    """
    groups = {False: ([], [], [], []), True: ([], [], [], [])}
    for k, g in enumerate(G):
        rows = np.flatnonzero(g.max(axis=1) > threshold)
        cols = np.flatnonzero(g.max(axis=0) > threshold)
        transposed = bool(cols.size < rows.size)
        idx, lines = (cols, g[:, cols].T) if transposed else (rows, g[rows, :])
        fid, filt, line, Gl = groups[transposed]
        filt.extend([len(fid)] * idx.size)
        fid.append(k)
        line.extend(idx)
        Gl.append(lines)
    plan = {}
    for t, (fid, filt, line, Gl) in groups.items():
        if fid:
            pos = -np.ones((len(fid), G.shape[2 if t else 1]), np.int64)
            pos[filt, line] = np.arange(len(line))
            plan[t] = (np.array(fid, np.int64), np.array(line, np.int64),
                       np.ascontiguousarray(np.concatenate(Gl), dtype=np.float32), pos)
    return plan


def _validate(images):
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array, got {type(images).__name__}")
    if images.ndim == 4 and images.shape[3] == 3:
        pass
    elif images.ndim != 3:
        raise ValueError(f"images must be (n, H, W) grayscale or (n, H, W, 3) RGB, got shape {images.shape}")
    if images.dtype.kind not in "fiub":
        raise TypeError(f"images must be uint8 or real-valued, got dtype {images.dtype}")
    if images.shape[0] < 1:
        raise ValueError("images is empty (no images)")
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or Inf")


def to_gray_255(batch):
    """LMgist: ``mean(img, 3)``, then ``img - min``, ``255 * img / max`` per image (a constant
    image stays 0 instead of LMgist's NaN)."""
    x = np.asarray(batch, dtype=np.float64)
    if x.ndim == 4:
        x = x.mean(axis=3)
    x = x - x.min(axis=(1, 2), keepdims=True)
    top = x.max(axis=(1, 2), keepdims=True)
    return 255.0 * x / np.where(top > 0, top, 1.0)


def gist(images, *, orientations_per_scale=(8, 8, 8, 8), n_blocks=4, fc_prefilt=4.0, boundary=32,
         batch_size=128, progress=False, workers=None) -> np.ndarray:
    """GIST descriptors of ``images``: ``(n, H, W)`` grayscale or ``(n, H, W, 3)`` RGB, uint8 or
    float (any range: each image is rescaled to [0, 255]).

    Returns float32 ``(n, sum(orientations_per_scale) * n_blocks**2)``: 512 with the defaults
    (4 scales x 8 orientations x 4 x 4 blocks). Images are used at their own size (LMgist
    resizes to ``param.imageSize`` first; CIFAR-10 is already 32 x 32).

    Notes
    -----
    Oliva & Torralba, "Modeling the shape of the scene: a holistic representation of the spatial
    envelope", IJCV 42(3), 2001; the computation is Torralba's ``LMgist.m`` (see module docstring).
    """
    _validate(images)
    if n_blocks < 1 or min(images.shape[1:3]) < n_blocks:
        raise ValueError(f"images of {images.shape[1]}x{images.shape[2]} pixels cannot be split "
                         f"into n_blocks x n_blocks = {n_blocks} x {n_blocks} blocks")
    n, H, W = images.shape[:3]
    be = int(boundary)
    Hp, Wp = H + 2 * be, W + 2 * be
    plan = _plan(gabor_bank((Hp, Wp), orientations_per_scale))
    K = int(sum(orientations_per_scale))
    redges = np.fix(np.linspace(0, H, n_blocks + 1)).astype(np.int64)
    cedges = np.fix(np.linspace(0, W, n_blocks + 1)).astype(np.int64)
    workers = workers or os.cpu_count()
    out = np.empty((n, K * n_blocks * n_blocks), dtype=np.float32)
    # work buffers, allocated once: fresh large arrays per batch cost more in page faults than
    # the arithmetic done in them
    bufs = {t: (np.empty((min(batch_size, n), line.size, (Wp, Hp)[t]), dtype=np.complex64),
                np.empty((min(batch_size, n), fid.size, (Hp, Wp)[t], (W, H)[t]), dtype=np.complex64))
            for t, (fid, line, Gl, pos) in plan.items()}
    from tqdm import tqdm
    with tqdm(total=n, unit="img", desc="gist", disable=not progress, file=sys.stderr) as bar:
        for s in range(0, n, batch_size):
            x = prefilter(to_gray_255(images[s:s + batch_size]), fc_prefilt, workers)
            x = np.pad(x, ((0, 0), (be, be), (be, be)), mode="symmetric").astype(np.float32)
            F = scipy.fft.fft2(x, workers=workers)                       # complex64 (B, Hp, Wp)
            B = x.shape[0]
            for transposed, (fid, line, Gl, pos) in plan.items():
                # pruned 2-D inverse FFT: first along the filters' support lines, keeping only
                # the image's pixels, then across the lines
                src = np.ascontiguousarray(F.transpose(0, 2, 1)) if transposed else F
                P, Z = (a[:B] for a in bufs[transposed])
                _gather_mul(src, line, Gl, P)
                P = scipy.fft.ifft(P, axis=2, workers=workers, overwrite_x=True)
                _scatter(P, pos, be, Z)
                Z = scipy.fft.ifft(Z, axis=2, workers=workers, overwrite_x=True)
                _block_abs_means(Z, be, transposed, fid, redges, cedges, out[s:s + B])
            bar.update(B)
    return out
