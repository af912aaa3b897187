"""Every third-party package that hubroute imports is declared in pyproject.toml.

Every module under ``hubroute/`` is parsed with ``ast``; each absolute import (at module level, inside a
function or under ``if TYPE_CHECKING:``) names a top-level package. The standard library and hubroute itself
are skipped; every other name must map, through ``importlib.metadata.packages_distributions()``, to a
distribution listed in ``[project] dependencies`` or in one of ``[project.optional-dependencies]``' extras
(an optional feature such as a server may import its own extra's packages).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hubroute"


def _canonical(name: str) -> str:
    """A distribution name as PEP 503 normalises it (``PyYAML`` -> ``pyyaml``, ``faiss_cpu`` -> ``faiss-cpu``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"unreadable requirement {requirement!r} in pyproject.toml"
    return _canonical(match.group(1))


def declared_distributions() -> set[str]:
    """Distributions named in ``[project] dependencies`` and in every optional extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return {_requirement_name(r) for r in requirements}


def imported_top_levels() -> dict[str, list[str]]:
    """Top-level name of every absolute import under ``hubroute/`` -> the files that import it."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                files = found.setdefault(name.split(".")[0], [])
                relative = str(path.relative_to(ROOT))
                if relative not in files:
                    files.append(relative)
    return found


def third_party_imports() -> dict[str, list[str]]:
    return {
        name: files
        for name, files in imported_top_levels().items()
        if name not in sys.stdlib_module_names and name != "hubroute"
    }


def test_the_scan_sees_the_main_dependencies() -> None:
    imported = third_party_imports()
    for name in ("torch", "transformers", "huggingface_hub", "numpy", "yaml"):
        assert name in imported, f"the import scan missed {name!r}"
    assert "json" not in imported and "hubroute" not in imported


def test_every_imported_package_is_declared() -> None:
    declared = declared_distributions()
    installed = importlib.metadata.packages_distributions()
    undeclared = []
    for name, files in sorted(third_party_imports().items()):
        # An import name can come from several distributions (namespace packages); one declared is enough.
        # A package not installed here (an optional extra left out) is matched by its own name.
        candidates = {_canonical(d) for d in installed.get(name, [])} or {_canonical(name)}
        if not candidates & declared:
            undeclared.append(
                f"{name} (distribution {', '.join(sorted(candidates))}; imported in {files[0]})"
            )
    assert not undeclared, (
        "hubroute imports packages that pyproject.toml does not declare (add them to [project] dependencies, "
        "or to an optional extra for an optional feature): " + "; ".join(undeclared)
    )
