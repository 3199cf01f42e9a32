"""Tables for people: the CLI's read commands print through here.

On a terminal a table fits its width: columns that do not fit are left out
(the least important first) and named under the table, instead of every
header being squeezed to one letter. Piped into a file or another program,
every column is printed in full, plain aligned text without colour or box
lines, so ``grep`` and ``awk`` see whole values. ``--json`` is for machines.
"""

from __future__ import annotations

import math
import shutil
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

# A cell longer than this is cut with an ellipsis on a terminal (never a header).
MAX_CELL = 40
# Two spaces between columns.
GAP = 2

STATUS_COLOURS = {
    "succeeded": "green",
    "warned": "yellow",
    "running": "cyan",
    "skipped": "cyan",
}


def format_value(value: Any) -> str:
    """A cell: floats to 4 significant digits, whole floats as integers, missing blank."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(item) for item in value)
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, str) and pd.isna(value)):
            return ""
    except (TypeError, ValueError):  # arrays and other values pd.isna cannot judge
        pass
    return str(value)


@dataclass
class Fitted:
    columns: list[str]
    left_out: list[str]


def fit(widths: Mapping[str, int], width: int, priorities: Mapping[str, int]) -> Fitted:
    """Which columns fit in ``width`` characters: the most important (lowest
    priority number, then the leftmost) are taken first; their order is kept."""
    order = list(widths)
    kept: list[str] = []
    used = -GAP
    # The most important first; each column that still fits is taken, so a wide
    # column left out does not take narrower, less important ones with it.
    for column in sorted(order, key=lambda name: (priorities.get(name, 0), order.index(name))):
        if not kept or used + GAP + widths[column] <= width:
            kept.append(column)
            used += GAP + widths[column]
    kept.sort(key=order.index)
    return Fitted(kept, [column for column in order if column not in kept])


def terminal_width() -> int | None:
    """The terminal's width, or None when stdout is not a terminal (piped)."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((80, 24)).columns


def show(
    frame: Any,
    title: str,
    *,
    priorities: Mapping[str, int] | None = None,
    width: int | None = None,
) -> None:
    """Print a DataFrame as a table: fitted to the terminal, or whole when piped.

    ``priorities`` ranks columns (0 = always shown, higher = left out sooner);
    unnamed columns get 0, so a plain frame loses its rightmost columns first.
    """
    width = width if width is not None else terminal_width()
    headers = [str(column) for column in frame.columns]
    cells = [[format_value(value) for value in row] for row in frame.itertuples(index=False)]
    if width is not None:
        cells = [[_cut(cell) for cell in row] for row in cells]
    widths = {
        header: max([len(header), *(len(row[index]) for row in cells)])
        for index, header in enumerate(headers)
    }
    priorities = dict(priorities or {})
    if width is None:
        _plain(title, headers, cells, widths)
        return
    fitted = fit(widths, width, priorities)
    _terminal(title, headers, cells, widths, fitted.columns, width)
    if fitted.left_out:
        note = (
            f"not shown at {width} columns: {', '.join(fitted.left_out)} "
            "(a wider terminal, a pipe or --json shows them)"
        )
        click.echo(textwrap.fill(note, width=width, break_on_hyphens=False))


def _cut(cell: str) -> str:
    cell = cell.replace("\n", " ")
    return cell if len(cell) <= MAX_CELL else cell[: MAX_CELL - 1] + "…"


def _plain(title: str, headers: list[str], cells: list[list[str]], widths: dict[str, int]) -> None:
    click.echo(title)

    def line(values: list[str]) -> str:
        pairs = zip(headers, values, strict=True)
        padded = (value.ljust(widths[header]) for header, value in pairs)
        return (" " * GAP).join(padded).rstrip()

    click.echo(line(headers))
    for row in cells:
        click.echo(line(row))


def _terminal(
    title: str,
    headers: list[str],
    cells: list[list[str]],
    widths: dict[str, int],
    shown: list[str],
    width: int,
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    click.echo(title)
    table = Table(
        box=None,
        pad_edge=False,
        padding=(0, GAP // 2),
        header_style="bold",
    )
    indexes = [headers.index(column) for column in shown]
    for column in shown:
        # A header never collapses: its column is at least as wide as its name.
        table.add_column(column, no_wrap=True, min_width=widths[column], overflow="ellipsis")
    for row in cells:
        values = []
        for index in indexes:
            value = row[index]
            colour = STATUS_COLOURS.get(value, "red") if headers[index] == "status" else None
            values.append(Text(value, style=colour or ""))
        table.add_row(*values)
    Console(width=width, highlight=False).print(table)
