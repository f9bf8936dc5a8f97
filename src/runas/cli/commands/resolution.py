"""``runas explain`` and ``runas config show``."""

from __future__ import annotations

from typing import Annotated

import typer

from runas.cli import output
from runas.cli.state import backend
from runas.services.explain import ComputerConfigView, ExplainView

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

config = typer.Typer(help="What a computer's agent will receive.")

_VERDICT = {
    "account": "RUNS AS",
    "action-account": "RUNS AS",
    "conflict": "DOES NOT RUN (conflict)",
    "unresolved": "DOES NOT RUN (no account, no fallback)",
    "not-distributed": "DOES NOT RUN (credentials not found)",
}


def render_explain(v: ExplainView) -> None:
    for step in v.steps:
        output.line(step)
    if v.outcome in ("account", "action-account"):
        who = (
            f"{v.account.name} ({v.account.type}, {v.account.identity}, secret version "
            f"{v.account.secret_version})"
            if v.account
            else "the agent's own identity"
        )
        if v.outcome == "action-account":
            who = f"default action account: {who}"
        output.line(f"=> {_VERDICT[v.outcome]} {who} on {v.computer}")
    else:
        output.line(f"=> {_VERDICT[v.outcome]} on {v.computer}")


def explain(
    ctx: typer.Context,
    obj: Annotated[str, typer.Option("--object", "-o", help="Object full name or id.")],
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    profile: Annotated[str | None, typer.Option("--profile", "-p")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Which identity a workflow (or profile) uses for an object, and why, step by step."""
    v = backend(ctx).explain(obj, workflow, profile)
    if as_json:
        output.emit_json(v)
    else:
        render_explain(v)


def render_config(v: ComputerConfigView) -> None:
    output.line(f"Computer {v.computer} (configuration epoch {v.epoch})")
    output.line()
    output.table(
        ["Workflow", "Kind", "Object", "Runs as", "Version"],
        (
            (
                e.workflow,
                e.kind,
                e.object,
                e.detail if e.runs else f"NOT RUN: {e.detail}",
                e.secret_version if e.runs and e.account else None,
            )
            for e in v.entries
        ),
        title=None,
    )
    output.line()
    output.line("Accounts distributed to this computer (secret sent only when used):")
    output.table(
        ["Account", "Type", "Version", "Distribution", "Secret sent"],
        (
            (a.name, a.type, a.secret_version, a.distribution, "yes" if a.receives_secret else "no")
            for a in v.accounts
        ),
    )
    if v.problems:
        output.line()
        output.line(f"{len(v.problems)} workflow run(s) will not happen:")
        for p in v.problems:
            output.line(f"  {p.workflow} for {p.object}: {p.detail}")


@config.command("show")
def config_show(ctx: typer.Context, computer: str, as_json: JsonOpt = False) -> None:
    """Show what a computer's agent will receive: workflows per object with the resolved
    account and secret version (never the secret), its accounts, and what cannot run."""
    v = backend(ctx).config_show(computer)
    if as_json:
        output.emit_json(v)
    else:
        render_config(v)
