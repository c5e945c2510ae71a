"""The house: the package's import graph has no circles and no import from a lower floor to a higher one.

Floors, bottom to top (ARCHITECTURE.md, "Layout and floors"): the ground floor imports nothing of
the zoo outside its own package; each floor above imports only floors at or below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aezoo

ROOT = Path(aezoo.__file__).parent
GROUND = ("core", "checks", "progress", "nn", "likelihoods", "data", "plots", "report")
FLOORS: list[tuple[str, ...]] = [
    GROUND,
    ("traces",),  # trace and replay, shared by engines and diagnostics
    ("guides", "priors", "sequence"),
    ("inference",),
    ("models",),
    ("diagnostics",),
    ("catalogue", "evaluations", "tracking", "runs", "compare", "cli", "__main__", "__init__"),
]


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The aezoo modules ``name`` imports (resolved to files), itself excluded."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                base = ".".join(up + ([base] if base else []))
            else:
                base = base.removeprefix("aezoo.").removeprefix("aezoo") if base.startswith("aezoo") else None
            if base is None:
                continue
            targets = [f"{base}.{a.name}" if base else a.name for a in node.names] + [base]
        else:
            continue
        for target in targets:
            if isinstance(node, ast.Import):
                if not target.startswith("aezoo"):
                    continue
                target = target.removeprefix("aezoo").removeprefix(".")
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def floor(name: str) -> int:
    top = name.split(".")[0]
    return next(i for i, tops in enumerate(FLOORS) if top in tops)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_floor():
    assert all(floor(name) >= 0 for name in graph())


def test_no_import_goes_up_a_floor_and_the_ground_floor_imports_no_zoo():
    up = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets if floor(b) > floor(a))
    assert not up, up
    ground = sorted(f"{a} -> {b}" for a, targets in graph().items() if floor(a) == 0
                    for b in targets if b.split(".")[0] != a.split(".")[0])
    assert not ground, ground


def test_no_import_circles():
    g = graph()
    # a package's __init__ importing its own submodules is the registry pattern, not a circle
    edges = {a: {b for b in targets if not (a == b.rpartition(".")[0] or b.startswith(a + "."))}
             for a, targets in g.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(v: str, path: list[str]) -> bool:
        state[v] = 1
        for w in edges[v]:
            if state.get(w) == 1:
                cycle.extend(path[path.index(w):] + [v, w] if w in path else [v, w])
                return True
            if w not in state and visit(w, path + [v]):
                return True
        state[v] = 2
        return False

    assert not any(visit(v, []) for v in sorted(edges) if v not in state), cycle


def test_the_checker_sees_a_lower_to_higher_import(tmp_path):
    # the test above can fail: a ground-floor module importing the zoo is caught
    fake = {"core": tmp_path / "core.py", "models": tmp_path / "models.py"}
    fake["core"].write_text("from aezoo.models import MODELS\n")
    fake["models"].write_text("")
    found = imports("core", fake["core"], fake)
    assert found == {"models"} and floor("models") > floor("core")


def test_models_import_no_engine_and_data_import_no_model():
    g = graph()
    assert g["runs"] >= {"models", "data", "inference"}  # the walk sees the imports that do exist
    bad = sorted(f"{a} -> {b}" for a, t in g.items() for b in t
                 if (a.startswith("models") and b.startswith("inference")) or (a.startswith("data") and
                                                                                b.startswith("models")))
    assert not bad, bad
