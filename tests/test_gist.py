"""GIST: against a line-by-line port of LMgist.m (tests/naive.py) and on synthetic images whose
answer is known (gratings, whole-cell translations, 90-degree rotations)."""
import numpy as np
import pytest

from tests import naive
from vdsh_numba.data import features
from vdsh_numba.data.gist import gabor_bank, gist, gist_dim


def grating(f, phi, n=32, phase=0.3):
    """128 + 100 cos(2 pi f (x cos phi + y sin phi)): f in cycles/pixel, x = column, y = row."""
    y, x = np.mgrid[0:n, 0:n]
    return 128 + 100 * np.cos(2 * np.pi * f * (x * np.cos(phi) + y * np.sin(phi)) + phase)


def blocks(g):
    """(n, 512) -> (n, scale, orientation, col_block, row_block) (LMgist's layout)."""
    return g.reshape(-1, 4, 8, 4, 4)


def test_matches_naive_lmgist():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    got = gist(rgb, batch_size=2)  # a partial last batch too
    ref = np.array([naive.gist(im) for im in rgb])
    assert got.shape == (3, 512) and got.dtype == np.float32 and gist_dim() == 512
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    gray = rng.normal(size=(1, 40, 40))  # float, another size
    np.testing.assert_allclose(gist(gray)[0], naive.gist(gray[0]), rtol=0, atol=1e-5 * np.abs(naive.gist(gray[0])).max())


def test_input_conventions():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    g = gist(rgb)
    # RGB -> mean of channels; each image rescaled to [0, 255]: any affine range gives the same
    np.testing.assert_allclose(gist(rgb.mean(axis=3)), g, atol=1e-6)
    np.testing.assert_allclose(gist(rgb.astype(np.float32) / 255 * 3 - 7), g, atol=1e-5)
    assert np.all(gist(np.full((1, 32, 32), 9, np.uint8)) == 0)  # constant image: zeros, no NaN
    assert features.gist is gist


@pytest.mark.parametrize("bad, err, msg", [
    (np.zeros((32, 32)), ValueError, r"\(n, H, W\) grayscale or \(n, H, W, 3\) RGB"),
    (np.zeros((1, 32, 32, 4)), ValueError, "got shape"),
    (np.full((1, 32, 32), np.nan), ValueError, "NaN"),
    (np.zeros((1, 3, 3)), ValueError, "cannot be split"),
    ([[[0]]], TypeError, "numpy array"),
])
def test_validation(bad, err, msg):
    with pytest.raises(err, match=msg):
        gist(bad)


def test_filter_bank_peaks_where_documented():
    n = 96
    G = gabor_bank((n, n))
    assert G.shape == (32, n, n) and G.dtype == np.float32 and G.max() <= 1.0
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    for i in range(4):
        for j in range(8):
            g = G[i * 8 + j]
            r, c = np.unravel_index(g.argmax(), g.shape)
            assert abs(np.hypot(fx[r, c], fy[r, c]) - 0.3 / 1.85 ** i) <= 1.0 / n
            d = np.angle(np.exp(1j * (np.arctan2(fy[r, c], fx[r, c]) + np.pi * j / 8)))
            assert abs(d) <= np.pi / 8 / 2
            assert g[r, c] > 0.9


def test_grating_energy_lands_in_its_filter():
    # the bank alone: a grating's spectrum energy is largest through the filter of its frequency
    # and orientation (wave-vector angle -pi j / 8)
    G = gabor_bank((96, 96))
    for i in range(4):
        for j in range(8):
            F = np.fft.fft2(grating(0.3 / 1.85 ** i, -np.pi * j / 8, 96) - 128)
            assert np.argmax([(np.abs(F * g) ** 2).sum() for g in G]) == i * 8 + j
    # the whole descriptor (prefilter included): at 64 x 64 every scale; at CIFAR's 32 x 32 the
    # three finer scales (the coarsest, 21-pixel wavelength sees 1.5 periods, and the log in the
    # prefilter makes its 2nd harmonic, at the next scale, win)
    for n, scales in ((64, range(4)), (32, range(3))):
        imgs = np.array([grating(0.3 / 1.85 ** i, -np.pi * j / 8, n) for i in scales for j in range(8)])
        energy = gist(imgs).reshape(len(imgs), 32, 16).mean(axis=2)
        np.testing.assert_array_equal(energy.argmax(axis=1), np.arange(len(imgs)))


def test_translation_by_whole_cells_moves_blocks():
    rng = np.random.default_rng(2)
    n, c = 128, 32
    a = np.full((n, n), 128.0)
    b = a.copy()
    patch = rng.normal(0, 60, (c, c))
    a[c:2 * c, c:2 * c] += patch               # block (row 1, col 1)
    b[2 * c:3 * c, c:2 * c] += patch           # one cell down: block (row 2, col 1)
    ga, gb = blocks(gist(np.array([a, b])))
    # row block r of b is row block r - 1 of a, for every filter
    assert np.abs(gb[..., 1:] - ga[..., :3]).max() <= 0.01 * ga.max()
    for s in range(4):
        assert np.unravel_index(ga[s].sum(0).argmax(), (4, 4)) == (1, 1)
        assert np.unravel_index(gb[s].sum(0).argmax(), (4, 4)) == (1, 2)  # (col, row)


def test_rotation_by_90_degrees_permutes_orientations_and_blocks():
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(3)
    im = gaussian_filter(rng.normal(size=(32, 32)), 1.0)  # little energy at Nyquist
    g0, g1 = blocks(gist(np.array([im, np.rot90(im)])))
    # np.rot90: out[r, c] = im[c, W-1-r]; wave-vector angle -90 degrees = 4 orientation steps;
    # out block (row rb, col cb) = im block (row cb, col 3 - rb)
    pred = np.empty_like(g0)
    for o in range(8):
        for rb in range(4):
            for cb in range(4):
                pred[:, (o + 4) % 8, cb, rb] = g0[:, o, 3 - rb, cb]
    assert np.abs(pred - g1).max() <= 0.02 * g1.max()
    assert np.abs(g0 - g1).max() > 0.1 * g1.max()  # and the permutation is not the identity
