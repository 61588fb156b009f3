"""The package's shape, checked from its code: no import cycle, no import inside a function,
no metric read that nothing writes, capabilities that never import the store."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "celery_resilience"
CAPABILITIES = ("admission", "breakers", "fallbacks", "load", "monitoring", "providers", "web")


def _read_modules() -> list[tuple[str, Path, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path, ast.parse(path.read_text())))
    return found


MODULES = _read_modules()
KNOWN = {name for name, _, _ in MODULES}


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    """Every module of the package: its dotted name, its file and its syntax tree."""
    yield from MODULES


def imported(name: str, path: Path, tree: ast.AST) -> set[str]:
    """The package's modules a module imports (``from pkg import sub`` counts ``pkg.sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target in KNOWN:
                found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in KNOWN}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in KNOWN}
    return found - {name}


def test_no_import_cycle_in_the_package() -> None:
    """Following imports from any module never leads back to it."""
    graph = {name: imported(name, path, tree) for name, path, tree in modules()}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        for target in graph[node]:
            if target in trail:
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in done:
                visit(target, [*trail, target])
        done.add(node)

    done: set[str] = set()
    for start in graph:
        if start not in done:
            visit(start, [start])
    assert cycles == []


def test_no_import_inside_a_function() -> None:
    """Imports sit at the top of modules: none dodges a cycle from inside a function."""
    inside = [
        f"{name}:{node.lineno}"
        for name, _, tree in modules()
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert inside == []


# The Celery layer: what binds the capabilities to Celery (and the store, which implements
# their ports). Beside it and the capabilities, only shared ground the capabilities use.
LAYER = (
    "extension", "task", "ai_task", "answering", "shedding", "bootsteps", "cli", "prometheus", "publishing",
    "store",
)  # fmt: skip
SHARED = ("clock", "errors", "rates", "settings", "validation", "testing")


def test_every_module_belongs_to_a_capability_the_layer_or_the_shared_ground() -> None:
    """No module sits outside the checks below: a new one names its place here."""
    places = {*CAPABILITIES, *LAYER, *SHARED}
    unplaced = [
        name for name, _, _ in modules() if name != "celery_resilience" and name.split(".")[1] not in places
    ]
    assert unplaced == []


def test_capabilities_do_not_import_the_store_or_the_celery_layer() -> None:
    """A capability needs its own port; the store implements it; the Celery layer calls in."""
    layer = set(LAYER)
    crossing = [
        f"{name} imports {target}"
        for name, path, tree in modules()
        if name.split(".")[1:2] and name.split(".")[1] in CAPABILITIES
        for target in imported(name, path, tree)
        if target.split(".")[1] in layer
    ]
    assert crossing == []


def _counter_names() -> dict[str, str]:
    """The metric names ``monitoring/counters.py`` defines (not the provider scope, which names
    a family of counters): constant -> its text."""
    tree = ast.parse((PACKAGE / "monitoring" / "counters.py").read_text())
    names = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.isupper()
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }
    names.pop("PROVIDER_SCOPE")
    return names


def _names_used(path: Path) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Name)}


def test_every_metric_read_is_written_and_every_metric_written_is_read() -> None:
    """Every metric the summary reads is written by some code, and every one written is read."""
    names = _counter_names()
    counters = ast.parse((PACKAGE / "monitoring" / "counters.py").read_text())
    writers = {
        node.name: {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        for node in counters.body
        if isinstance(node, ast.FunctionDef)
    }
    elsewhere = [
        path
        for _, path, _ in modules()
        if path.parent.name != "monitoring" or path.name not in ("counters.py", "summary.py")
    ]
    used_elsewhere = set().union(*(_names_used(path) for path in elsewhere))
    called = {name for name in writers if name in used_elsewhere}
    lua = "\n".join(path.read_text() for path in (PACKAGE / "store" / "lua").glob("*.lua"))
    derived = {"REQUESTS", "TIER"} if "derive" in called else set()
    written = {
        constant
        for constant, text in names.items()
        if any(constant in writers[writer] for writer in called)
        or constant in used_elsewhere
        or re.search(rf'"{re.escape(text)}', lua)
    } | derived
    read = _names_used(PACKAGE / "monitoring" / "summary.py") & set(names)
    assert read - written == set(), "read but never written"
    assert set(names) - read == set(), "written but never read"
