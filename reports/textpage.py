"""Pages of running text (title page, verdict, notes): headings, paragraphs and bullets laid out
top-down, flowing onto a continuation page when one is full."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

from matplotlib.figure import Figure

from reports.style import new_page

TOP = 0.9  # figure fraction where the text starts, below the page title
BOTTOM = 0.05
LEFT = 0.05
LINE = 0.0185  # figure fraction per 9 pt line on an A4-landscape page (1.2 line spacing)
WRAP_CHARS = 150


@dataclass(frozen=True)
class Block:
    kind: str  # "heading" | "text" | "bullet" | "sub" | "mono"
    text: str


def heading(text: str) -> Block:
    return Block("heading", text)


def para(text: str) -> Block:
    return Block("text", text)


def bullet(text: str) -> Block:
    return Block("bullet", text)


def sub(text: str) -> Block:
    """A second-level bullet under the one before it."""
    return Block("sub", text)


def mono(text: str) -> Block:
    """Preformatted lines (tables of figures), kept as they are."""
    return Block("mono", text)


def _lines(block: Block) -> list[tuple[str, float, dict]]:
    """(text, x offset, text properties) per printed line of a block."""
    if block.kind == "heading":
        return [(block.text, 0.0, {"fontsize": 11, "fontweight": "bold"})]
    if block.kind == "mono":
        return [(line, 0.0, {"family": "monospace", "fontsize": 8})
                for line in block.text.splitlines()]
    if block.kind in ("bullet", "sub"):
        indent, mark = (0.01, "\u2022 ") if block.kind == "bullet" else (0.03, "\u2013 ")
        wrapped = textwrap.wrap(block.text, WRAP_CHARS - 4 - int(indent * 200)) or [""]
        return [((mark if i == 0 else "   ") + line, indent, {"fontsize": 9})
                for i, line in enumerate(wrapped)]
    return [(line, 0.0, {"fontsize": 9}) for line in textwrap.wrap(block.text, WRAP_CHARS)]


def text_pages(title: str, blocks: list[Block], subtitle: str = "") -> list[Figure]:
    """Lay the blocks out on as many pages as they need; continuation pages say so."""
    pages = [new_page(title, subtitle)]
    y = TOP
    for block in blocks:
        lines = _lines(block)
        space_before = 0.6 * LINE if block.kind == "heading" else 0.15 * LINE
        # Keep a heading with the first lines of what follows it.
        needed = space_before + LINE * (3 if block.kind == "heading" else len(lines))
        if y - needed < BOTTOM and y < TOP:
            pages.append(new_page(f"{title} (continued)", subtitle))
            y = TOP
        y -= space_before if y < TOP else 0.0
        for text, dx, props in lines:
            if y < BOTTOM:
                pages.append(new_page(f"{title} (continued)", subtitle))
                y = TOP
            pages[-1].text(LEFT + dx, y, text, ha="left", va="top", **props)
            y -= LINE * (1.25 if block.kind == "heading" else 1.0)
    return pages
