"""Card templates shipped as package data (``cards/``, installed as ``hubroute._cards``)."""

from __future__ import annotations

from importlib import resources

__all__ = ["read_template"]


def read_template(name: str) -> str:
    """Return the text of the card template ``name`` (e.g. ``"router_card.md"``)."""
    return resources.files("hubroute._cards").joinpath(name).read_text(encoding="utf-8")
