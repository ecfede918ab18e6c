"""Tables the commands print: a rich table on a terminal, full tab-separated lines off it.

Off a terminal (`canary simulate ... > file`, a pipe, `watch`, a CI log) rich would lay the
table out for 80 columns (or $COLUMNS) and wrap or cut headers, reasons and numbers. There,
every table is printed as tab-separated values instead: an optional `# title` line, one line
of column names, one line per row; a cell is never cut, wrapped or styled (tabs and line breaks
inside a cell become spaces). On a terminal, columns other than free text never wrap, and no
column is narrower than the longest word of its header.

Cells are plain strings (printed as they are: a reason's "[0.41, 2.08]" is not rich markup) or
`rich.text.Text` for colour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

Cell = str | Text
#: A free-text column is never squeezed below this on a terminal (words stay whole).
TEXT_MIN_WIDTH = 30


@dataclass(frozen=True)
class Column:
    """One column: `text` columns (reasons, sentences) wrap at spaces on a terminal; the others
    (names, numbers, times) never wrap."""

    name: str
    text: bool = False
    justify: Literal["left", "right"] = "left"


def stdout_console() -> Console:
    """The console a command prints to: lines are never wrapped by rich (a terminal wraps
    them itself; a file gets them whole)."""
    return Console(highlight=False, soft_wrap=True)


def plain(cell: Cell) -> str:
    """A cell as one line of plain text."""
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def tsv_lines(columns: Sequence[Column], rows: Iterable[Sequence[Cell]],
              title: str | None = None) -> list[str]:
    """The table as tab-separated lines (what is printed off a terminal)."""
    out = [f"# {plain(title)}"] if title else []
    out.append("\t".join(plain(c.name) for c in columns))
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} cells for {len(columns)} columns: {row!r}")
        out.append("\t".join(plain(cell) for cell in row))
    return out


def print_table(console: Console, columns: Sequence[Column], rows: Iterable[Sequence[Cell]],
                *, title: str | None = None, **table_options: Any) -> None:
    """Print a table on `console`: rich on a terminal (`table_options` go to rich's Table:
    box, show_lines, expand...), tab-separated full lines otherwise."""
    rows = list(rows)
    if not console.is_terminal:
        # Written as is: rich would expand the tabs to spaces.
        console.file.write("".join(line + "\n" for line in tsv_lines(columns, rows, title)))
        console.file.flush()
        return
    table = Table(title=title, **table_options)
    for c in columns:
        longest_word = max((len(w) for w in c.name.split()), default=1)
        table.add_column(c.name, justify=c.justify, no_wrap=not c.text,
                         overflow="fold" if c.text else "ellipsis",
                         min_width=max(longest_word, TEXT_MIN_WIDTH if c.text else 0),
                         ratio=1 if c.text and table.expand else None)
    for row in rows:
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
    console.print(table)


__all__ = ["Cell", "Column", "plain", "print_table", "stdout_console", "tsv_lines"]
