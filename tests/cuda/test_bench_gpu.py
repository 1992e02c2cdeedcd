"""bench/gpu.sh, the script for a machine with a GPU, run end to end with tiny sizes
(``VDSH_BENCH_TINY=1``) under numba's simulator, so it is known to run before a GPU is lent.

On a GPU this file runs the same tiny script (seconds). The stop-after-a-failed-smoke-step
logic is checked with an interpreter that always fails.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

MNIST = next((p for p in (ROOT / "shared/data/mnist", ROOT.parent / "shared/data/mnist") if p.is_dir()), None)


def _script(out, **env):
    e = {**os.environ, "VDSH_BENCH_TINY": "1", "PYTHON": sys.executable, "T_SMOKE": "400",
         "T_MNIST": "400", "T_ADMM": "400", "T_HAMMING": "400", **env}
    return subprocess.run(["bash", str(ROOT / "bench/gpu.sh"), str(out)], capture_output=True, text=True,
                          env=e, timeout=1500)


def test_gpu_script_runs_every_step_tiny(tmp_path):
    assert MNIST is not None, "the MNIST t10k files belong in ../shared/data/mnist (or shared/data/mnist)"
    r = _script(tmp_path, MNIST_DIR=str(MNIST))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = {s: json.loads((tmp_path / f"gpu_{s}.json").read_text()) for s in ("smoke", "mnist", "admm", "hamming")}
    assert res["smoke"]["kernel_equal_cpu"] and res["smoke"]["tiny_fit"]["train_codes_agree"] >= 0.99
    m = res["mnist"]
    assert m["train_codes_agree"] >= 0.99 and abs(m["cuda"]["mAP"] - m["cpu"]["mAP"]) < 0.02
    assert m["params"]["first_width"] != m["params"]["width"]
    assert res["admm"]["cuda"]["sweep_s"] > 0 and res["admm"]["cpu"]["sweep_s"] > 0
    assert res["hamming"]["search"]["D_equal"] and res["hamming"]["search"]["I_equal"]
    log = (tmp_path / "gpu_bench.log").read_text()
    assert "== done" in log and "fail=0" in log
    assert "gpu_mnist.cuda:" in r.stdout  # results printed as they come


def test_gpu_script_stops_when_the_smoke_step_fails(tmp_path):
    r = _script(tmp_path, PYTHON="false")
    assert r.returncode == 1
    log = (tmp_path / "gpu_bench.log").read_text()
    assert "smoke step failed: stopping" in log and "== mnist" not in log
