"""The package's structure: no import cycle between its modules, no private name used across
modules. Reads the source with :mod:`ast` (nothing is imported), so it sees every import,
those inside functions included."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "vdsh_numba"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py")) if "__pycache__" not in p.parts}


def resolve(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    """The absolute module an ``import`` or ``from ... import`` names."""
    if level == 0:
        return target or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def imports(mods: dict):
    """``(importer, imported module, names, lineno)`` for every import of a package module."""
    out = []
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("vdsh_numba"):
                        out.append((mod, a.name, [], node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = resolve(mod, is_pkg, node.level, node.module)
                if not target.startswith("vdsh_numba"):
                    continue
                names = [a.name for a in node.names]
                # ``from . import x``: x may be a submodule
                subs = [n for n in names if f"{target}.{n}" in mods]
                for n in subs:
                    out.append((mod, f"{target}.{n}", [], node.lineno))
                rest = [n for n in names if n not in subs]
                if rest or not subs:
                    out.append((mod, target, rest, node.lineno))
    return out


def test_no_private_name_across_modules():
    mods = modules()
    bad = []
    for importer, target, names, line in imports(mods):
        for n in names:
            if n.startswith("_") and not n.startswith("__"):
                bad.append(f"{mods[importer].relative_to(PKG.parent)}:{line} imports {n} from {target}")
    # attribute access to a private name of another package module: ``stages._say``
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = resolve(mod, path.name == "__init__.py", node.level, node.module)
                for a in node.names:
                    if f"{target}.{a.name}" in mods:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods:
                        aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != mod
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno} uses "
                           f"{aliases[node.value.id]}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_no_import_cycle():
    mods = modules()
    graph = {m: set() for m in mods}
    for importer, target, _, _ in imports(mods):
        # importing a.b.c runs a and a.b too: the edge goes to the module itself
        if target in mods and target != importer:
            graph[importer].add(target)
    # a package's __init__ importing its own submodules is how packages are built, not a cycle;
    # a submodule importing its package's __init__ back is
    cycles = []
    state = {}

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n.startswith(m + ".") and m in mods and mods[m].name == "__init__.py":
                continue
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("src,expect", [
    ("from ._x import _private\n", "imports _private"),
    ("from . import a\nb = a._hidden\n", "uses vdsh_numba.a._hidden"),
])
def test_the_checks_can_fail(tmp_path, monkeypatch, src, expect):
    """The detector finds a planted private import/attribute and a planted cycle."""
    pkg = tmp_path / "vdsh_numba"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_x.py").write_text("_private = 1\n")
    (pkg / "a.py").write_text("from . import b\n_hidden = 1\n")
    (pkg / "b.py").write_text("from . import a\n")
    (pkg / "c.py").write_text(src)
    monkeypatch.setattr(__import__(__name__), "PKG", pkg)
    with pytest.raises(AssertionError, match=expect):
        test_no_private_name_across_modules()
    with pytest.raises(AssertionError, match="vdsh_numba.a -> vdsh_numba.b -> vdsh_numba.a"):
        test_no_import_cycle()
