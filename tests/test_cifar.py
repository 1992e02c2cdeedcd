"""CIFAR-10: the loader on a small archive in the official python format (built here), the md5
check, the resumable download from a local HTTP server, and the stages end to end."""
import hashlib
import http.server
import io
import json
import pickle
import tarfile
import threading

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT
from vdsh_numba.data import datasets
from vdsh_numba import pipeline
from vdsh_numba.pipeline import Layout
from vdsh_numba.pipeline.common import load_output
from vdsh_numba.data.datasets import DataError, load_cifar10
from vdsh_numba.pipeline.params import ParamsError, validate_params

PER_BATCH = 40  # 5 x 40 training + 40 test images: 24 per class


def _batch(images, labels, name):
    """One batch as the official pickles hold it: data uint8 (n, 3072) = R, G, B planes of
    32 x 32 row-major images, labels a list of ints (the originals are Python 2 pickles, read
    with encoding='latin1'; these are protocol 2 with the same keys)."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return pickle.dumps({"batch_label": name, "labels": [int(v) for v in labels], "data": data,
                         "filenames": [f"img_{i}.png" for i in range(len(images))]}, protocol=2)


def make_archive(path, seed=0):
    """A tiny cifar-10-python.tar.gz; returns (images, labels) in the loader's order. Each class
    has its own mean colour so a quick fit has something to learn."""
    rng = np.random.default_rng(seed)
    n = 6 * PER_BATCH
    labels = np.tile(np.arange(10), n // 10 + 1)[:n]
    rng.shuffle(labels)
    colours = rng.integers(40, 216, (10, 3))
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 25, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    members = {f"data_batch_{i + 1}": _batch(images[i * PER_BATCH:(i + 1) * PER_BATCH],
                                             labels[i * PER_BATCH:(i + 1) * PER_BATCH], f"training batch {i + 1} of 5")
               for i in range(5)}
    members["test_batch"] = _batch(images[5 * PER_BATCH:], labels[5 * PER_BATCH:], "testing batch 1 of 1")
    members["batches.meta"] = pickle.dumps({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                            "frog", "horse", "ship", "truck"],
                                            "num_cases_per_batch": PER_BATCH, "num_vis": 3072}, protocol=2)
    members["readme.html"] = b"<html></html>"
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            ti = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            ti.size = len(blob)
            tar.addfile(ti, io.BytesIO(blob))
    return images, labels


@pytest.fixture
def archive(tmp_path, monkeypatch):
    d = tmp_path / "cifar"
    d.mkdir()
    images, labels = make_archive(d / "cifar-10-python.tar.gz")
    md5 = hashlib.md5((d / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setattr(datasets, "CIFAR10_MD5", md5)  # the test archive stands in for the official one
    return d, images, labels


def test_loader_reads_the_official_format(archive):
    d, images, labels = archive
    rd = load_cifar10(d, progress=False, download=False)
    assert rd.images.shape == (240, 32, 32, 3) and rd.images.dtype == np.uint8
    np.testing.assert_array_equal(rd.images, images)
    np.testing.assert_array_equal(rd.labels, labels)
    assert rd.info["official_split"] == {"train": [0, 200], "test": [200, 240]}
    assert rd.info["classes"][0] == "airplane" and rd.info["verified"] == {"cifar-10-python.tar.gz": "archive-md5"}


def test_anything_but_the_published_md5_is_refused(tmp_path):
    make_archive(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match=r"md5 is [0-9a-f]{32}, expected the published "
                                         r"c58f30108f718f92721af3b95e74349a: this is not the official"):
        load_cifar10(tmp_path, progress=False, download=False)
    assert (tmp_path / "cifar-10-python.tar.gz").exists()  # a user's own file is never deleted
    with pytest.raises(DataError, match="cifar-10-python.tar.gz is missing.*www.cs.toronto.edu"):
        load_cifar10(tmp_path / "empty", progress=False, download=False)


def test_foreign_pickle_is_not_executed(tmp_path, monkeypatch):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('ran')",))
    p = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(p, "w:gz") as tar:
        for name in datasets.CIFAR10_BATCHES:
            blob = pickle.dumps({"data": Evil()}, protocol=2)
            ti = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            ti.size = len(blob)
            tar.addfile(ti, io.BytesIO(blob))
    monkeypatch.setattr(datasets, "CIFAR10_MD5", hashlib.md5(p.read_bytes()).hexdigest())
    with pytest.raises(DataError, match=r"data_batch_1 is not a CIFAR-10 python batch \(\w+\.exec is not allowed"):
        load_cifar10(tmp_path, progress=False, download=False)


class _Server:
    """Serves one blob; the first GET is cut after ``cut`` bytes; honours ``Range: bytes=N-``."""

    def __init__(self, blob, cut=None, ranges=True):
        self.blob, self.cut, self.ranges, self.seen = blob, cut, ranges, []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.seen.append(rng)
                start = int(rng[6:-1]) if (rng and outer.ranges) else 0
                body = outer.blob[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.blob) - 1}/{len(outer.blob)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut is not None:
                    body, outer.cut = body[:outer.cut], None
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("ranges", [True, False])
def test_download_resumes_a_partial_file(archive, tmp_path, monkeypatch, ranges):
    src, images, _ = archive
    blob = (src / "cifar-10-python.tar.gz").read_bytes()
    srv = _Server(blob, cut=len(blob) // 2, ranges=ranges)
    monkeypatch.setattr(datasets, "CIFAR10_URL", srv.url)
    d = tmp_path / "dl"
    try:
        with pytest.raises(DataError, match=r"bytes are kept in .*\.part: run the download stage again to resume"):
            load_cifar10(d, progress=False)
        part = d / ".cifar-10-python.tar.gz.part"
        assert part.stat().st_size == len(blob) // 2 and not (d / "cifar-10-python.tar.gz").exists()
        rd = load_cifar10(d, progress=False)
    finally:
        srv.close()
    assert srv.seen == [None, f"bytes={len(blob) // 2}-"]  # the second request asked for the rest
    np.testing.assert_array_equal(rd.images, images)
    assert not part.exists()


def test_downloaded_file_with_wrong_md5_is_deleted(tmp_path, monkeypatch):
    srv = _Server(b"not the archive")
    monkeypatch.setattr(datasets, "CIFAR10_URL", srv.url)
    try:
        with pytest.raises(DataError, match="not the official CIFAR-10 python archive .the downloaded file was deleted"):
            load_cifar10(tmp_path, progress=False)
    finally:
        srv.close()
    assert list(tmp_path.iterdir()) == []


def small_params(**over):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p.update({"bits": [8], "depth": 1, "width": 16, **over})
    p["vdsh"]["sweeps"] = 1
    return validate_params(p)


def fit_encode_evaluate(params):
    """A quick VDSH fit on the features stage's output, codes for queries and database, and the
    evaluator when vdsh_numba.search.metrics exists (written on another branch)."""
    from vdsh_numba.methods.base import make_method
    F = load_output(Layout().features, "features")
    model = make_method("vdsh", 8, params).fit(F["X_train"], F["y_train"])
    q, db = model.encode(F["X_query"]), model.encode(F["X_db"])
    assert q.shape == (F["X_query"].shape[0], 1) and db.shape == (F["X_db"].shape[0], 1) and q.dtype == np.uint8
    try:
        from vdsh_numba.search.metrics import evaluate_codes
    except ImportError:
        return None  # evaluate step skipped: vdsh_numba.search.metrics is not on this branch
    scalars, _ = evaluate_codes(q, db, F["y_query"], F["y_db"], 8, radius=2, topk=None)
    assert 0.0 <= scalars["map"] <= 1.0
    return scalars


def test_stages_end_to_end_gist_and_test_train(archive, tmp_path, monkeypatch):
    d, images, labels = archive
    monkeypatch.chdir(tmp_path)
    p = small_params(dataset="cifar10", data_dir=str(d), features="gist",
                     protocol={"name": "standard", "queries_per_class": 2, "train_per_class": 6})
    pipeline.download.run(p)
    pipeline.features.run(p)
    F = load_output(Layout().features, "features")
    info = json.loads(str(F["info"]))
    assert F["X_train"].shape == (60, 512) and F["X_query"].shape == (20, 512) and F["X_db"].shape == (220, 512)
    assert info["features"] == "gist" and info["protocol"]["name"] == "standard"
    np.testing.assert_allclose(F["X_train"].mean(axis=0), 0, atol=1e-4)  # training statistics
    fit_encode_evaluate(p)
    # the official split: test batch = queries, training batches = database = training set
    p = small_params(dataset="cifar10", data_dir=str(d), features="pixels", protocol={"name": "test-train"})
    pipeline.features.run(p)
    F = load_output(Layout().features, "features")
    np.testing.assert_array_equal(F["query_idx"], np.arange(200, 240))
    np.testing.assert_array_equal(F["db_idx"], F["train_idx"])
    assert F["X_db"].shape == (200, 3072)
    np.testing.assert_array_equal(F["y_query"], labels[200:])


def test_params_for_cifar():
    with pytest.raises(ParamsError, match="'features' is 'sift'; expected one of"):
        small_params(dataset="cifar10", features="sift")
    with pytest.raises(ParamsError, match="'protocol.name' is 'test-train'.*only mnist, fashion_mnist, cifar10, npz do"):
        small_params(dataset="digits", protocol={"name": "test-train"})
    with pytest.raises(ParamsError, match="set it to auto"):
        small_params(dataset="cifar10", protocol={"name": "test-train", "queries_per_class": 5})
    assert small_params(dataset="cifar10")["features"] == "pixels"
