"""``runas audit list`` and ``runas audit verify``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from runas.cli import output
from runas.cli.state import backend
from runas.errors import InvalidInput
from runas.services.audit import AuditTrailBroken

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

app = typer.Typer(help="The tamper-evident audit trail: list and verify.")

_DURATION = re.compile(r"^(\d{1,9})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime) -> datetime:
    """``7d``/``1h``/``30m`` (that long before ``now``) or an ISO date or date-time (UTC
    unless it names its offset)."""
    text = value.strip()
    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"--since {value!r} is neither a date (2024-05-01, 2024-05-01T12:00) nor a "
            "duration (30m, 1h, 7d, 2w)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _details(details: dict[str, object]) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@app.command("list")
def audit_list(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option("--since", help="From this date/time (UTC) or this long ago (1h, 7d)."),
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor.")] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="Only actions starting with this (account, pack:import)."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Only this target (a profile also finds its associations)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100_000, help="At most this many (the newest).")
    ] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """List audit records, oldest first (the newest LIMIT that match)."""
    when = parse_since(since, datetime.now(UTC)) if since is not None else None
    rows = backend(ctx).audit_list(when, actor, action, target, limit)
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Seq", "At (UTC)", "Actor", "Source", "Action", "Target", "Outcome", "Details"],
        (
            (
                r.seq,
                f"{r.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
                r.actor,
                r.source,
                r.action,
                r.target,
                r.outcome,
                _details(r.details) if r.details else "",
            )
            for r in rows
        ),
    )


@app.command("verify")
def audit_verify(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Check the hash chain: exit 0 if intact, else 1 naming the first broken record."""
    result = backend(ctx).audit_verify()
    if as_json:
        output.emit_json(result)
    if not result.ok:
        assert result.first_broken is not None
        raise AuditTrailBroken(result.first_broken, result.reason)
    if not as_json:
        output.line(f"audit trail intact: {result.records} record(s)")
        if result.head_hash:
            output.line(f"head {result.head_hash}")
