"""MkDocs hook: leave out of the nav the pages that other branches are still writing.

``mkdocs.yml`` lists them under ``extra.pending_pages``. A nav entry whose file is missing is dropped (with a note
in the build log) only when it is listed there; any other missing page stays in the nav, so that the strict build
fails on it. A pending page whose file exists is kept as it is: merging the page is all it takes to publish it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.pending_pages")


def _prune(nav: list[Any], docs_dir: Path, pending: set[str]) -> list[Any]:
    kept: list[Any] = []
    for entry in nav:
        title, target = next(iter(entry.items())) if isinstance(entry, dict) else (None, entry)
        if isinstance(target, list):
            children = _prune(target, docs_dir, pending)
            if children:
                kept.append({title: children} if title is not None else children)
            continue
        if isinstance(target, str) and target in pending and not (docs_dir / target).is_file():
            log.info("pending page %s is not written yet: left out of the nav", target)
            continue
        kept.append(entry)
    return kept


def on_config(config: Any) -> Any:
    pending = set(config.extra.get("pending_pages") or [])
    if config.nav and pending:
        config.nav = _prune(config.nav, Path(config.docs_dir), pending)
    return config
