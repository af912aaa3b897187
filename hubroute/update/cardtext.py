"""Model-card cleaning: from a Hub ``README.md`` to the text that describes what the model does.

A card mixes a description with markup, badges, code, tables, citations and boilerplate. :func:`parse_card`
keeps what routing needs:

- the **description**: the text before the first section and the sections about what the model is
  ("Model description", "Overview", "Highlights", ...), with markup removed;
- the **intended uses**: the sentences and bullet points of sections such as "Intended uses", "Uses",
  "Direct use", "Applications" (never "Out-of-scope use" or "Limitations");

and drops code blocks, HTML, images and badges, link targets, URLs, tables, and sections such as citations,
licences, training hyper-parameters, evaluation tables, installation and contact details. The result is
close to the card descriptions CMRBench was built from (§1.5 of the CARvE notes: the first lines plus the
description section, cleaned).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CardText", "parse_card", "split_front_matter", "clean_markdown", "card_sections"]

_FRONT_MATTER = re.compile(r"\A\ufeff?\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.DOTALL | re.MULTILINE)
_UNCLOSED_FENCE = re.compile(r"^[ \t]*(```|~~~).*\Z", re.DOTALL | re.MULTILINE)
_BLOCK_TAGS = re.compile(r"<(script|style|pre|code|table|svg)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_BREAK_TAGS = re.compile(r"<\s*(br|/p|/div|/li|/h\d|hr)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|!\[[^\]]*\]\[[^\]]*\]")
_LINK = re.compile(r"\[([^\]]*)\]\((?:[^()]|\([^)]*\))*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_REF_DEF = re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$", re.MULTILINE)
_URL = re.compile(r"(?:https?://|www\.)\S+")
_INLINE_CODE = re.compile(r"`([^`\n]*)`")
_EMPHASIS = re.compile(r"(\*\*|__|~~)(.+?)\1")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?!\w)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s*(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^\s*(=+|-+)\s*$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_QUOTE = re.compile(r"^\s*>+\s?")
_SPACES = re.compile(r"[ \t\u00a0]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")

_BOILERPLATE = re.compile(
    r"this model card has been automatically generated|provide a quick summary|this is the model card of a|"
    r"model card for model id|fill in|\btodo\b",
    re.IGNORECASE,
)
_FILLER = re.compile(r"\[?more information needed\]?|\[optional\]", re.IGNORECASE)
_DROP_SECTIONS = re.compile(
    r"citation|\bcite\b|bibtex|reference|licen[cs]e|acknowledg|contact|author|maintainer|\bteam\b|"
    r"hyper-?param|training (procedure|details|data|setup|config|hyper|results|loss)|framework version|"
    r"environmental|carbon|compute infrastructure|hardware|software|install|requirement|setup|"
    r"quantiz|gguf|download|\bfiles?\b|prompt template|chat template|changelog|\bnews\b|\bupdates?\b|release|"
    r"evaluation|benchmark|result|metric|performance|leaderboard|score|"
    r"out[- ]of[- ]scope|misuse|malicious|bias|risk|limitation|caveat|disclaimer|ethic|safety|"
    r"recommendation|glossary|\bfaq\b|troubleshoot|community|discord|\bjoin\b|sponsor|\bsupport\b|"
    r"how to (run|load|start|get started|install)|\bcode\b|example|inference|deploy|serving|\bapi\b|"
    r"model card (authors|contact)|more information|table of contents|contents",
    re.IGNORECASE,
)
_USE_SECTIONS = re.compile(
    r"intended|^uses?\b|direct use|downstream|use[- ]cases?|applications?|what (it|this model|you) can|"
    r"capabilit|how to use|usage|tasks?\b|good for|suited",
    re.IGNORECASE,
)
_DESCRIPTION_SECTIONS = re.compile(
    r"description|overview|introduction|intro\b|summary|about|model details|highlights?|key features|features|"
    r"what is|model card|model information|details|architecture|^model\b",
    re.IGNORECASE,
)
_CODE_LINE = re.compile(
    r"^\s*(from \w|import \w|pip |python |\$ |>>>|def |class |return |print\(|[\w.]+\s*=\s*[\w.]+\(|"
    r"[{}\[\]();]+\s*$|--\w)"
)


@dataclass
class CardText:
    """What a model card says about its model, cleaned.

    Attributes:
        metadata: The card's YAML front matter (``{}`` when absent or malformed).
        title: The first heading, if any.
        description: The description: the card's opening text and its description sections, cleaned.
        uses: Intended uses: one string per bullet point or sentence of the "uses" sections.
        text: ``description`` followed by the uses, at most ``max_words`` words: the model's card text.
    """

    metadata: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    description: str = ""
    uses: list[str] = field(default_factory=list)
    text: str = ""

    @property
    def words(self) -> int:
        """Number of words of :attr:`text`."""
        return len(self.text.split())


@dataclass
class _Section:
    heading: str
    level: int
    lines: list[str]


def split_front_matter(readme: str) -> tuple[dict[str, Any], str]:
    """Split a README into its YAML metadata (``{}`` when absent or malformed) and its Markdown body."""
    import yaml

    match = _FRONT_MATTER.match(readme)
    if not match:
        return {}, readme
    try:
        metadata = yaml.safe_load(match.group(1))
    except (yaml.YAMLError, ValueError, TypeError, OverflowError):  # ``date: 2024-13-45`` raises ValueError
        metadata = None
    return (metadata if isinstance(metadata, dict) else {}), readme[match.end() :]


def _strip_blocks(body: str) -> str:
    """Remove what never carries description: comments, code, embedded HTML blocks, images, tables."""
    body = _HTML_COMMENT.sub("\n", body)
    body = _FENCE.sub("\n", body)
    body = _UNCLOSED_FENCE.sub("\n", body)
    body = _BLOCK_TAGS.sub("\n", body)
    body = _BREAK_TAGS.sub("\n", body)
    body = _IMAGE.sub(" ", body)
    body = _REF_DEF.sub("", body)
    return body


def clean_markdown(text: str) -> str:
    """Return the plain text of a Markdown/HTML fragment: no tags, images, links targets, URLs or emphasis.

    Args:
        text: A fragment of a card (one line or more).

    Returns:
        The text with whitespace collapsed (newlines kept between lines).
    """
    text = _strip_blocks(text)
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    for _ in range(2):  # badges nest an image inside a link
        text = _LINK.sub(lambda m: m.group(1), text)
    text = _REF_LINK.sub(lambda m: m.group(1), text)
    text = _URL.sub(" ", text)
    text = _INLINE_CODE.sub(lambda m: m.group(1), text)
    text = _EMPHASIS.sub(lambda m: m.group(2), text)
    text = _ITALIC.sub(lambda m: m.group(1), text)
    lines = []
    for line in text.splitlines():
        line = _QUOTE.sub("", line)
        line = _SPACES.sub(" ", line).strip(" |")
        if line:
            lines.append(line)
    return "\n".join(lines)


def card_sections(body: str) -> tuple[str | None, list[_Section]]:
    """Split a card body into its title and sections (``#`` and underlined headings).

    The text before the first section heading is a section with an empty heading.

    Returns:
        ``(title, sections)``; the title is the first level-1 heading, if any.
    """
    lines = _strip_blocks(body).splitlines()
    title: str | None = None
    sections = [_Section("", 0, [])]
    previous = ""
    for line in lines:
        heading = _HEADING.match(line)
        if heading and heading.group(2):
            text = clean_markdown(heading.group(2)).replace("\n", " ").strip()
            level = len(heading.group(1))
            if level == 1 and title is None and not sections[-1].heading:
                title = text
                continue
            sections.append(_Section(text, level, []))
        elif _SETEXT.match(line) and previous.strip() and sections[-1].lines:
            sections[-1].lines.pop()  # the previous line was an underlined heading
            text = clean_markdown(previous).strip()
            if line.strip().startswith("=") and title is None:
                title = text
            else:
                sections.append(_Section(text, 2, []))
        else:
            sections[-1].lines.append(line)
        previous = line
    return title, sections


def _keep_line(line: str) -> bool:
    letters = sum(c.isalpha() for c in line)
    return (
        letters >= 3
        and letters >= 0.4 * len(line)
        and not _TABLE_ROW.match(line)
        and not _CODE_LINE.match(line)
        and not _BOILERPLATE.search(line)
        and len(_CJK.findall(line)) <= 0.2 * letters
    )


def _section_lines(section: _Section) -> list[str]:
    """The kept paragraphs and list items of a section, markup removed, one string each.

    Wrapped lines of a paragraph (or of a list item) are joined; blank lines, list markers and tables end
    them.
    """
    blocks: list[list[str]] = []
    current: list[str] = []
    for raw in section.lines:
        if not raw.strip() or _TABLE_ROW.match(raw):
            current = []
            continue
        if _LIST_MARKER.match(raw) or not current or _CODE_LINE.match(raw):
            current = [_LIST_MARKER.sub("", raw)]
            blocks.append(current)
        else:
            current.append(raw)
    out = []
    for block in blocks:
        line = _FILLER.sub(" ", " ".join(part.strip() for part in block))
        line = _SPACES.sub(" ", clean_markdown(line).replace("\n", " ")).strip()
        if line and _keep_line(line):
            out.append(line)
    return out


def _join(lines: list[str]) -> str:
    parts: list[str] = []
    for line in lines:
        line = line.strip()
        if parts and not parts[-1].endswith((".", "!", "?", ":", ";")):
            parts[-1] += "."
        parts.append(line)
    return " ".join(parts).strip()


def _truncate(text: str, max_words: int) -> str:
    words = text.split()
    return " ".join(words[:max_words]) if len(words) > max_words else text


def _classify(heading: str, inherited: str | None) -> str:
    if not heading:
        return "description"
    if _USE_SECTIONS.search(heading) and not _DROP_SECTIONS.search(heading.replace("use", "")):
        return "uses"
    if _DROP_SECTIONS.search(heading):
        return "drop"
    if _DESCRIPTION_SECTIONS.search(heading):
        return "description"
    return inherited or "other"


def parse_card(readme: str | None, max_words: int = 300) -> CardText:
    """Clean a model card (``README.md``) into its description and intended uses.

    Args:
        readme: The README text (front matter included), or ``None``.
        max_words: Cap on the words of :attr:`CardText.text` (the encoder truncates longer text anyway).

    Returns:
        The cleaned :class:`CardText`. A card with nothing usable has an empty ``text``.
    """
    if not readme:
        return CardText()
    metadata, body = split_front_matter(readme)
    title, sections = card_sections(body)
    description: list[str] = []
    uses: list[str] = []
    other: list[str] = []
    parent_kind: dict[int, str] = {}
    for section in sections:
        inherited = next(
            (parent_kind[lvl] for lvl in sorted(parent_kind, reverse=True) if lvl < section.level), None
        )
        kind = _classify(section.heading, inherited if inherited != "other" else None)
        parent_kind = {lvl: k for lvl, k in parent_kind.items() if lvl < section.level}
        parent_kind[section.level] = kind
        lines = _section_lines(section)
        if kind == "description":
            description += lines
        elif kind == "uses":
            uses += lines
        elif kind == "other":
            other += lines
    if len(" ".join(description).split()) < 40:  # thin description: borrow neutral sections
        description += other
    description_text = _truncate(_join(description), max_words)
    use_items = [u.rstrip(":") for u in uses if len(u.split()) >= 3]
    remaining = max_words - len(description_text.split())
    text = description_text
    if use_items and remaining > 0:
        text = _join([description_text, _truncate(_join(use_items), remaining)]) if text else _join(use_items)
        text = _truncate(text, max_words)
    return CardText(metadata=metadata, title=title, description=description_text, uses=use_items, text=text)
