"""Bad input -> one clear error, exit status 2, and no output of the stage created or modified.

Every case goes through a stage's real command (``vdsh <stage>``, the click command that
``pipeline/<stage>.py`` runs; one case through ``dvc repro``) in a scratch workspace that already
holds every output of a small digits run, and compares the outputs before and after.
"""
import copy
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import urllib.error

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import ROOT
from vdsh_numba import HammingIndex, VDSH, cli, pack_codes
from vdsh_numba.data import datasets
from vdsh_numba.search import metrics as M

OUT_DIRS = ("data", "models", "codes", "reports")
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
BASE.update({"bits": [8], "depth": 2, "width": 16, "dataset": "digits"})
BASE["vdsh"]["sweeps"] = 2
ITEM = ["--method", "vdsh", "--bits", "8"]
STAGES = {"download": [], "features": [], "train": ITEM, "encode": ITEM, "evaluate": ITEM,
          "report": [], "check": []}


def vdsh(*args):
    """Run ``vdsh ARGS`` in-process (the stage's click command); returns click's Result."""
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def write_params(d, p):
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def with_params(**changes):
    """BASE with dotted keys changed: ``with_params(**{"protocol.queries_per_class": 5})``."""
    p = copy.deepcopy(BASE)
    for key, v in changes.items():
        *path, last = key.split(".")
        node = p
        for k in path:
            node = node.setdefault(k, {})
        node[last] = v
    return p


def snapshot(d):
    """Every file under the stages' output folders: content digest and modification time."""
    return {str(f.relative_to(d)): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for sub in OUT_DIRS if (d / sub).exists() for f in sorted((d / sub).rglob("*")) if f.is_file()}


def refused(d, before, result, *messages):
    """Exit status 2, each message on stderr, outputs exactly as before (no temp files left)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    for m in messages:
        assert m in result.stderr, (m, result.stderr)
    assert snapshot(d) == before


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("prepared")
    write_params(d, BASE)
    old = os.getcwd()
    os.chdir(d)
    try:
        for stage, args in STAGES.items():
            r = vdsh(stage, *args)
            assert r.exit_code == 0, (stage, r.output, r.exception)
    finally:
        os.chdir(old)
    return d


@pytest.fixture
def ws(prepared, tmp_path, monkeypatch):
    """A scratch copy of the prepared workspace, as the current directory."""
    d = tmp_path / "ws"
    shutil.copytree(prepared, d)
    monkeypatch.chdir(d)
    return d


def npz(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# --------------------------------------------------------------------------- archives (MNIST)

def _gz(path, payload):
    with gzip.open(path, "wb", compresslevel=1) as g:
        g.write(payload)


def _idx(magic, *dims, body=b""):
    return b"".join(int(v).to_bytes(4, "big") for v in (magic, *dims)) + body


def _mnist_case(case, src, dst):
    """Prepare ``dst`` for one broken-archive case; return the messages expected."""
    dst.mkdir()
    if case == "missing":
        return ["could not download", "Place the file there by hand"]
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(src / f"{stem}.gz", dst / f"{stem}.gz")
    img, lab = dst / "t10k-images-idx3-ubyte.gz", dst / "t10k-labels-idx1-ubyte.gz"
    if case == "truncated":
        img.write_bytes(img.read_bytes()[:5000])
        return [f"{img}: cannot be read as gzip", f"place a correct copy in {dst}"]
    if case == "not-gzip":
        lab.write_bytes(b"<html>404 not found</html>")
        return [f"{lab}: cannot be read as gzip"]
    if case == "wrong-digest":
        with gzip.open(lab) as f:
            payload = bytearray(f.read())
        payload[100] = (payload[100] + 1) % 10
        _gz(lab, bytes(payload))
        actual = hashlib.sha256(bytes(payload)).hexdigest()
        expected = datasets.MNIST_FILES["t10k-labels-idx1-ubyte"][2]
        return [str(lab), f"sha256 is {actual}, expected {expected}",
                f"place a correct copy of t10k-labels-idx1-ubyte.gz in {dst}"]
    # the training files have no pinned digest: their IDX structure is what is checked
    if case == "wrong-magic":
        p = dst / "train-images-idx3-ubyte.gz"
        _gz(p, _idx(2049, 60000, 28, 28))
        return [f"{p}: wrong IDX magic number 2049, expected 2051"]
    if case == "wrong-dims":
        p = dst / "train-images-idx3-ubyte.gz"
        _gz(p, _idx(2051, 60000, 27, 28))
        return [f"{p}: images are 27x28, expected 28x28"]
    if case == "labels-length":
        p = dst / "train-labels-idx1-ubyte.gz"
        _gz(p, _idx(2049, 59999, body=bytes(59999)))
        return [f"{p}: header says 59999 items, expected 60000"]
    if case == "labels-outside-classes":
        p = dst / "train-labels-idx1-ubyte.gz"
        body = bytearray(60000)
        body[123] = 10
        _gz(p, _idx(2049, 60000, body=bytes(body)))
        return [f"{p}: label 10 at item 123 is outside the declared classes 0..9"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "truncated", "not-gzip", "wrong-digest", "wrong-magic",
                                  "wrong-dims", "labels-length", "labels-outside-classes"])
def test_broken_archive_refused_by_download(case, ws, mnist_dir, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("offline (test)")
    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    messages = _mnist_case(case, mnist_dir, ws / "mnist")
    write_params(ws, with_params(dataset="mnist", data_dir=str(ws / "mnist")))
    if case == "missing":
        shutil.rmtree(ws / "data")   # nothing there: nothing may be created either
    before = snapshot(ws)
    refused(ws, before, vdsh("download"), *messages)
    if case == "missing":
        assert not (ws / "data").exists()


def test_good_archive_passes_download(ws, mnist_dir, monkeypatch):
    # the control case: the same set-up with intact files writes data/raw.npz
    monkeypatch.setattr(datasets.urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    _mnist_case("wrong-magic", mnist_dir, ws / "mnist")
    (ws / "mnist/train-images-idx3-ubyte.gz").unlink()
    write_params(ws, with_params(dataset="mnist", data_dir=str(ws / "mnist")))
    r = vdsh("download")
    assert r.exit_code == 0, r.output
    assert npz(ws / "data/raw.npz")["images"].shape == (10000, 28, 28)


# --------------------------------------------------------------------------- params

@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_refuses_a_typo_before_any_work(stage, ws):
    p = copy.deepcopy(BASE)
    p["depht"] = p.pop("depth")
    write_params(ws, p)
    before = snapshot(ws)
    refused(ws, before, vdsh(stage, *STAGES[stage]), "unknown parameter 'depht'; did you mean 'depth'?")


BAD_PARAMS = [
    ({"depth": 0}, "parameter 'depth' must be >= 1, got 0"),
    ({"width": 0}, "parameter 'width' must be >= 1, got 0"),
    ({"width": "wide"}, "parameter 'width' must be an integer, got 'wide' (str)"),
    ({"depth": 2.5}, "parameter 'depth' must be an integer, got 2.5"),
    ({"bits": [8, 0]}, "parameter 'bits[1]' must be >= 1, got 0"),
    ({"bits": [8, 2048]}, "parameter 'bits[1]' is 2048; at most 1024 bits are supported"),
    ({"bits": 8}, "parameter 'bits' must be a non-empty list"),
    ({"seed": -1}, "parameter 'seed' must be >= 0"),
    ({"dataset": "imagenet"}, "parameter 'dataset' is 'imagenet'; expected one of"),
    ({"methods": ["vdsh", "nope"]}, "parameter 'methods[1]' is 'nope'; expected one of"),
    ({"backend": "tpu"}, "parameter 'backend' is 'tpu'; expected one of ['cpu', 'cuda']"),
    ({"features": "sift"}, "parameter 'features' is 'sift'"),
    ({"protocol.queries_per_class": 0}, "parameter 'protocol.queries_per_class' must be >= 1"),
    ({"protocol.name": "leave-one-out"}, "parameter 'protocol.name' is 'leave-one-out'"),
    ({"vdsh.sweeps": "many"}, "parameter 'vdsh.sweeps' must be an integer"),
    ({"vdsh.residual": "yes"}, "parameter 'vdsh.residual' must be true or false"),
    ({"vdsh.sweps": 3}, "unknown parameter 'vdsh.sweps'; did you mean 'sweeps'?"),
    ({"evaluate.radius": -1}, "parameter 'evaluate.radius' must be >= 0"),
]


@pytest.mark.parametrize("changes, message", BAD_PARAMS, ids=[str(c) for c, _ in BAD_PARAMS])
def test_bad_param_refused_by_train_and_check(changes, message, ws):
    write_params(ws, with_params(**changes))
    before = snapshot(ws)
    refused(ws, before, vdsh("train", *ITEM), message)
    refused(ws, before, vdsh("check"), message)


@pytest.mark.parametrize("args, message", [
    (["--method", "nope", "--bits", "8"], "--method 'nope' is not one of params.yaml's methods ['vdsh']"),
    (["--method", "vdsh", "--bits", "7"], "--bits 7 is not one of params.yaml's bits [8]"),
])
def test_stage_item_must_be_in_params(args, message, ws):
    write_params(ws, BASE)
    before = snapshot(ws)
    for stage in ("train", "encode", "evaluate"):
        refused(ws, before, vdsh(stage, *args), message)


def test_more_queries_per_class_than_a_class_holds(ws):
    write_params(ws, with_params(**{"protocol.queries_per_class": 190}))
    before = snapshot(ws)
    msg = "class 0 has 178 items, fewer than queries_per_class + train_per_class = 190 + 100"
    refused(ws, before, vdsh("features"), msg, "lower protocol.queries_per_class")
    refused(ws, before, vdsh("check"), msg)
    shutil.rmtree(ws / "data")      # before any download: check loads the embedded digits itself
    before = snapshot(ws)
    refused(ws, before, vdsh("check"), "digits (embedded): " + msg)


def test_dvc_repro_refuses_a_typo_and_creates_nothing(tmp_path):
    d = tmp_path / "repo"
    d.mkdir()
    for name in ("pipeline", "vdsh_numba"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
    p = copy.deepcopy(BASE)
    p["depht"] = p.pop("depth")
    write_params(d, p)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1",
           "DVC_SITE_CACHE_DIR": str(d / ".dvc-site")}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
    r = subprocess.run(["dvc", "repro"], cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "unknown parameter 'depht'; did you mean 'depth'?" in r.stdout + r.stderr
    assert not any((d / sub).exists() for sub in OUT_DIRS)


# --------------------------------------------------------------------------- data

def _raw(ws, **arrays):
    """Rewrite data/raw.npz with some arrays replaced (``info`` as a dict is re-encoded)."""
    R = npz(ws / "data/raw.npz")
    R.update(arrays)
    if isinstance(R["info"], dict):
        R["info"] = np.str_(json.dumps(R["info"]))
    np.savez(ws / "data/raw.npz", **R)


def _features(ws, **arrays):
    F = npz(ws / "data/features.npz")
    F.update(arrays)
    np.savez(ws / "data/features.npz", **F)
    return F


def test_nan_or_inf_in_raw_data_refused_by_features(ws):
    R = npz(ws / "data/raw.npz")
    img = R["images"].astype(np.float32)
    img[5, 3, 4] = np.nan
    _raw(ws, images=img)
    before = snapshot(ws)
    refused(ws, before, vdsh("features"), "data/raw.npz: image 5 holds NaN or Inf (value 28)")
    refused(ws, before, vdsh("check"), "data/raw.npz: image 5 holds NaN or Inf")


@pytest.mark.parametrize("part, stage", [("train", "train"), ("db", "encode"), ("query", "encode")])
def test_nan_or_inf_in_features_refused(part, stage, ws):
    F = npz(ws / "data/features.npz")
    X = F[f"X_{part}"].copy()
    X[3, 7] = np.inf
    _features(ws, **{f"X_{part}": X})
    before = snapshot(ws)
    msg = f"data/features.npz: X_{part} contains NaN or Inf (first at row 3, column 7)"
    refused(ws, before, vdsh(stage, *ITEM), msg)
    refused(ws, before, vdsh("check"), msg)


def test_constant_feature_columns_do_not_divide_by_zero(ws):
    raw = npz(ws / "data/raw.npz")
    X = raw["images"].reshape(len(raw["images"]), -1)
    assert np.any(X.std(axis=0) == 0)           # digits has always-blank border pixels
    for mode in ("column", "global"):
        write_params(ws, with_params(**{"protocol.standardize": mode}))
        r = vdsh("features")
        assert r.exit_code == 0, r.output
        F = npz(ws / "data/features.npz")
        const = F["std"] == 1.0
        for part in ("query", "db", "train"):
            assert np.isfinite(F[f"X_{part}"]).all()
        if mode == "column":
            assert const.any() and np.all(F["X_train"][:, const] == 0)
    # every pixel constant (the global std is 0 too): still finite, all zeros
    _raw(ws, images=np.full_like(raw["images"], 7))
    assert vdsh("features").exit_code == 0
    assert np.all(npz(ws / "data/features.npz")["X_train"] == 0)


def test_class_without_training_example_refused_by_train(ws):
    F = npz(ws / "data/features.npz")
    keep = F["y_train"] != 3
    _features(ws, X_train=F["X_train"][keep], y_train=F["y_train"][keep])
    before = snapshot(ws)
    msg = "data/features.npz: class(es) [3] have queries or database items but no training example"
    refused(ws, before, vdsh("train", *ITEM), msg)
    refused(ws, before, vdsh("check"), msg)


def test_labels_outside_declared_classes_refused_by_features(ws):
    R = npz(ws / "data/raw.npz")
    y = R["labels"].copy()
    y[42] = 12
    _raw(ws, labels=y)
    before = snapshot(ws)
    msg = "data/raw.npz: label 12 of item 42 is outside the declared classes 0..9 of 'digits'"
    refused(ws, before, vdsh("features"), msg)
    refused(ws, before, vdsh("check"), msg)


def test_labels_of_wrong_length_refused_by_features(ws):
    R = npz(ws / "data/raw.npz")
    _raw(ws, labels=R["labels"][:-1])
    before = snapshot(ws)
    refused(ws, before, vdsh("features"), "data/raw.npz: 1797 images but labels of shape (1796,)")


def test_negative_training_label_refused_by_train(ws):
    F = npz(ws / "data/features.npz")
    y = F["y_train"].copy()
    y[0] = -1
    _features(ws, y_train=y)
    before = snapshot(ws)
    refused(ws, before, vdsh("train", *ITEM), "data/features.npz: y_train has a negative label (-1)")


def test_check_passes_and_writes_nothing(ws):
    write_params(ws, BASE)
    before = snapshot(ws)
    r = vdsh("check")
    assert r.exit_code == 0, r.output
    assert "checked: data/raw.npz: 1797 items" in r.stdout
    assert "checked: data/features.npz" in r.stdout
    assert snapshot(ws) == before


# --------------------------------------------------------------------------- memory

def test_training_that_cannot_fit_is_refused_before_allocating(ws):
    write_params(ws, with_params(depth=40, width=50000))
    before = snapshot(ws)
    r = vdsh("train", *ITEM)
    refused(ws, before, r, "training vdsh at 8 bits on 1000 items x 64 features (depth 40 x width 50000) "
                           "needs about", "available (", "lower width, depth or protocol.train_per_class")


def test_training_refused_under_an_address_space_limit(prepared, tmp_path):
    # 30 x 4096 fits this machine's RAM but not a 3 GiB `ulimit -v`: the limit is what counts
    d = tmp_path / "ws"
    shutil.copytree(prepared, d)
    write_params(d, with_params(depth=30, width=4096))
    before = snapshot(d)
    code = ("import resource, sys; lim = 3 * 2**30; resource.setrlimit(resource.RLIMIT_AS, (lim, lim)); "
            "from vdsh_numba.cli import main; sys.argv = ['vdsh'] + sys.argv[1:]; main()")
    r = subprocess.run([os.sys.executable, "-c", code, "train", *ITEM], cwd=d, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "RLIMIT_AS (ulimit -v)" in r.stderr and "needs about" in r.stderr
    assert snapshot(d) == before


# --------------------------------------------------------------------------- library API

@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    return VDSH(bits=8, depth=1, width=8, sweeps=1).fit(X, np.arange(60) % 3)


X5 = np.zeros((6, 5))
Y6 = np.arange(6) % 2
CODES = pack_codes(np.random.default_rng(1).integers(0, 2, (10, 16)))
LAB = np.arange(10) % 3

API_CASES = [
    ("fit X list", lambda m: VDSH(8).fit(X5.tolist(), Y6), TypeError, "X must be a numpy array"),
    ("fit X 1-D", lambda m: VDSH(8).fit(np.zeros(6), Y6), ValueError, "X must be 2-D"),
    ("fit X str", lambda m: VDSH(8).fit(X5.astype(str), Y6), TypeError, "X must be a real numeric array"),
    ("fit X NaN", lambda m: VDSH(8).fit(np.where(X5 == 0, np.nan, 0), Y6), ValueError,
     "X contains NaN or Inf"),
    ("fit y list", lambda m: VDSH(8).fit(X5, list(Y6)), TypeError, "y must be a numpy array"),
    ("fit y length", lambda m: VDSH(8).fit(X5, Y6[:5]), ValueError, "y has 5 rows but X has 6"),
    ("fit y scalar", lambda m: VDSH(8).fit(X5, np.array(3)), ValueError, "y must be 1-D"),
    ("fit y float", lambda m: VDSH(8).fit(X5, Y6 + 0.5), TypeError, "y must hold integer class labels"),
    ("fit y negative", lambda m: VDSH(8).fit(X5, Y6 - 1), ValueError, "y has a negative label"),
    ("fit bits", lambda m: VDSH(0).fit(X5, Y6), ValueError, "bits must be an integer >= 1"),
    ("fit depth", lambda m: VDSH(8, depth=0).fit(X5, Y6), ValueError, "depth must be an integer >= 1"),
    ("encode features", lambda m: m.encode(np.zeros((4, 3))), ValueError,
     "X has 3 features; the model was fitted on 5"),
    ("encode dtype", lambda m: m.encode(np.zeros((4, 5), dtype=complex)), TypeError, "X must be a real"),
    ("add dtype", lambda m: HammingIndex(16).add(CODES.astype(np.int64)), TypeError,
     "codes must have dtype uint8"),
    ("add shape", lambda m: HammingIndex(24).add(CODES), ValueError, "codes must have shape (n, 3)"),
    ("add list", lambda m: HammingIndex(16).add(CODES.tolist()), TypeError, "codes must be a numpy uint8"),
    ("search queries", lambda m: _index().search(CODES.astype(np.float32), 3), TypeError,
     "queries must have dtype uint8"),
    ("search k=0", lambda m: _index().search(CODES, 0), ValueError, "k must be >= 1"),
    ("search k float", lambda m: _index().search(CODES, 2.5), TypeError, "k must be an integer"),
    ("map query codes", lambda m: M.mean_average_precision(CODES.astype(np.int8), CODES, LAB, LAB),
     TypeError, "query_codes must have dtype uint8"),
    ("map db codes", lambda m: M.mean_average_precision(CODES, CODES[:, :1], LAB, LAB, bits=16),
     ValueError, "db_codes must have shape"),
    ("map labels", lambda m: M.mean_average_precision(CODES, CODES, LAB, LAB[:9]), ValueError,
     "db_labels has 9 rows, the codes have 10"),
    ("map label dtype", lambda m: M.mean_average_precision(CODES, CODES, LAB + 0.5, LAB), TypeError,
     "single-label query_labels must have an integer dtype"),
    ("map topk", lambda m: M.mean_average_precision(CODES, CODES, LAB, LAB, topk=0), ValueError,
     "topk must be >= 1"),
    ("evaluate radius", lambda m: M.evaluate_codes(CODES, CODES, LAB, LAB, 16, radius=-1), ValueError,
     "radius must be >= 0"),
    ("precision k", lambda m: M.precision_at_k(CODES, CODES, LAB, LAB, k="10"), TypeError,
     "k must be an integer"),
]


def _index():
    i = HammingIndex(16)
    i.add(CODES)
    return i


@pytest.mark.parametrize("name, call, exc, message", API_CASES, ids=[c[0] for c in API_CASES])
def test_public_entry_names_the_argument(name, call, exc, message, fitted):
    with pytest.raises(exc) as e:
        call(fitted)
    assert message in str(e.value)
