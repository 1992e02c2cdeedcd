"""VDSH checkpointing (resume after SIGKILL is bitwise equal) and the divergence guard."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vdsh_numba.methods.vdsh import VDSH, TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(depth=3, width=32, seed=0)

CHILD = r"""
import sys, time
import numpy as np
from sklearn.datasets import load_digits
from vdsh_numba.data.features import build_features
from vdsh_numba.methods.vdsh import VDSH
d = load_digits()
F = build_features(d.images, d.target, 16, 20, 100, 0)
ck, out, sweeps, every, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
m = VDSH(16, depth=3, width=32, seed=0, sweeps=sweeps, checkpoint_every=every)
def cb(it, mm):
    print("sweep", it + 1, flush=True)
    time.sleep(pause)
m.on_sweep = cb
m.fit(F["X_train"], F["y_train"], checkpoint_path=None if ck == "-" else ck)
print("resumed_from", m.resumed_from_, flush=True)
m.save(out)
"""


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from vdsh_numba.data.features import build_features
    d = load_digits()
    return build_features(d.images, d.target, 16, 20, 100, 0)


def _arrays(path):
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files if k not in ("__train_seconds__", "__params__")}


def _assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _child(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _meta(path):
    with np.load(path, allow_pickle=False) as d:
        return json.loads(str(d["__meta__"]))


def test_resume_after_sigkill_is_bitwise_equal(tmp_path):
    ck, killed_out, ref_out = tmp_path / "ck.npz", tmp_path / "resumed.npz", tmp_path / "ref.npz"
    sweeps = 10
    p = _child([ck, killed_out, sweeps, 1, 0.4])
    # wait for the 3rd sweep's checkpoint, then kill -9 in the middle of the run
    t0 = time.time()
    for line in p.stdout:
        if line.strip() == "sweep 3":
            break
        assert time.time() - t0 < 240, "child too slow"
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert not killed_out.exists()
    done = _meta(ck)["sweep"]
    assert 3 <= done < sweeps
    # resume: the same command line again
    r = _child([ck, killed_out, sweeps, 1, 0.0])
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    assert f"resumed_from {done}" in out
    ref = _child(["-", ref_out, sweeps, 0, 0.0])
    out2, err2 = ref.communicate(timeout=300)
    assert ref.returncode == 0, err2
    assert "resumed_from 0" in out2
    _assert_same(_arrays(killed_out), _arrays(ref_out))


def test_resume_in_process_and_extend(digits, tmp_path):
    F, ck = digits, tmp_path / "ck.npz"
    full = VDSH(16, sweeps=6, **CFG).fit(F["X_train"], F["y_train"])
    VDSH(16, sweeps=4, checkpoint_every=2, **CFG).fit(F["X_train"], F["y_train"], checkpoint_path=ck)
    assert _meta(ck)["sweep"] == 4
    m = VDSH(16, sweeps=6, checkpoint_every=2, **CFG)
    m.fit(F["X_train"], F["y_train"], checkpoint_path=ck)
    assert m.resumed_from_ == 4
    assert [h["iteration"] for h in m.history_] == list(range(1, 7))
    for a, b in zip(full._state().values(), m._state().values()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.B_train_, m.B_train_)


def test_checkpoint_refuses_other_data_or_params(digits, tmp_path):
    F, ck = digits, tmp_path / "ck.npz"
    VDSH(16, sweeps=2, checkpoint_every=1, **CFG).fit(F["X_train"], F["y_train"], checkpoint_path=ck)
    with pytest.raises(ValueError, match="other data or parameters"):
        VDSH(16, sweeps=3, checkpoint_every=1, depth=3, width=32, seed=1).fit(
            F["X_train"], F["y_train"], checkpoint_path=ck)
    with pytest.raises(ValueError, match="other data or parameters"):
        VDSH(16, sweeps=3, checkpoint_every=1, **CFG).fit(F["X_train"][:-1], F["y_train"][:-1],
                                                          checkpoint_path=ck)


def test_divergence_guard_names_sweep_and_layer(digits, tmp_path):
    F, ck = digits, tmp_path / "ck.npz"
    m = VDSH(16, sweeps=8, checkpoint_every=1, **CFG)

    def poison(it, mm):
        if it + 1 == 3:
            mm.W_[1][0, 0] = np.inf  # hidden layer 2 after sweep 3 (its checkpoint is written)
    m.on_sweep = poison
    with pytest.raises(TrainingDiverged, match=r"sweep 4, hidden layer 2") as e:
        m.fit(F["X_train"], F["y_train"], checkpoint_path=ck)
    assert isinstance(e.value, FloatingPointError)
    assert e.value.sweep == 4 and e.value.layer == 2 and e.value.checkpoint == str(ck)
    meta = _meta(ck)
    assert meta["sweep"] == 3
    with np.load(ck) as d:
        assert all(np.isfinite(d[k]).all() for k in d.files if k != "__meta__")


def test_divergence_without_checkpoint(digits):
    m = VDSH(16, sweeps=4, **CFG, beta=np.nan)
    with pytest.raises(TrainingDiverged, match="sweep 1") as e:
        m.fit(digits["X_train"], digits["y_train"])
    assert e.value.checkpoint is None


def test_resume_without_resync_restores_every_auxiliary_variable(digits, tmp_path):
    """resync=False keeps every a_h, z_h across sweeps: the checkpoint holds them all and the
    resumed fit is bitwise the uninterrupted one (wide first layer, no multipliers, prox)."""
    F, ck = digits, tmp_path / "ck.npz"
    kw = dict(depth=3, width=16, first_width=24, seed=0, resync=False, multipliers=False, prox=0.1)
    full = VDSH(16, sweeps=5, **kw).fit(F["X_train"], F["y_train"])
    VDSH(16, sweeps=3, checkpoint_every=3, **kw).fit(F["X_train"], F["y_train"], checkpoint_path=ck)
    with np.load(ck) as d:
        assert {f"A_{h}" for h in (1, 2, 3)} | {f"Z_{h}" for h in (1, 2, 3)} <= set(d.files)
    m = VDSH(16, sweeps=5, checkpoint_every=3, **kw).fit(F["X_train"], F["y_train"], checkpoint_path=ck)
    assert m.resumed_from_ == 3
    _assert_same({k: np.asarray(v) for k, v in full._state().items()}, {k: np.asarray(v) for k, v in m._state().items()})
    np.testing.assert_array_equal(full.B_train_, m.B_train_)
    assert [h["forward_gap"] for h in full.history_][1:] == [h["forward_gap"] for h in m.history_][1:]
