"""``vdsh compare``: the table matches metrics recomputed independently on the saved codes, and
nothing DVC tracks is written."""
import copy
import csv

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from tests import naive
from tests.conftest import ROOT
from vdsh_numba import cli, studies
from vdsh_numba.compare import FLOORS, floor_check, resolve_methods
from vdsh_numba.pipeline.params import ParamsError
from vdsh_numba.pipeline import Layout

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
BASE["dataset"] = "digits"


def vdsh(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(copy.deepcopy(BASE), sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_compare_table_matches_independent_metrics(project):
    r = vdsh("compare", "--methods", "lsh,itq", "--bits", "8,16", "--out", "reports")
    assert r.exit_code == 0, r.output
    # only the three comparison files; no DVC output (data/, models/, codes/, reports/eval ...)
    assert sorted(p.name for p in (project / "reports").iterdir()) == [
        "comparison_digits.csv", "comparison_digits.md", "comparison_digits.png"]
    for d in ("data", "models", "codes"):
        assert not (project / d).exists()
    work = project / ".compare" / "digits"
    # the runs are a study's: its record, each run's codes and the folder of its data
    runs = {(r["method"], int(r["bits"])): studies.run_dir(work, "comparison_digits", r["fingerprint"])
            for r in studies.read_rows(work / "runs" / "comparison_digits.csv")}
    data = Layout((runs[("lsh", 8)] / "data_dir.txt").read_text().strip())
    F = np.load(data.features)
    yq, ydb = F["y_query"], F["y_db"]
    rows = list(csv.DictReader(open(project / "reports/comparison_digits.csv")))
    assert [(r["method"], int(r["bits"])) for r in rows] == [("lsh", 8), ("lsh", 16), ("itq", 8), ("itq", 16)]
    for row in rows:
        b = int(row["bits"])
        C = np.load(runs[(row["method"], b)] / "codes.npz")
        q, db = C["query"], C["db"]
        assert float(row["map"]) == pytest.approx(naive.mean_ap(q, db, yq, ydb, b), abs=1e-9)
        dist, rel = naive.hamming(q, db, b), naive.graded(yq, ydb) > 0
        ta = np.mean([naive.ap_tie_aware_direct(dist[i], rel[i]) for i in range(len(q))])
        assert float(row["map_tie_aware"]) == pytest.approx(ta, abs=1e-9)
        P, E, _ = naive.radius_stats(q, db, yq, ydb, b, 2)
        assert float(row["precision_hamming2"]) == pytest.approx(P.mean(), abs=1e-9)
        assert float(row["precision_hamming2_empty_fraction"]) == pytest.approx(E.mean(), abs=1e-9)
        assert float(row["train_seconds"]) == float(C["train_seconds"]) >= 0
        assert row["floor"] == ""  # no floors on digits
    md = (project / "reports/comparison_digits.md").read_text()
    assert "| lsh | 8 |" in md and "| itq | 16 |" in md and "P@H≤2" in md
    assert (project / "reports/comparison_digits.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_method_is_refused_and_writes_nothing(project):
    r = vdsh("compare", "--methods", "lsh,itqq", "--bits", "8", "--out", "reports")
    assert r.exit_code == 2
    assert "unknown method 'itqq'" in r.output and "did you mean 'itq'" in r.output
    assert sorted(p.name for p in project.iterdir()) == ["params.yaml"]


def test_methods_all_and_floors():
    allm = resolve_methods("all")
    assert allm[0] == "vdsh" and {"lsh", "itq", "sdh", "dpsh", "dtsh", "dcwh", "tie_ap",
                                  "vdsh_backprop", "vdsh_backprop_residual"} <= set(allm)
    with pytest.raises(ParamsError, match="listed twice"):
        resolve_methods("lsh,lsh")
    split = {"n_query": 1000, "n_db": 9000, "n_train": 5000}
    assert FLOORS["mnist"]["sdh"][48] == 0.93
    fl, gap, met = floor_check("mnist", "itq", 32, 0.445, split)
    assert fl == 0.46 and gap == pytest.approx(-0.015) and met
    assert floor_check("mnist", "itq", 32, 0.43, split)[2] is False
    assert floor_check("mnist", "itq", 32, 0.5, {**split, "n_db": 69000}) == (None, None, None)
    assert floor_check("digits", "lsh", 12, 0.5, split) == (None, None, None)


def test_markdown_states_each_floor():
    from vdsh_numba.compare import _markdown
    split = {"n_query": 1000, "n_db": 9000, "n_train": 5000}
    rows = []
    for m, b, v in (("itq", 32, 0.4373), ("lsh", 48, 0.3023), ("sdh", 24, 0.9104), ("vdsh", 12, 0.93)):
        fl, gap, met = floor_check("mnist", m, b, v, split)
        rows.append({"method": m, "bits": b, "map": v, "map_tie_aware": v, "precision_hamming2": 0.5,
                     "precision_hamming2_empty_fraction": 0.1, "train_seconds": 1.0,
                     "floor": fl, "floor_gap": gap, "floor_met": met})
    meta = {"dataset": "mnist", "subset": "test-only", **split, "features": "pixels",
            "standardize": "global", "depth": 2, "width": 256, "seed": 0, "backend": "cpu"}
    md = _markdown(rows, meta, "vdsh compare --dataset mnist")
    assert "| itq | 32 | 0.4373 |" in md and "**missed** (-0.023)" in md
    assert "within 0.02 (-0.018)" in md and "above (+0.010)" in md
    assert "2 of 3 met; missed: itq 32." in md
