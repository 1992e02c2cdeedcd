"""The shape of the VDSH engine (issue 14): one loop, two twin op modules, no cycles.

* ``vdsh_numba.methods.vdsh.cpu_ops`` and ``cuda_ops`` export the same names with the same signatures
  (the engine calls only those), as ``admm.py`` / ``gpu_admm.py`` do;
* the modules of ``vdsh_numba.methods.vdsh`` import each other without a cycle and without private names;
* the update order is a parameter of the loop: a second one inherits checkpointing and history.

The numerical checks of the engine are tests/test_admm.py, tests/test_checkpoint.py (CPU) and
tests/cuda/test_gpu_model.py (CUDA against CPU, under the simulator).
"""
import ast
import inspect
from pathlib import Path

import numpy as np

from vdsh_numba.methods.vdsh import VDSH, cpu_ops, engine

PKG = Path(engine.__file__).parent


def _sig(f):
    return inspect.signature(getattr(f, "py_func", f))


def test_cpu_and_cuda_ops_are_twins():
    from vdsh_numba.methods.vdsh import cuda_ops  # importing needs no GPU
    assert cpu_ops.__all__ == cuda_ops.__all__
    for name in cpu_ops.__all__:
        a, b = getattr(cpu_ops, name), getattr(cuda_ops, name)
        if callable(a):
            assert _sig(a) == _sig(b), name
    assert (cpu_ops.NAME, cuda_ops.NAME) == ("cpu", "cuda")


def test_engine_uses_only_the_twin_interface():
    """Every ``ops.<name>`` the engine calls is in the ops modules' ``__all__``."""
    tree = ast.parse((PKG / "engine.py").read_text())
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "ops"}
    assert used and used <= set(cpu_ops.__all__), used - set(cpu_ops.__all__)


def _imports(path):
    """(module names imported from inside vdsh_numba.methods.vdsh, names imported) of one file."""
    mods, names = set(), []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and n.level >= 1:
            if n.level == 1 and n.module:
                mods.add(n.module.split(".")[0])
            elif n.level == 1:
                mods.update(a.name for a in n.names)
            names += [a.name for a in n.names]
    return mods, names


def test_no_cycles_and_no_private_names():
    files = {p.stem: p for p in PKG.glob("*.py")}
    graph = {}
    for stem, p in files.items():
        mods, names = _imports(p)
        assert not [x for x in names if x.startswith("_")], (stem, names)
        graph[stem] = {m for m in mods if m in files and m != stem}
    graph.pop("__init__")  # the package re-exports; nothing inside imports it
    state = {}

    def visit(m, path):
        assert state.get(m) != "open", f"import cycle: {' -> '.join(path + [m])}"
        if state.get(m) == "done":
            return
        state[m] = "open"
        for d in graph.get(m, ()):
            visit(d, path + [m])
        state[m] = "done"
    for m in graph:
        visit(m, [])


def test_update_order_is_pluggable(tmp_path):
    """A second update order is one function; the loop gives it checkpoints and history rows."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    X = rng.standard_normal((3, 5))[y] * 3 + rng.standard_normal((30, 5))
    seen = []

    def every_other(run, S, it):  # e.g. a scheme that logs which sweep it ran
        seen.append(it)
        return engine.layerwise_sweep(run, S, it)

    m = VDSH(4, depth=2, width=6, first_width=0, sweeps=3)
    Xc = m._clip(np.ascontiguousarray(X, dtype=np.float32))
    from vdsh_numba.methods.base import label_matrix
    hist = []
    r = engine.train(cpu_ops, Xc, label_matrix(y), depth=2, width=6, bits=4, seed=0,
                     o={**m.train, "checkpoint_every": 1}, history=hist, checkpoint_path=tmp_path / "c.npz",
                     fingerprint={"x": 1}, update=every_other)
    assert seen == [0, 1, 2] and [h["iteration"] for h in hist] == [1, 2, 3]
    ref = VDSH(4, depth=2, width=6, first_width=0, sweeps=3).fit(X, y)
    np.testing.assert_array_equal(r.B, ref.B_train_)
    assert (tmp_path / "c.npz").exists()
