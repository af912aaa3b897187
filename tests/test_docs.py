"""The README stays a front page, every relative link in it and in ``docs/`` resolves, and the docs site's two
hooks do their job: the command-line reference is the parsers' own help, and pages still being written are left
out of the nav only while they are missing.

The strict site build (``python -m mkdocs build --strict``, run by CI) checks the links between docs pages and
their anchors too; these tests are the fast part, and they cover the README, which the site does not build.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_LIMIT = 15_000  # bytes

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def _load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"hubroute_docs_{name}", DOCS / "_hooks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _slug(heading: str) -> str:
    """The anchor of a heading, as MkDocs' ``toc`` and GitHub both make it for plain ASCII headings."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE)}


def _generated(path: Path) -> bool:
    """Pages whose headings a hook writes at build time (the strict build checks links to them)."""
    return "<!-- hubroute-cli-reference -->" in path.read_text(encoding="utf-8")


def _relative_links(path: Path) -> list[str]:
    text = _CODE_SPAN.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))
    return [t for t in _LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def _pages() -> list[Path]:
    return [README, *sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)]


def test_the_readme_is_a_front_page() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, (
        f"README.md is {size:,} bytes: move detail into docs/ (limit {README_LIMIT:,})"
    )
    text = README.read_text(encoding="utf-8")
    for command in ("python examples/quickstart.py", "hubroute bench cmrbench", "python -m pytest"):
        assert command in text
    # Nothing of this repository's surroundings: paths beside the checkout or on a maintainer's machine.
    assert not re.search(r"\.\./shared|/work/|/home/|/root/", text)


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _relative_links(page):
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif page != README and DOCS not in resolved.parents and resolved != DOCS:
            broken.append(f"{target} (outside docs/: the site cannot link to it)")
        elif (
            anchor
            and resolved.suffix == ".md"
            and not _generated(resolved)
            and anchor not in _anchors(resolved)
        ):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_cli_reference_is_the_parsers_own_help(monkeypatch: pytest.MonkeyPatch) -> None:
    from hubroute.cli import train
    from hubroute.cli._args import subcommands
    from hubroute.cli.main import build_parser

    hook = _load_hook("cli_reference")
    page = DOCS / "reference" / "cli.md"
    assert hook.MARKER in page.read_text(encoding="utf-8")  # the page keeps the place the reference goes
    rendered = hook.cli_reference()
    parser = build_parser()
    commands = subcommands(parser)
    assert {"train", "update", "route", "serve", "bench", "eval"} <= commands.keys()
    for name in commands:
        assert f"`hubroute {name}`" in rendered
    for name in subcommands(commands["bench"]):
        assert f"`hubroute bench {name}`" in rendered
    # Stubs are rendered from the full parser: train's help lists the CARvE flags.
    assert "--num-hard-negatives" in rendered and "--num-hard-negatives" in train.make_parser().format_help()
    monkeypatch.setenv("COLUMNS", hook.COLUMNS)  # the width the page is rendered at
    for name in ("route", "serve", "eval"):
        assert commands[name].format_help().rstrip() in rendered


def test_pending_pages_leave_the_nav_only_while_missing(tmp_path: Path) -> None:
    hook = _load_hook("pending_pages")
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "written.md").write_text("# Written\n")
    nav: list[Any] = [
        {"Home": "index.md"},
        {"Guides": [{"Written": "guides/written.md"}, {"Pending": "guides/pending.md"}]},
        {"Benchmarks": [{"Pending too": "benchmarks/pending.md"}]},
        {"Typo": "guides/typo.md"},
    ]
    config = type("Config", (), {})()
    config.nav, config.docs_dir = nav, str(tmp_path)
    config.extra = {"pending_pages": ["guides/written.md", "guides/pending.md", "benchmarks/pending.md"]}
    assert hook.on_config(config).nav == [
        {"Home": "index.md"},
        {"Guides": [{"Written": "guides/written.md"}]},  # a pending page that landed is published
        {"Typo": "guides/typo.md"},  # missing and not pending: kept, so the strict build fails on it
    ]


def test_pending_pages_are_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def paths(entries: list[Any]) -> set[str]:
        found: set[str] = set()
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found |= paths(value) if isinstance(value, list) else {value}
        return found

    in_nav = paths(config["nav"])
    assert set(config["extra"]["pending_pages"]) <= in_nav
    written = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "_hooks" not in p.parts}
    assert written <= in_nav, f"pages missing from mkdocs.yml's nav: {sorted(written - in_nav)}"
