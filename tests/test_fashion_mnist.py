"""Fashion-MNIST on the real files (Debian's dataset-fashion-mnist), its protocols and the
validation split, each checked against an independent parse or the protocol's definition."""
import gzip
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
import yaml

from vdsh_numba.data import datasets
from vdsh_numba import pipeline
from vdsh_numba.pipeline import Layout
from vdsh_numba.pipeline.common import load_output
from vdsh_numba.data.datasets import DataError, load_fashion_mnist
from vdsh_numba.data.features import protocol_indices, resolve_protocol
from vdsh_numba.pipeline.params import ParamsError, validate_params

from tests.conftest import ROOT

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def _raw(path, header):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=header)


@pytest.fixture(scope="module")
def fashion(fashion_dir):
    return load_fashion_mnist(fashion_dir, progress=False, download=False)


def test_loads_the_full_dataset(fashion, fashion_dir):
    d = fashion
    assert d.images.shape == (70000, 28, 28) and d.images.dtype == np.uint8
    assert d.info["official_split"] == {"train": [0, 60000], "test": [60000, 70000]}
    assert set(d.info["verified"].values()) == {"payload-sha256"} and len(d.info["verified"]) == 4
    # published: 6,000 training and 1,000 test images per class
    assert np.bincount(d.labels[:60000]).tolist() == [6000] * 10
    assert np.bincount(d.labels[60000:]).tolist() == [1000] * 10
    # independent parse: bytes after the IDX headers (16 for images, 8 for labels)
    np.testing.assert_array_equal(d.images[60000:].ravel(), _raw(fashion_dir / "t10k-images-idx3-ubyte.gz", 16))
    np.testing.assert_array_equal(d.labels[:60000], _raw(fashion_dir / "train-labels-idx1-ubyte.gz", 8))


def test_data_dir_first_and_a_recompressed_copy_passes(fashion_dir, tmp_path):
    for stem in STEMS:
        with gzip.open(fashion_dir / f"{stem}.gz") as f, gzip.open(tmp_path / f"{stem}.gz", "wb", 1) as g:
            g.write(f.read())
    d = load_fashion_mnist(tmp_path, progress=False, download=False)
    assert d.info["source"] == str(tmp_path) and d.images.shape[0] == 70000


def test_wrong_payload_is_named(fashion_dir, tmp_path):
    for stem in STEMS:
        shutil.copy(fashion_dir / f"{stem}.gz", tmp_path)
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(p) as f:
        payload = bytearray(f.read())
    payload[100] = (payload[100] + 1) % 10
    with gzip.open(p, "wb") as g:
        g.write(bytes(payload))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: decompressed payload sha256 is "
                                        r"[0-9a-f]{64}, expected 0402a96d"):
        load_fashion_mnist(tmp_path, progress=False, download=False)


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is missing.*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, progress=False, download=False)


def test_download_fetches_and_verifies(fashion_dir, tmp_path, monkeypatch):
    """No file anywhere: the four files come over HTTP (a loopback server) into data_dir."""
    blobs = {f"/{s}.gz": (fashion_dir / f"{s}.gz").read_bytes() for s in STEMS}
    blobs["/t10k-labels-idx1-ubyte.gz"] = gzip.compress(b"garbage")  # one bad file: refused

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = blobs.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(datasets, "FASHION_MNIST_URLS", (f"http://127.0.0.1:{srv.server_address[1]}/",))
    try:
        with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: decompressed payload sha256"):
            load_fashion_mnist(tmp_path / "dl", progress=False)
        blobs["/t10k-labels-idx1-ubyte.gz"] = (fashion_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
        (tmp_path / "dl" / "t10k-labels-idx1-ubyte.gz").unlink()
        d = load_fashion_mnist(tmp_path / "dl", progress=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(f"{s}.gz" for s in STEMS)
    assert d.images.shape == (70000, 28, 28)


def test_standard_protocol_queries_from_the_test_set(fashion):
    proto = resolve_protocol("fashion_mnist", {"name": "standard"})
    q, db, tr = protocol_indices(fashion.labels, proto, fashion.info, seed=3)
    y = fashion.labels
    assert np.all(q >= 60000) and np.bincount(y[q]).tolist() == [100] * 10
    np.testing.assert_array_equal(db, np.arange(60000))
    assert np.isin(tr, db).all() and np.bincount(y[tr]).tolist() == [500] * 10
    # seeded: the same seed the same split, another seed another
    q2, _, tr2 = protocol_indices(fashion.labels, proto, fashion.info, seed=3)
    np.testing.assert_array_equal(q, q2)
    np.testing.assert_array_equal(tr, tr2)
    assert not np.array_equal(q, protocol_indices(fashion.labels, proto, fashion.info, seed=4)[0])


def test_test_train_protocol(fashion):
    q, db, tr = protocol_indices(fashion.labels, resolve_protocol("fashion_mnist", {"name": "test-train"}),
                                 fashion.info, seed=0)
    np.testing.assert_array_equal(q, np.arange(60000, 70000))
    np.testing.assert_array_equal(db, np.arange(60000))
    np.testing.assert_array_equal(tr, db)


@pytest.mark.parametrize("name", ["standard", "test-train"])
def test_validation_split_is_carved_from_the_training_items(fashion, name):
    y = fashion.labels
    base = resolve_protocol("fashion_mnist", {"name": name})
    _, _, train = protocol_indices(y, base, fashion.info, seed=1)
    q, db, tr = protocol_indices(y, {**base, "validation": True}, fashion.info, seed=1)
    assert np.isin(q, train).all() and np.isin(db, train).all()  # only training items
    assert np.intersect1d(q, db).size == 0 and np.union1d(q, db).size == train.size
    np.testing.assert_array_equal(db, tr)
    per = np.bincount(y[train]).min()
    assert np.bincount(y[q]).tolist() == [min(100, per // 5)] * 10
    assert np.all(q < 60000)  # never a test image


def test_params_accept_fashion_mnist_and_refuse_a_bad_validation_flag():
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p.update(dataset="fashion_mnist", protocol={**p["protocol"], "name": "test-train",
                                                "queries_per_class": "auto", "train_per_class": "auto"})
    validate_params(p)
    p["protocol"]["validation"] = "yes"
    with pytest.raises(ParamsError, match="'protocol.validation' must be true or false, got 'yes'"):
        validate_params(p)
    p["protocol"]["validatoin"] = True
    del p["protocol"]["validation"]
    with pytest.raises(ParamsError, match="did you mean 'validation'"):
        validate_params(p)


def test_stages_download_and_features(fashion_dir, tmp_path, monkeypatch):
    """download + features through the stages: the pipeline's own split, standardized on training."""
    monkeypatch.chdir(tmp_path)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p.update(dataset="fashion_mnist", data_dir=str(tmp_path / "none"),
             protocol={"name": "standard", "queries_per_class": 5, "train_per_class": 20})
    validate_params(p)
    pipeline.download.run(p)
    pipeline.features.run(p)
    F = load_output(Layout().features, "features")
    info = json.loads(str(F["info"]))
    assert (info["n_query"], info["n_db"], info["n_train"]) == (50, 60000, 200)
    assert F["X_db"].shape == (60000, 784) and np.all(F["query_idx"] >= 60000)
    np.testing.assert_allclose(F["X_train"].mean(axis=0), 0, atol=1e-5)
    p["protocol"]["validation"] = True
    pipeline.features.run(p)
    V = load_output(Layout().features, "features")
    assert json.loads(str(V["info"]))["protocol"]["validation"] is True
    assert np.isin(V["query_idx"], F["train_idx"]).all() and V["X_query"].shape == (40, 784)
    assert V["X_db"].shape == (160, 784)
