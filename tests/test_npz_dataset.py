"""Bring your own features: a dataset given as one .npz file runs through the whole pipeline."""
import json

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from tests import naive
from tests.conftest import ROOT
from vdsh_numba import pipeline
from vdsh_numba.data.datasets import DataError, load_dataset
from vdsh_numba.pipeline.params import ParamsError, validate_params
from vdsh_numba.pipeline import Layout


def params(path, **over):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p.update({"dataset": "npz", "data_dir": str(path), "bits": [8], "depth": 1, "width": 16,
              "methods": ["vdsh", "lsh"], **over})
    p["vdsh"] = {**p["vdsh"], "sweeps": 3, "first_width": 0}
    p["protocol"] = {**p["protocol"], **over.pop("protocol", {})} if "protocol" in over else \
        {**p["protocol"], "queries_per_class": 10, "train_per_class": 40}
    return validate_params(p)


@pytest.fixture
def digits_npz(tmp_path):
    d = load_digits()
    test = np.zeros(d.target.size, bool)
    test[::6] = True
    np.savez(tmp_path / "mine.npz", X=d.data.astype(np.float32), y=d.target, test=test)
    return tmp_path / "mine.npz", d, test


def test_npz_runs_through_every_stage(digits_npz, tmp_path, monkeypatch):
    path, d, _ = digits_npz
    monkeypatch.chdir(tmp_path)
    p = params(path)
    pipeline.download.run(p)
    pipeline.features.run(p)
    F = np.load(Layout().features)
    info = json.loads(str(F["info"]))
    assert (info["n_query"], info["n_train"]) == (100, 400) and info["dataset"] == "npz"
    np.testing.assert_allclose(F["X_train"].mean(axis=0), 0, atol=1e-5)   # training statistics
    for m in ("vdsh", "lsh"):
        pipeline.train.run(p, m, 8)
        pipeline.encode.run(p, m, 8)
        pipeline.evaluate.run(p, m, 8)
        C = np.load(Layout().codes(m, 8))
        got = json.loads(Layout().eval(m, 8).read_text())["map"]
        assert got == pytest.approx(naive.mean_ap(C["query"], C["db"], F["y_query"], F["y_db"], 8), abs=1e-9)
    assert json.loads(Layout().eval("vdsh", 8).read_text())["map"] > 0.5


def test_npz_test_rows_are_the_test_train_queries(digits_npz, tmp_path, monkeypatch):
    path, d, test = digits_npz
    monkeypatch.chdir(tmp_path)
    p = params(path, protocol={"name": "test-train", "queries_per_class": "auto", "train_per_class": "auto"})
    pipeline.download.run(p)
    pipeline.features.run(p)
    F = np.load(Layout().features)
    np.testing.assert_array_equal(np.sort(F["y_query"]), np.sort(d.target[test]))
    assert F["X_db"].shape[0] == (~test).sum() and F["X_train"].shape[0] == (~test).sum()
    # without `test`, test-train is refused with the reason
    np.savez(tmp_path / "plain.npz", X=d.data, y=d.target)
    p = params(tmp_path / "plain.npz", protocol={"name": "test-train", "queries_per_class": "auto",
                                                 "train_per_class": "auto"})
    pipeline.download.run(p)
    with pytest.raises(ValueError, match="official train/test split; 'npz' does not provide one"):
        pipeline.features.run(p)


def test_npz_multilabel(tmp_path):
    rng = np.random.default_rng(0)
    Y = (rng.random((300, 4)) < 0.4).astype(np.uint8)
    Y[Y.sum(1) == 0, 0] = 1
    np.savez(tmp_path / "ml.npz", X=rng.standard_normal((300, 6)) + Y @ rng.standard_normal((4, 6)), y=Y)
    r = load_dataset("npz", tmp_path / "ml.npz", progress=False)
    assert r.labels.shape == (300, 4) and r.labels.dtype == np.uint8


@pytest.mark.parametrize("arrays,msg", [
    ({"X": np.zeros((5, 2))}, r"array\(s\) \['y'\] missing"),
    ({"X": np.zeros((5, 2)), "y": np.zeros(4, int)}, r"y has shape \(4,\); expected \(5,\)"),
    ({"X": np.zeros((5, 2)), "y": np.zeros(5)}, "y must hold integer class ids, got dtype float64"),
    ({"X": np.zeros(5), "y": np.zeros(5, int)}, "X must be a non-empty 2-D real array"),
    ({"X": np.zeros((5, 2)), "y": np.zeros(5, int), "test": np.zeros(5, int)}, "test must be 5 booleans"),
])
def test_bad_npz_files_are_named(tmp_path, arrays, msg):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=f"bad.npz: {msg}"):
        load_dataset("npz", tmp_path / "bad.npz", progress=False)


def test_npz_params_and_paths(tmp_path):
    with pytest.raises(DataError, match="set data_dir to its path"):
        load_dataset("npz", tmp_path, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("npz", tmp_path / "none.npz", progress=False)
    with pytest.raises(ParamsError, match="'gist' but dataset 'npz' comes as feature vectors"):
        params(tmp_path / "x.npz", features="gist")
