"""The layout keeps its promises (docs/architecture.md): no import cycle, imports inside functions
included; only the kernel layer imports pyroute2; the pure layers import nothing that touches
the system; a feature is registered in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "netlab"
PURE = ("netlab.core", "netlab.model", "netlab.plan", "netlab.features", "netlab.verify.checks")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every netlab module `name` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    deps = set()
    for dep in found:
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        parts = dep.split(".")
        deps |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
    # A package of the importer's own is already being imported: no edge to it.
    own = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
    return {d for d in deps if d in MODULES and d != name and d not in own}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycle() -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(GRAPH[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(GRAPH):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_no_import_cycle_counting_imports_inside_functions():
    assert _cycle() == []


def test_the_check_finds_a_cycle_when_there_is_one():
    GRAPH["netlab.core.lab"].add("netlab.model")
    try:
        assert _cycle()
    finally:
        GRAPH["netlab.core.lab"].discard("netlab.model")


def test_only_the_kernel_layer_imports_pyroute2():
    users = sorted(name for name, path in MODULES.items()
                   if "pyroute2" in {n.split(".")[0] for n in _all_imports(path)})
    assert users and all(u.startswith("netlab.runtime.kernel.") for u in users), users


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith(PURE)))
def test_pure_layers_touch_nothing(name):
    """model, plan, features and checks: nothing of the runtime or the CLI, no netlink (a
    feature's probes may run a probe process, as verify's own do; show() gets its status)."""
    touching = {d for d in GRAPH[name] if d.startswith(("netlab.runtime", "netlab.cli"))}
    raw = {n.split(".")[0] for n in _all_imports(MODULES[name])} & {"pyroute2", "ctypes"}
    assert not touching and not raw, (name, touching, raw)


def _all_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.add(node.module or "")
    return out


def test_every_feature_is_registered_once():
    from netlab.core.feature import Feature
    from netlab.features import FEATURES
    names = [f.name for f in FEATURES]
    assert all(isinstance(f, Feature) for f in FEATURES) and len(set(names)) == len(names)


def test_no_module_over_about_500_lines():
    """A module that grows past ~500 lines is doing several jobs: split it along its seams."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {n: s for n, s in sizes.items() if s > 550} == {}
