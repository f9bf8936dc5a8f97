"""Printing: JSON for machines (``--json``), plain aligned text for people.

Human output goes through Rich without colour when stdout is not a terminal, so piping and
tests see plain text. Nothing printed here ever holds a secret: views carry none.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table


def console() -> Console:
    # Not a terminal: no colour and no wrapping at 80 columns, so scripts and logs get
    # whole lines.
    width = None if sys.stdout.isatty() else 400
    return Console(highlight=False, soft_wrap=True, emoji=False, width=width)


def emit_json(data: BaseModel | Sequence[BaseModel] | dict[str, Any] | list[Any]) -> None:
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(mode="json")
    elif isinstance(data, list | tuple):
        payload = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    else:
        payload = data
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    t = Table(title=title, show_edge=False, box=None, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    count = 0
    for r in rows:
        t.add_row(*("-" if v is None or v == "" else str(v) for v in r))
        count += 1
    out = console()
    if count == 0:
        out.print("(none)")
    else:
        out.print(t)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    c = console()
    for key, value in pairs:
        shown = "-" if value is None or value == "" or value == [] else value
        if isinstance(shown, list):
            shown = ", ".join(str(v) for v in shown)
        c.print(f"{key.ljust(width)}  {shown}", markup=False)


def line(text: str = "") -> None:
    console().print(text, markup=False)


def error(text: str) -> None:
    sys.stderr.write(f"runas: error: {text}\n")
