"""``runas state show``, ``runas alert list``, ``runas health show``: what agents reported and
what the management group made of it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from runas.cli import output
from runas.cli.state import backend
from runas.services.alerts import MAX_LIST

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

state = typer.Typer(help="The latest state agents reported for objects.")
alerts = typer.Typer(help="Alerts raised by the management group (Run As health, monitors).")
health = typer.Typer(help="Run As health of the accounts a computer uses.")


def _when(moment: datetime | None) -> str | None:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if moment is not None else None


def _perf(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(values.items()))


@state.command("show")
def state_show(
    ctx: typer.Context,
    obj: Annotated[str, typer.Argument(help="Object full name or id.")],
    as_json: JsonOpt = False,
) -> None:
    """The latest result of each workflow for an object, as its agent reported it."""
    v = backend(ctx).object_state(obj)
    if as_json:
        output.emit_json(v)
        return
    output.fields([("Object", v.object), ("Class", v.class_id), ("Computer", v.computer)])
    output.line()
    output.table(
        ["Workflow", "Kind", "State", "Ran at (UTC)", "Runs as", "Message", "Perf"],
        (
            (
                w.workflow,
                w.kind,
                w.state + (" (timed out)" if w.timed_out else ""),
                _when(w.ran_at),
                w.account or "default action account",
                w.message,
                _perf(w.perf),
            )
            for w in v.workflows
        ),
    )


@alerts.command("list")
def alert_list(
    ctx: typer.Context,
    include_closed: Annotated[
        bool, typer.Option("--all", help="Closed alerts too (default: open ones only).")
    ] = False,
    computer: Annotated[str | None, typer.Option(help="Alerts of this computer.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Alerts from this source (e.g. runas-health).")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_LIST, help="At most this many (the newest).")
    ] = 1000,
    connected: Annotated[
        bool,
        typer.Option(
            "--connected",
            help="Also the alerts of every connected management group (column Group).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List alerts, newest first."""
    if connected:
        _connected_alerts(ctx, include_closed, computer, source, limit, as_json)
        return
    rows = backend(ctx).alert_list(include_closed, computer, source, limit)
    if as_json:
        output.emit_json(rows)
        return
    columns = ["Id", "Severity", "State", "Computer", "Account", "Object", "Opened (UTC)"]
    if include_closed:
        columns.append("Closed (UTC)")
    columns.append("Message")
    output.table(
        columns,
        (
            (
                a.id,
                a.severity,
                a.state,
                a.computer,
                a.account,
                a.object,
                _when(a.opened_at),
                *((_when(a.closed_at) or "open",) if include_closed else ()),
                a.message,
            )
            for a in rows
        ),
    )


def _connected_alerts(
    ctx: typer.Context,
    include_closed: bool,
    computer: str | None,
    source: str | None,
    limit: int,
    as_json: bool,
) -> None:
    # A connected group that does not answer is a warning, not a failure: the others' alerts
    # are still worth showing.
    found = backend(ctx).alert_list_connected(include_closed, computer, source, limit)
    if as_json:
        output.emit_json(found)
        return
    columns = ["Group", "Id", "Severity", "State", "Computer", "Account", "Object"]
    columns += ["Opened (UTC)", *(["Closed (UTC)"] if include_closed else []), "Message"]
    output.table(
        columns,
        (
            (
                a.management_group,
                a.id,
                a.severity,
                a.state,
                a.computer,
                a.account,
                a.object,
                _when(a.opened_at),
                *((_when(a.closed_at) or "open",) if include_closed else ()),
                a.message,
            )
            for a in found.alerts
        ),
    )
    for u in found.unreachable:
        typer.echo(f"runas: warning: management group {u.management_group}: {u.error}", err=True)


@health.command("show")
def health_show(
    ctx: typer.Context,
    computer: Annotated[str, typer.Argument(help="Computer name.")],
    as_json: JsonOpt = False,
) -> None:
    """Run As health of each account on a computer, as of the last evaluation."""
    rows = backend(ctx).health_show(computer)
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Account", "State", "Severity", "Since (UTC)", "Last check", "Message"],
        (
            (
                h.account,
                h.state,
                h.severity,
                _when(h.since),
                (
                    f"{h.last_report} at {_when(h.last_report_at)}"
                    + (
                        f" (secret version {h.last_report_secret_version})"
                        if h.last_report_secret_version is not None
                        else ""
                    )
                    if h.last_report is not None
                    else None
                ),
                h.message,
            )
            for h in rows
        ),
    )
