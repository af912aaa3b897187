"""The package is a stack of layers, each importing only from below, with no import loop.

Every module is parsed with ``ast``; imports at module level and inside functions count alike (an import
hidden in a function to dodge a loop is still a loop). Imports under ``if TYPE_CHECKING:`` are for type
hints only: they may not point up a layer, but may point sideways within one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hubroute"

# Bottom first. Modules of one layer may import each other (without a loop); a layer never imports a higher one.
LAYERS: list[tuple[str, ...]] = [
    ("hubroute._utils", "hubroute.errors", "hubroute._cards"),
    ("hubroute.routing",),
    ("hubroute.training",),
    ("hubroute.evaluation",),
    ("hubroute.update",),
    ("hubroute.run",),  # running the chosen model: each task's InferenceClient call, backends, inputs
    ("hubroute.bench", "hubroute.serve", "hubroute.testing"),
    ("hubroute.cli",),
]
FACADE = "hubroute"  # the top-level __init__ re-exports the public API; nothing below may import it


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, type-checking only)`` for every import of hubroute's own modules."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_type_only = type_only or _is_type_checking_block(child)
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target == "hubroute" or target.startswith("hubroute."):
                    # `from hubroute.x import y` may import the submodule y
                    for alias in child.names:
                        candidate = f"{target}.{alias.name}"
                        is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(
                            ".py"
                        ).exists() or (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                        found.append((candidate if is_module else target, child.lineno, child_type_only))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "hubroute" or alias.name.startswith("hubroute."):
                        found.append((alias.name, child.lineno, child_type_only))
            visit(child, child_type_only)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_sits_in_a_layer():
    unplaced = [
        _module_name(p) for p in MODULES if _module_name(p) != FACADE and _layer(_module_name(p)) is None
    ]
    assert not unplaced, f"modules outside every layer of tests/test_layers.py: {unplaced}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_down(path: Path):
    module = _module_name(path)
    if module == FACADE:
        return
    rank = _layer(module)
    assert rank is not None
    wrong = []
    for target, line, _ in _imports(path):
        if target == FACADE:
            wrong.append(f"line {line}: imports the top-level package {FACADE!r}; import the module instead")
            continue
        target_rank = _layer(target)
        if target_rank is not None and target_rank > rank:
            wrong.append(f"line {line}: {target} is in a higher layer")
    assert not wrong, f"{module}: " + "; ".join(wrong)


def test_no_import_loop():
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        module = _module_name(path)
        edges = {t for t, _, type_only in _imports(path) if not type_only and t != module}
        graph[module] = {t for t in edges if t != FACADE}
    loops: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                loops.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt in graph and state.get(nxt) is None:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if state.get(module) is None:
            walk(module, [])
    assert not loops, "import loops: " + "; ".join(" -> ".join(loop) for loop in loops)


# The test helpers (local Hub, fake providers, background servers) may be imported by the benchmarks, which
# measure hubroute against them, and by tests and examples; never by the library or the CLI, which start a test
# server only as a process (``python -m hubroute.testing.hub_server``, ``python -m hubroute.testing.fake_inference``).
TESTING = "hubroute.testing"
MAY_IMPORT_TESTING = (TESTING, "hubroute.bench")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_only_benchmarks_import_the_test_helpers(path: Path):
    module = _module_name(path)
    if any(module == p or module.startswith(p + ".") for p in MAY_IMPORT_TESTING):
        return
    lines = sorted({line for t, line, _ in _imports(path) if t == TESTING or t.startswith(TESTING + ".")})
    assert not lines, f"{module} imports hubroute.testing (lines {lines}); move that code to hubroute.bench"


EXAMPLES = sorted((PACKAGE.parent / "examples").glob("*.py"))
TEST_MODULES = {p.stem for p in (PACKAGE.parent / "tests").glob("*.py")}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_import_nothing_from_tests(path: Path):
    """Examples use the installed package only (the local Hub is ``hubroute.testing``), never ``tests/``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & TEST_MODULES, f"{path.name} imports from tests/: {sorted(imported & TEST_MODULES)}"
    assert "sys.path" not in ast.unparse(tree), f"{path.name} edits sys.path"


TESTS = PACKAGE.parent / "tests"
TEST_FILES = sorted(TESTS.glob("*.py"))
# The modules of tests/ that hold no tests and may be imported: the builders and fixture types the tests share
# (conftest.py holds the fixtures), and the worker that tests/test_distributed.py launches with torchrun and
# also calls in-process for its one-process reference.
SHARED_TEST_MODULES = {"factories", "distributed_worker"}


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_tests_import_only_shared_helpers(path: Path):
    """A test module imports the package, the shared modules and fixtures (by name, from ``conftest.py``), never
    another test module nor ``conftest`` itself: what tests share goes to ``factories`` or ``hubroute.testing``."""
    others = {p.stem for p in TEST_FILES} - SHARED_TEST_MODULES - {path.stem}
    wrong = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if not node.level else [f".{node.module or ''}"]
        else:
            continue
        wrong += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0] in others or n.startswith(".")]
    assert not wrong, (
        f"{path.name} imports test modules (move what they share to tests/factories.py): {wrong}"
    )
