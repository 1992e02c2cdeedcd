"""Benchmark: vdsh_numba.data.gist on CIFAR-10-sized input (60,000 RGB 32 x 32 images by default).

Budget (issue 8): 60,000 images in <= 300 s on the 2-core build machine. Anchors measured in
the same run, on a subset of the same images:

* ``naive``: tests/naive.py, a line-by-line numpy port of LMgist.m, one image at a time;
* ``plain``: the textbook batched computation with the same FFT library (scipy.fft, complex64,
  same workers): one forward FFT and 32 full 96 x 96 inverse FFTs per image, magnitude, crop,
  block means in numpy; what the pruned inverse FFTs and the Numba kernels are measured against.

Prints seconds, images/s and ratios (anchor time / ours, per image, wall and CPU; > 1 means
ours is faster; on a loaded machine the CPU ratio is the steadier one), the
largest deviation from the naive reference, CPU time and the load average (the machine is
shared: compare within one run).

    python bench/gist.py [--n 60000] [--anchor 1024] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import naive  # noqa: E402
from vdsh_numba.data.gist import to_gray_255, gabor_bank, gist, prefilter  # noqa: E402

BUDGET_S = 300.0


def plain_gist(images, batch_size=128):
    """Unpruned batched GIST with the same prefilter: full inverse FFTs, numpy reductions."""
    n, H, W = images.shape[:3]
    be = 32
    G = gabor_bank((H + 2 * be, W + 2 * be))
    out = np.empty((n, 512), np.float32)
    w = os.cpu_count()
    for s in range(0, n, batch_size):
        x = prefilter(to_gray_255(images[s:s + batch_size]), 4.0, w)
        F = scipy.fft.fft2(np.pad(x, ((0, 0), (be, be), (be, be)), mode="symmetric").astype(np.float32), workers=w)
        for k in range(G.shape[0]):
            y = np.abs(scipy.fft.ifft2(F * G[k], workers=w))[:, be:be + H, be:be + W]
            v = y.reshape(-1, 4, H // 4, 4, W // 4).mean(axis=(2, 4))       # (B, row_block, col_block)
            out[s:s + len(x), k * 16:(k + 1) * 16] = v.transpose(0, 2, 1).reshape(len(x), 16)
    return out


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    r = fn()
    return r, time.perf_counter() - t, time.process_time() - c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--anchor", type=int, default=1024, help="images for the plain anchor (naive: a quarter)")
    ap.add_argument("--batch-size", type=int, default=128)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (a.n, 32, 32, 3), dtype=np.uint8)  # the cost does not depend on content
    print(f"gist benchmark: {a.n} RGB 32x32 images, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)

    _, first, _ = timed(lambda: gist(images[:8]))
    print(f"first call (8 images, numba compile or cache load): {first:.2f} s")
    out, wall, cpu = timed(lambda: gist(images, batch_size=a.batch_size, progress=True))
    ours = wall / a.n
    print(f"ours : {wall:8.1f} s wall, {cpu:8.1f} s CPU, {a.n / wall:8.0f} img/s"
          f"  -> 60,000 images: {ours * 60000:.1f} s (budget {BUDGET_S:.0f} s)", flush=True)

    m = max(a.anchor, 1)
    plain_gist(images[:8])
    ref_p, wall_p, cpu_p = timed(lambda: plain_gist(images[:m], a.batch_size))
    print(f"plain: {wall_p / m * 1e3:8.3f} ms/img  ratio plain/ours = {wall_p / m / ours:5.2f} wall, "
          f"{cpu_p / m / (cpu / a.n):5.2f} CPU", flush=True)
    mn = max(m // 4, 1)
    ref_n, wall_n, cpu_n = timed(lambda: np.array([naive.gist(im) for im in images[:mn]]))
    print(f"naive: {wall_n / mn * 1e3:8.3f} ms/img  ratio naive/ours = {wall_n / mn / ours:5.1f} wall, "
          f"{cpu_n / mn / (cpu / a.n):5.1f} CPU")
    scale = np.abs(ref_n).max()
    print(f"max |ours - naive| / max|naive| = {np.abs(out[:mn] - ref_n).max() / scale:.2e}; "
          f"|plain - naive| = {np.abs(ref_p[:mn] - ref_n).max() / scale:.2e}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    verdict = "PASS" if ours * 60000 <= BUDGET_S else "FAIL"
    print(f"{verdict}: 60,000 images in {ours * 60000:.1f} s (<= {BUDGET_S:.0f} s)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
