"""No module reaches into another's private names: `from x import _y`, or `x._y` on a module of
ours bound by an import. A leading underscore says "not part of the interface"; a caller that
needs it asks for a public name instead. Dunder names (`__version__`) are public."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ["stacks", "components", "composition", "policy", "tools", "benchmarks", "tests"]
OURS = {*FOLDERS, "__main__"}


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_our_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return dotted.split(".")[0] in OURS and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file())


def module_names(tree: ast.Module) -> set[str]:
    """Names bound to modules of ours by an import anywhere in the file."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_our_module(alias.name):
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if is_our_module(f"{node.module}.{alias.name}"):
                    bound.add(alias.asname or alias.name)
    return bound


def attribute_of_module(node: ast.Attribute, modules: set[str]) -> str | None:
    """`x._y` for `x` bound to a module of ours, else None."""
    if isinstance(node.value, ast.Name) and node.value.id in modules:
        return f"{node.value.id}.{node.attr}"
    return None


def private_uses(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    modules = module_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if private(a.name)]
        elif isinstance(node, ast.Attribute) and (dotted := attribute_of_module(node, modules)) and private(node.attr):
            found.append((node.lineno, dotted))
    return found


def offenders() -> list[str]:
    bad = []
    paths = [ROOT / "__main__.py", *(p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py")))]
    for path in paths:
        if "actionlint" in path.parts or "node_modules" in path.parts:
            continue
        where = str(path.relative_to(ROOT))
        bad += [f"{where}:{line} uses {name}" for line, name in private_uses(path)]
    return bad


def test_no_module_uses_another_modules_private_name() -> None:
    assert offenders() == []


def test_the_check_sees_a_private_import_and_a_private_attribute(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        "from pulumi.runtime.sync_await import _sync_await\n"
        "from __future__ import annotations\n"
        "from tools import synth\n"
        "def f():\n"
        "    return synth._clean, synth.run, synth.__name__\n"
    )
    assert private_uses(path) == [(1, "pulumi.runtime.sync_await._sync_await"), (5, "synth._clean")]
