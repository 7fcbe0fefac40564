"""Conformance statement: Markdown building blocks (headings with a table of contents, tables)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Doc", "table", "uid"]


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], caption: str = "") -> str:
    """A GitHub-flavoured Markdown table, with an optional caption line above it."""
    lines = [f"*{caption}*", ""] if caption else []
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def uid(value: str) -> str:
    """A UID as code, so that it is not wrapped or linked."""
    return f"`{value}`"


def _anchor(title: str) -> str:
    """The anchor GitHub gives a heading (lower case, punctuation dropped, spaces to -)."""
    text = re.sub(r"[^\w\- ]", "", title.lower())
    return text.replace(" ", "-")


@dataclass
class Doc:
    """A document built section by section; headings are numbered and listed in the TOC."""

    parts: list[str] = field(default_factory=list)
    toc: list[tuple[int, str]] = field(default_factory=list)
    _numbers: list[int] = field(default_factory=list)

    def heading(self, level: int, title: str, *, numbered: bool = True) -> None:
        """Add a heading of ``level`` (1 = a chapter); numbered ones are 1, 1.1, 1.1.1 ..."""
        if numbered:
            del self._numbers[level:]
            while len(self._numbers) < level:
                self._numbers.append(0)
            self._numbers[level - 1] += 1
            prefix = ".".join(str(n) for n in self._numbers)
            title = f"{prefix} {title}"
        self.toc.append((level, title))
        self.parts.append(f"{'#' * (level + 1)} {title}")

    def annex(self, level: int, letter: str, title: str) -> None:
        """An annex heading (A.1, A.2 ...), listed in the TOC, outside the numbering."""
        self.heading(level, f"{letter} {title}", numbered=False)

    def add(self, *blocks: str) -> None:
        """Paragraphs, tables or lists, each one block."""
        self.parts += [b.strip("\n") for b in blocks]

    def contents(self, max_level: int = 2) -> str:
        """The table of contents as a nested list of links."""
        return "\n".join(
            f"{'  ' * (level - 1)}- [{title}](#{_anchor(title)})"
            for level, title in self.toc
            if level <= max_level
        )

    def text(self) -> str:
        return "\n\n".join(self.parts) + "\n"
