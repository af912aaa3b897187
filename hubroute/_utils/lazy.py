"""Package attributes imported on first use (PEP 562), so that importing a light module of a package, or
``hubroute`` itself, does not load torch, transformers or datasets."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` that imports each of ``names`` from its module on first use.

    Args:
        package: The package's ``__name__``.
        names: Attribute -> module holding it, absolute or relative to ``package`` (``".router"``).
        namespace: The package's ``globals()``: an imported attribute is stored there, so later lookups do
            not come back to ``__getattr__``.

    Returns:
        The ``__getattr__`` function.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name], package), name)
        namespace[name] = value
        return value

    return __getattr__
