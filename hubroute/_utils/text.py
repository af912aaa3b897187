"""Text helpers shared by the layers: one sentence splitter for card text."""

from __future__ import annotations

import re

__all__ = ["split_sentences"]

# A line break, or whitespace after sentence punctuation: raw card text, as the router stores it.
_LINE_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Whitespace after sentence punctuation, before what can start a sentence: cleaned prose.
_PROSE_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\w\"'(])")
_ABBREVIATION = re.compile(
    r"(?:\b(?:e\.g|i\.e|vs|etc|approx|incl|fig|no|mr|dr|cf)\.|\b[a-z]\.)$", re.IGNORECASE
)


def split_sentences(text: str | None, *, prose: bool = False, limit: int | None = None) -> list[str]:
    """Split text into sentences (stripped, never empty).

    Args:
        text: The text (``None`` or empty: no sentences).
        prose: ``False``: a line break also ends a sentence, and so does any whitespace after ``.``, ``!`` or
            ``?`` (a card's stored text, for explanations). ``True``: cleaned prose, where only whitespace
            after ``.``, ``!`` or ``?`` followed by a word, a quote or a parenthesis ends a sentence, and an
            abbreviation (``e.g.``, ``i.e.``, ``vs.``, a single letter) never does (lower-case cards too).
        limit: Keep at most this many sentences (``None``: all).

    Returns:
        The sentences, in order.
    """
    if not text:
        return []
    out: list[str] = []
    if prose:
        for piece in _PROSE_SENTENCE_END.split(text):
            piece = piece.strip()
            if not piece:
                continue
            if out and _ABBREVIATION.search(out[-1]):
                out[-1] = f"{out[-1]} {piece}"
            else:
                out.append(piece)
    else:
        out = [s.strip() for s in _LINE_SENTENCE_END.split(text) if s and s.strip()]
    return out if limit is None else out[:limit]
