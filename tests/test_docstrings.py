"""One docstring style in the package: Google sections (``Args:``, ``Returns:``, ``Raises:``), which the API
reference renders (mkdocstrings, ``docstring_style: google``); no Sphinx field lists, epydoc tags or NumPy
sections. Cross-reference roles (:class:`X`) inside the text are fine: the docs hook renders them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hubroute"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)

FIELD_LIST = re.compile(
    r"^\s*:(param|parameter|arg|argument|key|keyword|type|returns?|rtype|raises?|except|exception|yields?|ytype"
    r"|ivar|cvar|var)\b[^:\n]*:",
    re.MULTILINE,
)
EPYDOC = re.compile(r"^\s*@(param|type|return|rtype|raise|ivar)\b", re.MULTILINE)
NUMPY_SECTION = re.compile(
    r"^\s*(Parameters|Other Parameters|Returns|Yields|Receives|Raises|Warns|Attributes|Methods|Examples?|Notes"
    r"|See Also|References)\s*\n\s*-{3,}\s*$",
    re.MULTILINE,
)
OTHER_GOOGLE_NAMES = re.compile(
    r"^\s*(Arguments|Parameters|Params|Return|Keyword Arguments):\s*$", re.MULTILINE
)


def _docstrings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=False)
            if text:
                found.append((getattr(node, "lineno", 1), text))
    return found


def _problems(text: str) -> list[str]:
    problems = [f"Sphinx field {m.group(0).strip()!r}" for m in FIELD_LIST.finditer(text)]
    problems += [f"epydoc tag {m.group(0).strip()!r}" for m in EPYDOC.finditer(text)]
    problems += [f"NumPy section {m.group(1)!r}" for m in NUMPY_SECTION.finditer(text)]
    problems += [f"section {m.group(1)!r}: (use Args: / Returns:)" for m in OTHER_GOOGLE_NAMES.finditer(text)]
    return problems


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_docstrings_use_google_sections(path: Path):
    wrong = [f"line {line}: {problem}" for line, text in _docstrings(path) for problem in _problems(text)]
    assert not wrong, f"{path.relative_to(PACKAGE.parent)}: " + "; ".join(wrong)


def test_the_check_finds_the_other_styles():
    assert _problems("Do it.\n\n:param x: the x.\n:returns: y.\n:raises ValueError: bad.")
    assert _problems("Do it.\n\nParameters\n----------\nx : int\n    The x.\n")
    assert _problems("Do it.\n\n@param x: the x.")
    assert _problems("Do it.\n\nArguments:\n    x: the x.")
    assert not _problems(
        "Do it with :class:`~hubroute.HubRouter`.\n\nArgs:\n    x: The x.\n\nReturns:\n    The y.\n\n"
        "Raises:\n    ValueError: bad x.\n"
    )
