"""A small HTML builder for the report pages: sections, tables, images, notes of what is missing.

Everything a page shows is escaped with :func:`html.escape`; the CSS is inline, there is no script and
nothing is fetched from the network, so the page opens offline. Images are referenced by paths relative
to the page, so a copied directory keeps working; figures the report draws itself go into a folder next
to the page (``.report-files/`` beside ``report.html``). That folder is hidden because a dreamed dataset is
also an image-folder dataset (one sub-folder per class) and the folder loader skips hidden entries: a visible
folder would read as an extra class. A page holds no time of "now": regenerating it from the same directory
gives the same bytes.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

from dreamdata.atomic import write_text_atomic

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 24px 48px; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 24px 0 4px; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
h3 { margin: 20px 0 6px; } .subtitle { color: #555; margin: 0 0 12px; }
nav { font-size: 0.9em; margin: 8px 0 16px; } nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.92em; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 10px 0 18px; } figcaption { color: #555; font-size: 0.9em; margin-top: 4px; }
img { max-width: min(100%, 1000px); border: 1px solid #eee; } img.pixels { image-rendering: pixelated; }
.missing { background: #fff4e5; border-left: 4px solid #f0a020; padding: 6px 10px; margin: 8px 0; }
.ok { color: #17702e; } .bad { color: #b3261e; }
pre { background: #f6f8fa; padding: 8px 10px; overflow-x: auto; font-size: 0.85em; }
code { background: #f6f8fa; padding: 0 3px; } details { margin: 6px 0 12px; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def anchor(text: str) -> str:
    """An id from a title: lower case, runs of other characters as ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "section"


class Page:
    """One report page being built: its path, its folder of drawn figures, and its HTML parts in order."""

    def __init__(self, out: Path, title: str, subtitle: str = ""):
        self.out = Path(out)
        self.files_dir = self.out.parent / f".{self.out.stem}-files"  # hidden: not a class of a dreamed set
        self.title, self.subtitle = title, subtitle
        self.parts: list[str] = []
        self.sections: list[tuple[str, str]] = []
        self.images: list[Path] = []  # every image the page references, for the caller's checks
        self._open = False

    # -- structure ----------------------------------------------------------------------------------
    def section(self, ident: str, title: str) -> None:
        """Start a top-level ``<section id=ident>`` (closing the previous one)."""
        self._close()
        self.sections.append((ident, title))
        self.parts.append(f'<section id="{esc(ident)}">\n<h2>{esc(title)}</h2>')
        self._open = True

    def heading(self, text: str, ident: str = "") -> None:
        attribute = f' id="{esc(ident)}"' if ident else ""
        self.parts.append(f"<h3{attribute}>{esc(text)}</h3>")

    def block(self, ident: str, title: str, top: bool) -> None:
        """A section of its own on a top-level page, a sub-heading inside another page's section."""
        if top:
            self.section(ident, title)
        else:
            self.heading(title)

    def _close(self) -> None:
        if self._open:
            self.parts.append("</section>")
            self._open = False

    # -- content ------------------------------------------------------------------------------------
    def text(self, text: str) -> None:
        self.parts.append(f"<p>{esc(text)}</p>")

    def raw(self, markup: str) -> None:
        """Markup built by this module's helpers (already escaped)."""
        self.parts.append(markup)

    def missing(self, text: str) -> None:
        """A note saying what the directory lacks (an interrupted run, an unfinished stage)."""
        self.parts.append(f'<p class="missing"><strong>missing:</strong> {esc(text)}</p>')

    def pairs(self, rows: Iterable[tuple[str, object]]) -> None:
        """A two-column table of ``(name, value)``."""
        body = "".join(f"<tr><th>{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in rows)
        self.parts.append(f"<table>{body}</table>")

    def table(self, header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> None:
        """A table; columns whose index is in ``numeric`` are right-aligned."""
        head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
        body = "".join("<tr>" + "".join(
            f'<td class="num">{esc(cell)}</td>' if index in numeric else f"<td>{esc(cell)}</td>"
            for index, cell in enumerate(row)) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def code(self, text: str, summary: str = "") -> None:
        """Preformatted text, folded under ``summary`` when given."""
        block = f"<pre>{esc(text)}</pre>"
        self.parts.append(f"<details><summary>{esc(summary)}</summary>{block}</details>" if summary else block)

    def link(self, path: Path, text: str) -> str:
        """Markup of a link to ``path`` (relative to the page)."""
        return f'<a href="{esc(self.href(path))}">{esc(text)}</a>'

    def image(self, path: Path, caption: str, width: int | None = None, pixels: bool = False) -> None:
        """A figure showing the PNG at ``path``, or a missing note when the file is absent; ``pixels``: an
        upscaled view, which the browser must not smooth again."""
        path = Path(path)
        if not path.is_file():
            self.missing(f"{path.name} ({caption}) was not written")
            return
        self.images.append(path)
        size = f' style="width: {int(width)}px"' if width else ""
        kind = ' class="pixels"' if pixels else ""
        self.parts.append(f'<figure><img src="{esc(self.href(path))}" alt="{esc(caption)}"{kind}{size}>'
                          f"<figcaption>{esc(caption)}</figcaption></figure>")

    def drawn(self, name: str) -> Path:
        """Where a figure the report draws goes (the page's files folder, created)."""
        self.files_dir.mkdir(parents=True, exist_ok=True)
        return self.files_dir / name

    def href(self, path: Path) -> str:
        relative = os.path.relpath(Path(path).resolve(), self.out.parent.resolve())
        return quote(Path(relative).as_posix(), safe="/@")

    # -- output -------------------------------------------------------------------------------------
    def render(self) -> str:
        self._close()
        nav = "".join(f'<a href="#{esc(ident)}">{esc(title)}</a>' for ident, title in self.sections)
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{esc(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
                f"<h1>{esc(self.title)}</h1>\n<p class=\"subtitle\">{esc(self.subtitle)}</p>\n"
                f"<nav>{nav}</nav>\n" + "\n".join(self.parts) + "\n</body>\n</html>\n")

    def write(self) -> Path:
        write_text_atomic(self.out, self.render())
        return self.out


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """The pipe tables of a Markdown text as ``(header, rows)`` (how summary.md files hold their results)."""
    tables, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if line.startswith("|") and index + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[index + 1].strip()):
            header = _cells(line)
            rows = []
            index += 2
            while index < len(lines) and lines[index].strip().startswith("|"):
                rows.append(_cells(lines[index].strip()))
                index += 1
            tables.append((header, rows))
        else:
            index += 1
    return tables


def _cells(line: str) -> list[str]:
    return [cell.strip().replace("`", "") for cell in line.strip("|").split("|")]


def percent(value) -> str:
    """A share as a percentage with two decimals, ``n/a`` for a missing or NaN one."""
    if value is None or value != value:
        return "n/a"
    return f"{100 * value:.2f}"
