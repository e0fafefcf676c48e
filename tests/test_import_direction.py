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
