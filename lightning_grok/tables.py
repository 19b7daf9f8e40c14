"""The one table renderer: rows of cells as aligned text lines (the terminal's tables) or as a markdown table
(the fits tables written beside each figure)."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(
    rows: Sequence[Sequence[object]], align: str = "", min_widths: Sequence[int] = (), sep: str = "  "
) -> list[str]:
    """``rows`` as lines: column i as wide as its widest cell (and at least ``min_widths[i]``), its cells
    left-aligned, or right-aligned where ``align[i]`` is ``>``; columns joined by ``sep``, trailing spaces
    dropped. A row shorter than the others leaves its last columns empty; cells are shown with ``str``."""
    cells = [[str(c) for c in row] for row in rows]
    n = max((len(row) for row in cells), default=0)
    cells = [row + [""] * (n - len(row)) for row in cells]
    widths = [max([len(row[i]) for row in cells] + list(min_widths[i : i + 1])) for i in range(n)]
    right = [i < len(align) and align[i] == ">" for i in range(n)]
    return [
        sep.join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)).rstrip()
        for row in cells
    ]


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A markdown (GitHub) table: the header, its ``|---|`` line, then one line per row. A ``|`` inside a cell
    is escaped (``\\|``) so that it cannot split the cell."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])
