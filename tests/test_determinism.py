"""Same params -> bit-identical models, codes and metrics on a rerun (same thread count); across
NUMBA_NUM_THREADS=1 and 2 the mAP agrees within 1e-3. (`dvc repro` run twice reporting the
pipeline up to date is tests/test_pipeline.py::test_repro_writes_metrics_table_and_plots.)

Each run is a fresh process (the thread count is fixed when numba starts) running the train,
encode and evaluate stages on the same features file.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.test_reliability import BASE, prepared, write_params  # noqa: F401 (fixture)

RUN = ("from vdsh_numba import pipeline; from vdsh_numba.pipeline.params import load_params; p = load_params('params.yaml')\n"
       "for b in p['bits']:\n"
       "    pipeline.train.run(p, 'vdsh', b); pipeline.encode.run(p, 'vdsh', b); pipeline.evaluate.run(p, 'vdsh', b)\n")


def _run(prepared_dir, dest, threads):
    dest.mkdir()
    shutil.copytree(prepared_dir / "data", dest / "data")
    p = {**BASE, "bits": [8, 24]}
    p["vdsh"] = {**BASE["vdsh"], "sweeps": 4}
    write_params(dest, p)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, "-c", RUN], cwd=dest, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    out = {}
    for b in p["bits"]:
        with np.load(dest / f"models/vdsh_{b}.npz") as f:
            out[f"model_{b}"] = {k: f[k] for k in f.files if k != "__train_seconds__"}
        with np.load(dest / f"codes/vdsh_{b}.npz") as f:
            out[f"codes_{b}"] = {k: f[k] for k in ("query", "db")}
        m = json.loads((dest / f"reports/eval/vdsh_{b}.json").read_text())
        m.pop("train_seconds")
        out[f"metrics_{b}"] = m
        out[f"pr_{b}"] = (dest / f"reports/eval/pr_vdsh_{b}.csv").read_text()
    return out


@pytest.fixture(scope="module")
def runs(prepared, tmp_path_factory):
    d = tmp_path_factory.mktemp("det")
    return {name: _run(prepared, d / name, t) for name, t in (("2a", 2), ("2b", 2), ("1", 1))}


def _same_arrays(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_rerun_is_bit_identical(runs):
    a, b = runs["2a"], runs["2b"]
    for key in a:
        if key.startswith(("model", "codes")):
            _same_arrays(a[key], b[key])
        else:
            assert a[key] == b[key], key      # metrics JSON and PR curve, exactly


def test_one_and_two_threads_agree(runs):
    for bits in (8, 24):
        m1, m2 = runs["1"][f"metrics_{bits}"], runs["2a"][f"metrics_{bits}"]
        for key in ("map", "map_tie_aware"):
            assert abs(m1[key] - m2[key]) <= 1e-3, (bits, key, m1[key], m2[key])
