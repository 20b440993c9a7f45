"""The folders are the layers, and imports run one way: the stack model at the bottom, then the
components, the composition, the policy pack, the offline tools and the benchmarks. A module
imports only from its own folder or from a layer below; any import counts, at module level or
inside a function. No layer imports the tests: what a test and a benchmark share lives in tools/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lower first. `__main__.py` is the program's entry point: it may import the composition.
LAYERS = ["stacks", "components", "composition", "policy", "tools", "benchmarks"]


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports() -> list[str]:
    bad = []
    for rank, layer in enumerate(LAYERS):
        for path in sorted((ROOT / layer).rglob("*.py")):
            if "actionlint" in path.parts or "node_modules" in path.parts:
                continue
            for line, module in imports(path):
                top = module.split(".")[0]
                if top in LAYERS and LAYERS.index(top) > rank:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({top} is above {layer})")
                if top == "tests":
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module} (no layer imports the tests)")
    return bad


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from composition.platform import main\n")
    assert imports(path) == [(2, "composition.platform")]


# The integration harness's parts, lower first (tests/integration/harness/__init__.py).
HARNESS = "tests.integration.harness"
HARNESS_PARTS = ["errors", "engine", "kinds", "inputs", "state", "commands", "containers", "runner", "seeding"]


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """`imports`, less those under `if TYPE_CHECKING:` (annotations only; nothing runs them)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_each_harness_part_imports_only_the_parts_below_it() -> None:
    folder = ROOT / HARNESS.replace(".", "/")
    assert sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") == sorted(HARNESS_PARTS)
    bad = []
    for rank, part in enumerate(HARNESS_PARTS):
        for line, module in runtime_imports(folder / f"{part}.py"):
            other = module.removeprefix(HARNESS + ".")
            if module.startswith(HARNESS + ".") and HARNESS_PARTS.index(other) >= rank:
                bad.append(f"{part}.py:{line} imports {other}")
    assert bad == []
