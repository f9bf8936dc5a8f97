"""``runas agent …``: enrolment requests and their approval, one-time enrolment tokens, the
agent CA's certificate — and ``runas agent run``, the agent itself (``runas.agent.cli``).

A new enrolment token is printed once, alone on standard output (so
``runas agent token create a.contoso.com > token`` works), with the note about it on standard
error. The CA certificate is printed as PEM, ready for an agent's ``ca_file``.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from runas.cli import output
from runas.cli.state import backend
from runas.errors import InvalidInput
from runas.services.agents import (
    MAX_TOKEN_LIFETIME,
    MIN_TOKEN_LIFETIME,
    AgentView,
    EnrolmentTokenCreate,
)

app = typer.Typer(
    help="Agents: approve enrolment requests, hand out enrolment tokens, show the agent CA; "
    "'runas agent run' runs the agent on this computer.",
    no_args_is_help=True,
)
token = typer.Typer(help="One-time enrolment tokens: an agent that presents one is approved.")
app.add_typer(token, name="token")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AgentIdArg = Annotated[str, typer.Argument(metavar="ID", help="Agent id (its computer's name).")]

_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_lifetime(value: str) -> int:
    """Seconds from ``90``, ``30m``, ``1h``, ``7d`` (between 1 minute and 7 days)."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None:
        raise InvalidInput(f"--expires {value!r} is not a duration (such as 30m, 1h or 2d)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not MIN_TOKEN_LIFETIME.total_seconds() <= seconds <= MAX_TOKEN_LIFETIME.total_seconds():
        raise InvalidInput("--expires must be between 1m and 7d")
    return seconds


def _when(moment: datetime | None) -> str | None:
    return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else None


def _rows(rows: list[AgentView]) -> None:
    output.table(
        ["Id", "Status", "Enrolled", "From", "Decided", "Last seen", "Certificate ends", "Version"],
        (
            (
                a.id + (" (management server)" if a.management_server else ""),
                a.status,
                _when(a.enrolled_at),
                a.enrolled_from,
                f"{_when(a.decided_at)} by {a.decided_by}" if a.decided_at else None,
                f"{_when(a.last_seen_at)} from {a.last_seen_from}" if a.last_seen_at else None,
                _when(a.cert_not_after),
                a.agent_version,
            )
            for a in rows
        ),
    )


def render_agent(view: AgentView) -> None:
    output.fields(
        [
            ("Id", view.id),
            ("Status", view.status),
            ("Management server", "yes" if view.management_server else "no"),
            ("Agent version", view.agent_version),
            ("Enrolled", f"{_when(view.enrolled_at)} from {view.enrolled_from or '-'}"),
            (
                "Decided",
                f"{_when(view.decided_at)} by {view.decided_by}" if view.decided_at else None,
            ),
            (
                "Last seen",
                f"{_when(view.last_seen_at)} from {view.last_seen_from} (epoch {view.last_epoch})"
                if view.last_seen_at
                else None,
            ),
            ("Certificate ends", _when(view.cert_not_after)),
            ("TLS key SHA-256", view.key_fingerprint),
        ]
    )


@app.command("list")
def agent_list(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only agents in this state: pending, approved, rejected."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List agents and their state (never their keys)."""
    rows = backend(ctx).agent_list(status)
    if as_json:
        output.emit_json(rows)
    else:
        _rows(rows)


@app.command("pending")
def agent_pending(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Enrolment requests waiting for a decision ('runas agent approve|reject ID')."""
    rows = backend(ctx).agent_list("pending")
    if as_json:
        output.emit_json(rows)
        return
    _rows(rows)
    if rows:
        sys.stderr.write(
            "compare each TLS key fingerprint ('runas agent show ID') with the computer's "
            "before approving: 'runas agent approve ID'\n"
        )


@app.command("show")
def agent_show(ctx: typer.Context, agent_id: AgentIdArg, as_json: JsonOpt = False) -> None:
    """Show one agent."""
    view = backend(ctx).agent_show(agent_id)
    if as_json:
        output.emit_json(view)
    else:
        render_agent(view)


@app.command("approve")
def agent_approve(ctx: typer.Context, agent_id: AgentIdArg, as_json: JsonOpt = False) -> None:
    """Approve an agent: the management group issues its client certificate."""
    view = backend(ctx).agent_approve(agent_id)
    if as_json:
        output.emit_json(view)
        return
    output.line(
        f"approved agent {view.id!r}; its certificate ends {_when(view.cert_not_after)} UTC"
    )


@app.command("reject")
def agent_reject(ctx: typer.Context, agent_id: AgentIdArg, as_json: JsonOpt = False) -> None:
    """Reject an enrolment request, or stop an approved agent: its certificate is refused."""
    view = backend(ctx).agent_reject(agent_id)
    if as_json:
        output.emit_json(view)
        return
    output.line(f"rejected agent {view.id!r}: it receives no configuration and no secrets")


@app.command("remove")
def agent_remove(ctx: typer.Context, agent_id: AgentIdArg) -> None:
    """Remove an agent: its certificate is refused from now on; the computer may enrol again."""
    removed = backend(ctx).agent_remove(agent_id)
    output.line(
        f"removed agent {removed!r}: its certificate is refused from now on "
        "(the computer may enrol again, with new keys)"
    )


@app.command("ca")
def agent_ca(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print the agent CA certificate (PEM) for each agent's ca_file (made on first use)."""
    view = backend(ctx).agent_ca()
    if as_json:
        output.emit_json(view)
        return
    sys.stdout.write(
        view.certificate if view.certificate.endswith("\n") else view.certificate + "\n"
    )
    sys.stderr.write(f"{view.subject}, SHA-256 {view.sha256}, ends {_when(view.not_after)} UTC\n")


@token.command("create")
def token_create(
    ctx: typer.Context,
    computer: Annotated[str, typer.Argument(help="The computer (agent id) it may enrol.")],
    expires: Annotated[
        str, typer.Option("--expires", help="Lifetime: 1m to 7d (30m, 1h, 2d).")
    ] = "1h",
    as_json: JsonOpt = False,
) -> None:
    """A one-time enrolment token for one computer. It is printed once: store it now."""
    req = EnrolmentTokenCreate(computer=computer, expires_in=parse_lifetime(expires))
    made = backend(ctx).agent_token_create(req)
    if as_json:
        output.emit_json(made)
        return
    sys.stdout.write(made.token + "\n")
    sys.stderr.write(
        f"created a one-time enrolment token for {made.computer!r}, valid until "
        f"{_when(made.expires_at)} UTC; it is not shown again. On that computer, write it to a "
        "file only the agent can read (mode 0600) and name the file in agent.toml: "
        'enrolment_token_file = "/path/to/token"\n'
    )


# ``runas agent run``: the agent itself. Imported when run, so that the administration
# commands do not pay for loading the agent.
@app.command("run")
def agent_run(
    config: Annotated[
        Path | None, typer.Option("--config", help="agent.toml (see docs/agents.md)")
    ] = None,
) -> None:
    """Enrol, then run the workflows the management group gives this computer."""
    from runas.agent.cli import run_command_line

    raise typer.Exit(run_command_line(config))
