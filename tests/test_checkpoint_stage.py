"""`vdsh train` with vdsh.checkpoint_every: a kill -9 mid-run and a rerun give the uninterrupted model."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import yaml

from tests.conftest import ROOT
from vdsh_numba import pipeline
from vdsh_numba.pipeline import Layout
from vdsh_numba.pipeline.params import validate_params


def _params(tmp):
    p = validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    p.update({"bits": [16], "depth": 3, "width": 32})
    p["vdsh"].update({"sweeps": 12, "checkpoint_every": 1, "first_width": 0})
    (tmp / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return p


def _model(path):
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files if k != "__train_seconds__"}


def test_killed_training_resumes_to_the_same_model(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    p = _params(a)
    shutil.copy(a / "params.yaml", b / "params.yaml")
    monkeypatch.chdir(a)  # the uninterrupted reference
    pipeline.download.run(p), pipeline.features.run(p), pipeline.train.run(p, "vdsh", 16)
    ref = _model(a / Layout().model("vdsh", 16))
    assert not (a / Layout().checkpoint("vdsh", 16)).exists()  # removed after the model is saved
    monkeypatch.chdir(b)
    pipeline.download.run(p), pipeline.features.run(p)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vdsh_numba.cli", "train", "--method", "vdsh", "--bits", "16"]
    proc = subprocess.Popen(cmd, cwd=b, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = b / Layout().checkpoint("vdsh", 16)
    t0 = time.time()
    while not ck.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ck.exists(), "the run ended before its first checkpoint"
    assert not (b / Layout().model("vdsh", 16)).exists()
    r = subprocess.run(cmd, cwd=b, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = _model(b / Layout().model("vdsh", 16))
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    assert not ck.exists()
