"""The whole pipeline, end to end, in a temporary git + dvc repository on a small configuration."""
import json
import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    for name in ("pipeline", "vdsh_numba"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p.update({"bits": [8, 16], "depth": 2, "width": 32, "dataset": "digits"})
    p["vdsh"]["sweeps"] = 4
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    (d / ".gitignore").write_text("__pycache__/\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1",
           "DVC_SITE_CACHE_DIR": str(d / ".dvc-site"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], d, env)
    _run(["dvc", "init", "-q"], d, env)
    _run(["git", "add", "-A"], d, env)
    _run(["git", "commit", "-qm", "init"], d, env)
    return d, env


def test_repro_writes_metrics_table_and_plots(repo):
    d, env = repo
    _run(["dvc", "repro"], d, env)
    m = json.loads((d / "reports/metrics.json").read_text())
    for b in (8, 16):
        r = m["vdsh"][f"bits_{b}"]
        assert set(["map", "map_tie_aware", "precision_hamming2", "train_seconds"]) <= set(r)
        assert r["map"] > 0.3, r  # chance is ~0.1 on 10 balanced classes
        assert 0.0 <= r["precision_hamming2"] <= 1.0 and r["train_seconds"] > 0
    assert m["_meta"]["dataset"] == "digits"
    table = (d / "reports/results.md").read_text()
    assert "| vdsh | digits |" in table
    for png in ("map_vs_bits.png", "training_curves.png"):
        assert (d / "reports" / png).read_bytes()[:4] == b"\x89PNG"
    assert "objective" in (d / "reports/train/vdsh_8.csv").read_text().splitlines()[0]
    # a second repro has nothing to do
    r = _run(["dvc", "repro"], d, env)
    assert "up to date" in (r.stdout + r.stderr).lower()


def test_exp_run_depth_appears_in_exp_show(repo):
    d, env = repo
    _run(["git", "add", "-A"], d, env)
    _run(["git", "commit", "-qm", "baseline", "--allow-empty"], d, env)
    _run(["dvc", "exp", "run", "-S", "depth=3"], d, env)
    r = _run(["dvc", "exp", "show", "--json"], d, env)
    assert '"depth": 3' in r.stdout.replace(" ", "").replace('"depth":3', '"depth": 3')


def test_bad_params_fail_before_any_work(repo, tmp_path):
    d, env = repo
    bad = tmp_path / "params.yaml"
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["depht"] = 3
    bad.write_text(yaml.safe_dump(p))
    r = subprocess.run(["python", "-m", "vdsh_numba.cli", "train", "--params", str(bad), "--method", "vdsh",
                        "--bits", "8"], cwd=d, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "did you mean 'depth'" in r.stderr
