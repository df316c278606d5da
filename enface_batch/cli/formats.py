"""`--format json|csv|table` for the commands an analyst reads: JSON for scripts, CSV for a spreadsheet, a rich
table for a terminal. CSV and tables are flat: one row per item, lists joined with "|"."""

from __future__ import annotations

import csv
import sys
from enum import StrEnum
from typing import Annotated

import typer


class Format(StrEnum):
    json = "json"
    csv = "csv"
    table = "table"


FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="json (default), csv, or a table for a terminal")]


def _cell(value: object, *, short_times: bool = False) -> str:
    if value is None:
        return ""
    if short_times and isinstance(value, str) and len(value) > 19 and value[10:11] == "T" and value.endswith("Z"):
        return value[:19].replace("T", " ")  # a table shows UTC to the second
    if isinstance(value, list | tuple):
        return "|".join(str(v) for v in value)
    return str(value)


def emit_rows(rows: list[dict], columns: list[str], fmt: Format, *, title: str | None = None) -> None:
    """Print rows as CSV (a header, then one line per row) or as a rich table on stdout."""
    if fmt is Format.csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        out.writerows([_cell(r.get(c)) for c in columns] for r in rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        numeric = bool(rows) and all(isinstance(r.get(c), int | float) for r in rows if r.get(c) is not None)
        table.add_column(c, justify="right" if numeric else "left", overflow="fold")
    for r in rows:
        table.add_row(*(_cell(r.get(c), short_times=True) for c in columns))
    # piped, rich would fold the table to 80 columns and break every id in two
    Console(width=None if sys.stdout.isatty() else 250).print(table)
