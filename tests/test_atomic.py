"""A crash while a stage writes leaves its previous output intact and no temporary file behind."""
import numpy as np
import pytest

from tests.test_reliability import ITEM, npz, prepared, snapshot, vdsh, ws  # noqa: F401 (fixtures)
from vdsh_numba import io


class Crash(RuntimeError):
    pass


def _half_then_crash(real):
    """A writer that writes half of what ``real`` would, then dies."""
    def w(f, *a, **k):
        import io as _io
        buf = _io.BytesIO()
        real(buf, *a, **k)
        data = buf.getvalue()
        f.write(data[:len(data) // 2])
        f.flush()
        raise Crash("killed mid-write")
    return w


def test_helpers_leave_target_untouched(tmp_path, monkeypatch):
    t = tmp_path / "out.json"
    io.write_json(t, {"a": 1})
    before = t.read_bytes()
    with pytest.raises(Crash):
        with io.atomic_path(t) as tmp:
            tmp.write_text("{half")
            raise Crash
    assert t.read_bytes() == before and sorted(tmp_path.iterdir()) == [t]
    z = tmp_path / "a.npz"
    io.save_npz(z, x=np.arange(3))
    monkeypatch.setattr(io.np, "savez", _half_then_crash(np.savez))
    with pytest.raises(Crash):
        io.save_npz(z, x=np.arange(10 ** 5))
    assert npz(z)["x"].tolist() == [0, 1, 2] and sorted(tmp_path.iterdir()) == [z, t]


@pytest.mark.parametrize("stage, args, target", [
    ("features", [], "data/features.npz"),
    ("train", ITEM, "models/vdsh_8.npz"),
    ("encode", ITEM, "codes/vdsh_8.npz"),
])
def test_stage_killed_while_writing_npz(stage, args, target, ws, monkeypatch):
    before = snapshot(ws)
    monkeypatch.setattr(io.np, "savez", _half_then_crash(np.savez))
    r = vdsh(stage, *args)
    assert isinstance(r.exception, Crash)
    assert snapshot(ws) == before  # the old output is whole, no .tmp file is left


def test_report_killed_while_writing_a_plot(ws, monkeypatch):
    import matplotlib.figure
    before = snapshot(ws)

    def savefig(self, f, **kw):
        with open(f, "wb") as out:
            out.write(b"\x89PNG half")
        raise Crash("killed mid-write")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    r = vdsh("report")
    assert isinstance(r.exception, Crash)
    after = snapshot(ws)
    # files written before the crash were replaced whole; the plot is the old one; no temp files
    assert set(after) == set(before)
    assert after["reports/map_vs_bits.png"] == before["reports/map_vs_bits.png"]
