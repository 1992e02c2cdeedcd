"""`vdsh study`: runs through the pipeline's stages, one CSV row per run, resumable."""
import json

import numpy as np
import pytest
import yaml

from tests import naive
from tests.conftest import ROOT
from vdsh_numba import pipeline, studies
from vdsh_numba.pipeline import Layout
from vdsh_numba.pipeline.params import ParamsError

SPEC = {"name": "t", "base": {"dataset": "digits", "depth": 1, "width": 16, "vdsh.sweeps": 2,
                              "vdsh.first_width": 0},
        "methods": ["vdsh", "lsh"], "bits": [8], "seeds": [0, 1],
        "grid": {"vdsh.rho": [0.01, 0.1]}}


@pytest.fixture
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_overrides_are_dotted_and_validated(params):
    p = studies.apply_overrides(params, {"vdsh.rho": 0.5, "dtsh.lr": 0.01, "depth": 3,
                                         "protocol.validation": True})
    assert p["vdsh"]["rho"] == 0.5 and p["dtsh"]["lr"] == 0.01 and p["depth"] == 3
    assert p["protocol"]["validation"] is True and params["vdsh"]["rho"] != 0.5  # a copy
    with pytest.raises(ParamsError, match="did you mean 'rho'"):
        studies.apply_overrides(params, {"vdsh.rhoo": 1.0})
    with pytest.raises(ParamsError, match="no section 'evaluat'"):
        studies.apply_overrides(params, {"evaluat.radius": 1})


def test_study_rows_resume_and_summary(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    spec = studies.load_study(_write(tmp_path, SPEC))
    rows = studies.run_study(spec, params, out_dir=out, work_root=work, say=lambda m: None)
    # vdsh: 2 settings x 2 seeds; lsh does not read vdsh.rho: 1 run per seed
    assert sorted((r["method"], r["setting"], r["seed"]) for r in rows) == sorted(
        [("vdsh", json.dumps({"vdsh.rho": v}), str(s)) for v in (0.01, 0.1) for s in (0, 1)]
        + [("lsh", json.dumps({"vdsh.rho": 0.01}), str(s)) for s in (0, 1)])
    assert {r["split"] for r in rows} == {"test"} and {r["dataset"] for r in rows} == {"digits"}
    # the last run's row holds the evaluator's mAP of the codes it left: check it independently
    last = rows[-1]
    d = work / "t"
    data_dir = max((p for p in d.iterdir() if (p / Layout().codes(last["method"], 8)).exists()),
                   key=lambda p: (p / Layout().codes(last["method"], 8)).stat().st_mtime_ns)
    C = np.load(data_dir / Layout().codes(last["method"], 8))
    F = np.load(data_dir / Layout().features)
    ref = naive.mean_ap(C["query"], C["db"], F["y_query"], F["y_db"], 8)
    assert float(last["map"]) == pytest.approx(ref, abs=1e-6)
    # resume: nothing reruns, the CSV stays as it was
    before = (out / "t.csv").read_text()
    monkeypatch.setattr(pipeline.train, "run", lambda *a: pytest.fail("a finished run was rerun"))
    studies.run_study(spec, params, out_dir=out, work_root=work, say=lambda m: None)
    assert (out / "t.csv").read_text() == before
    # the retrieval figure reads the runs' kept codes; an absent run is named
    png = tmp_path / "ex.png"
    studies.retrieval_figure(out / "t.csv", ["vdsh", "lsh"], 8, 1, png, work_root=work)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ParamsError, match="no test run of 'dtsh' at 8 bits, seed 0"):
        studies.retrieval_figure(out / "t.csv", ["vdsh", "dtsh"], 8, 0, png, work_root=work)
    # the summary: mean +- std over seeds (numpy, sample std)
    md = (out / "t.md").read_text()
    v = np.array([float(r["map"]) for r in rows if r["method"] == "vdsh" and '0.1}' in r["setting"]])
    assert f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" in md


def test_validation_rows_and_best_setting(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = studies.load_study(_write(tmp_path, {**SPEC, "methods": ["vdsh"], "seeds": [0],
                                                "base": {**SPEC["base"], "protocol.validation": True}}))
    rows = studies.run_study(spec, params, out_dir=tmp_path / "o", work_root=tmp_path / "w",
                             say=lambda m: None)
    assert {r["split"] for r in rows} == {"validation"}
    # 100 training items per class on digits -> 20 validation queries per class
    assert {int(r["n_query"]) for r in rows} == {200} and {int(r["n_db"]) for r in rows} == {800}
    best, score = studies.best_setting(rows, "vdsh")
    want = max(rows, key=lambda r: float(r["map"]))
    assert best == json.loads(want["setting"]) and score == pytest.approx(float(want["map"]))


def test_rows_of_the_earlier_fingerprint_scheme_are_recognised(params, tmp_path):
    """Rows hashed from the params as written (no ``r-`` prefix, section names of that time)
    count as done by (method, bits, seed, the setting's keys the method reads); a changed
    setting still runs, and today's rows match by fingerprint."""
    import csv
    spec = studies.load_study(_write(tmp_path, {**SPEC, "grid": {"vdsh.rho": [0.01, 0.1], "dtsh.lr": [0.001]}}))
    csv_path = tmp_path / "t.csv"
    runs, todo = studies.pending_runs(spec, params, csv_path)
    assert all(r["fingerprint"].startswith("r-") for r in runs) and len(todo) == 6
    legacy = [{"method": "vdsh", "bits": "8", "seed": "0", "setting": json.dumps({"train.rho": 0.01}),
               "fingerprint": "0123456789abcdef"},
              {"method": "lsh", "bits": "8", "seed": "1", "setting": json.dumps({"train.rho": 0.1}),
               "fingerprint": "fedcba9876543210"},
              {"method": todo[-1]["method"], "bits": "8", "seed": str(todo[-1]["seed"]), "setting": "{}",
               "fingerprint": todo[-1]["fingerprint"]}]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(legacy[0]))
        w.writeheader()
        w.writerows(legacy)
    left = studies.pending_runs(spec, params, csv_path)[1]
    keys = {(r["method"], r["seed"], r["setting"].get("vdsh.rho")) for r in left}
    assert ("vdsh", 0, 0.01) not in keys and ("vdsh", 0, 0.1) in keys  # setting differs: runs
    assert not any(r["method"] == "lsh" and r["seed"] == 1 for r in left)  # lsh reads neither knob
    assert todo[-1]["fingerprint"] not in {r["fingerprint"] for r in left} and len(left) == 3


def test_fingerprints_do_not_depend_on_where_the_checkout_lies(params, tmp_path, monkeypatch):
    """Two checkouts at different places, each running from its root with data_dir resolved to
    an absolute path the way `vdsh study run` does it, give the same fingerprints (a committed
    row must be recognised in any clone); another data folder gives other fingerprints."""
    from pathlib import Path
    spec = studies.load_study(_write(tmp_path, SPEC))
    prints = []
    for where, data in (("a", "data"), ("b/c", "data"), ("d", "other")):
        root = tmp_path / where
        root.mkdir(parents=True)
        monkeypatch.chdir(root)
        p = {**params, "data_dir": str(Path(data).resolve())}
        prints.append([r["fingerprint"] for r in studies.pending_runs(spec, p, root / "t.csv")[0]])
    assert prints[0] == prints[1]
    assert not set(prints[0]) & set(prints[2])


def test_bad_study_files(tmp_path, params):
    with pytest.raises(ParamsError, match="unknown key 'method'"):
        studies.load_study(_write(tmp_path, {"name": "x", "method": ["vdsh"], "bits": [8]}))
    with pytest.raises(ParamsError, match="key 'bits' is missing"):
        studies.load_study(_write(tmp_path, {"name": "x", "methods": ["vdsh"]}))
    spec = studies.load_study(_write(tmp_path, {"name": "x", "methods": ["vdhs"], "bits": [8]}))
    with pytest.raises(ParamsError, match="methods"):
        studies.expand_runs(spec, params)


def _write(tmp_path, spec):
    p = tmp_path / f"{spec['name']}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p
