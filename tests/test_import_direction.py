"""Data flows one way: every import in the package, at module level or inside a function, follows the flow.

Each module belongs to an *area*: its sub-package (``detectors``, ``media``, ``data``, ...) or, for a top-level
module, its name (``scan``, ``runtime``, ...). An import of one area from another that a rule below forbids is an
arrow against the flow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import deepscan

PACKAGE = Path(deepscan.__file__).resolve().parent
ROOT_AREA = "deepscan"  # the package's own __init__ (its __version__)

# area -> the areas it must not import. Not yet enforced, to be fixed next: train -> evaluate (shipping uses
# evaluate's perturbations and formatting).
FORBIDDEN = {
    "detectors": {"media", "scan", "verdicts", "report", "explain", "cli", "train", "evaluate", "data"},
    "media": {"detectors", "scan", "report", "cli", "train", "evaluate"},
    "evaluate": {"train"},
    "explain": {"report", "cli", "train", "evaluate"},
    "data": {"train", "evaluate", "cli"},
}
# These import nothing of deepscan but each other.
FOUNDATION = {"runtime", "errors"}
# Only the entry points may import the CLI: the CLI itself and ``python -m deepscan``.
ENTRY_POINTS = {"cli", "__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_AREA


def submodules() -> set[str]:
    """Names directly under the package (modules and sub-packages), to tell ``from deepscan import scan`` from
    ``from deepscan import __version__``."""
    return {path.stem for path in PACKAGE.glob("*.py")} | {
        path.parent.name for path in PACKAGE.glob("*/__init__.py")
    }


def imported_modules(path: Path, tree: ast.AST) -> list[tuple[str, int]]:
    """Every deepscan module ``path`` imports (anywhere in it), with the line."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "deepscan":
                known = submodules()
                found.extend(
                    (f"deepscan.{alias.name}" if alias.name in known else "deepscan", node.lineno)
                    for alias in node.names
                )
            else:
                found.append((module, node.lineno))
    return [(module, line) for module, line in found if module.split(".")[0] == "deepscan"]


def forbidden_for(area: str) -> set[str] | None:
    """The areas ``area`` must not import; None: every area but its own foundation peers."""
    if area in FOUNDATION:
        return None
    forbidden = set(FORBIDDEN.get(area, ()))
    if area not in ENTRY_POINTS:
        forbidden.add("cli")
    return forbidden


def arrows_against_the_flow(package: Path = PACKAGE) -> list[str]:
    wrong = []
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        source = area_of(module_name(path))
        forbidden = forbidden_for(source)
        for module, line in imported_modules(path, ast.parse(path.read_text(), str(path))):
            target = area_of(module)
            if target == source:
                continue
            refused = target not in FOUNDATION if forbidden is None else target in forbidden
            if refused:
                wrong.append(f"{path.relative_to(package.parent)}:{line}: {source} imports {module}")
    return wrong


def test_every_import_follows_the_flow():
    assert arrows_against_the_flow() == []


def test_the_walk_sees_module_and_function_level_imports():
    tree = ast.parse("from deepscan.train import recipe\n\ndef f():\n    from ..scan import Scanner\n")
    path = PACKAGE / "detectors" / "example.py"
    assert imported_modules(path, tree) == [("deepscan.train", 1), ("deepscan.scan", 4)]


def test_the_rules_cover_every_area_they_name():
    areas = submodules() - {"__init__"}
    named = set(FORBIDDEN) | FOUNDATION | ENTRY_POINTS
    for forbidden in FORBIDDEN.values():
        named |= forbidden
    assert named <= areas, f"rules name areas that do not exist: {sorted(named - areas)}"


def _import_time_imports(tree: ast.Module) -> ast.Module:
    """The imports a module runs when it is imported: module level, outside ``if TYPE_CHECKING:``."""
    found = []

    def walk(statements: list[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                found.append(statement)
            elif isinstance(statement, ast.If) and "TYPE_CHECKING" not in ast.unparse(statement.test):
                walk(statement.body)
                walk(statement.orelse)
            elif isinstance(statement, ast.Try):
                walk(statement.body)
                for handler in statement.handlers:
                    walk(handler.body)

    walk(tree.body)
    return ast.Module(body=found, type_ignores=[])


def _as_module(name: str, modules: set[str]) -> str | None:
    """``name`` as one of ``modules``: itself, or the module it is an attribute of (``deepscan.scan.Scanner``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_time_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules it imports while being imported. ``from package import submodule`` is an arrow to
    the submodule (whose import runs the package's ``__init__`` first, which is the package's own business)."""
    paths = {module_name(path): path for path in package.rglob("*.py") if "__pycache__" not in path.parts}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = _import_time_imports(ast.parse(path.read_text(), str(path)))
        targets = set()
        for statement in tree.body:
            aliases = [] if isinstance(statement, ast.Import) else [alias.name for alias in statement.names]
            for module, _ in imported_modules(path, ast.Module(body=[statement], type_ignores=[])):
                submodules_named = [f"{module}.{alias}" for alias in aliases if f"{module}.{alias}" in paths]
                targets.update(submodules_named or filter(None, [_as_module(module, set(paths))]))
        graph[name] = targets - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each reported once, from the module that closes it)."""
    cycles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_module_imports_itself_back_at_import_time():
    assert import_cycles(import_time_graph()) == []


def test_the_cycle_walk_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
