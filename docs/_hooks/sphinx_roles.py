"""MkDocs hook: render the Sphinx roles still found in some docstrings (``:class:`X```) as plain code.

mkdocstrings reads Google-style docstrings; a Sphinx role in one would otherwise show as ``:class:`` before the
code span. ``:class:`~pkg.mod.Name``` shows ``Name``, as in Sphinx. Once every docstring uses one style (issue 31's
refactor), this hook can be removed with its line in ``mkdocs.yml``.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):<code>(~)?([^<]*)</code>")


def _code(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"<code>{target.rsplit('.', 1)[-1] if match.group(1) else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_code, html)
