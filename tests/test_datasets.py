import gzip
import hashlib
import shutil

import numpy as np
import pytest

from vdsh_numba.data.datasets import DataError, load_dataset, load_mnist, read_idx


def test_mnist_test_set_from_shared(mnist_dir):
    d = load_mnist(mnist_dir, progress=False, download=False)
    assert d.images.shape == (10000, 28, 28) and d.images.dtype == np.uint8
    assert d.info["subset"] == "test-only"
    assert set(d.info["verified"].values()) == {"payload-sha256"}
    # class counts published in ../shared/data/README.md
    assert np.bincount(d.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # independent parse: raw bytes after the 16-byte header
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(10000, 28, 28)
    np.testing.assert_array_equal(d.images, raw)


def test_regzipped_copy_passes_payload_digest(mnist_dir, tmp_path):
    # a re-compressed mirror differs in archive bytes but not in payload: it must pass
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist_dir / f"{stem}.gz") as f:
            payload = f.read()
        with gzip.open(tmp_path / f"{stem}.gz", "wb", compresslevel=1) as g:
            g.write(payload)
        assert hashlib.sha256((tmp_path / f"{stem}.gz").read_bytes()).hexdigest() != \
            hashlib.sha256((mnist_dir / f"{stem}.gz").read_bytes()).hexdigest()
    d = load_mnist(tmp_path, progress=False, download=False)
    assert d.images.shape[0] == 10000


def _copy(mnist_dir, tmp_path):
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(mnist_dir / f"{stem}.gz", tmp_path / f"{stem}.gz")


def test_wrong_digest_is_named(mnist_dir, tmp_path):
    _copy(mnist_dir, tmp_path)
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(p) as f:
        payload = bytearray(f.read())
    payload[100] = (payload[100] + 1) % 10
    with gzip.open(p, "wb") as g:
        g.write(bytes(payload))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz.*sha256 is [0-9a-f]{64}, expected ff7bcf"):
        load_mnist(tmp_path, progress=False, download=False)


def test_truncated_and_not_gzip(mnist_dir, tmp_path):
    _copy(mnist_dir, tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot be read as gzip"):
        load_mnist(tmp_path, progress=False, download=False)
    p.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="cannot be read as gzip"):
        load_mnist(tmp_path, progress=False, download=False)


def test_idx_header_checks():
    good = (2051).to_bytes(4, "big") + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(2 * 784)
    assert read_idx(good, "x", "images").shape == (2, 28, 28)
    with pytest.raises(DataError, match="wrong IDX magic number 2049, expected 2051"):
        read_idx((2049).to_bytes(4, "big") + good[4:], "x", "images")
    with pytest.raises(DataError, match="header says 2 items, expected 3"):
        read_idx(good, "x", "images", count=3)
    with pytest.raises(DataError, match="payload has"):
        read_idx(good[:-1], "x", "images")


def test_missing_test_files(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path, progress=False, download=False)


def test_digits_and_unknown():
    d = load_dataset("digits", None, progress=False)
    assert d.images.shape == (1797, 8, 8) and d.info["max_value"] == 16
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", None)
