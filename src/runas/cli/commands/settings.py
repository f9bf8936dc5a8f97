"""``runas settings get|set``: settings of the management group (administrators change them).

One setting so far, ``tasks-execution``: when it is disabled, everyone but administrators
must supply credentials to run a task (``runas task start … --user USER``). It is the setting
of the management group where the CLI session runs that applies, whatever group owns the
task's target."""

from __future__ import annotations

from typing import Annotated

import typer

from runas.cli import output
from runas.cli.state import backend
from runas.errors import InvalidInput

app = typer.Typer(help="Settings of the management group.")

TASKS_EXECUTION = "tasks-execution"
KNOWN = (TASKS_EXECUTION,)
_WORDS = {"enabled": True, "disabled": False}


def _known(name: str) -> str:
    if name not in KNOWN:
        raise InvalidInput(f"unknown setting {name!r} (settings: {', '.join(KNOWN)})")
    return name


def _word(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


@app.command("get")
def get(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The setting: tasks-execution.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a setting."""
    _known(name)
    enabled = backend(ctx).tasks_execution_get()
    if as_json:
        output.emit_json({"tasks_execution": _word(enabled)})
    else:
        output.line(f"{TASKS_EXECUTION}: {_word(enabled)}")


@app.command("set")
def set_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The setting: tasks-execution.")],
    value: Annotated[str, typer.Argument(help="enabled or disabled.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Change a setting (administrators)."""
    _known(name)
    wanted = _WORDS.get(value.strip().lower())
    if wanted is None:
        raise InvalidInput(f"{name} is enabled or disabled, not {value!r}")
    enabled = backend(ctx).tasks_execution_set(wanted)
    if as_json:
        output.emit_json({"tasks_execution": _word(enabled)})
        return
    output.line(f"{TASKS_EXECUTION}: {_word(enabled)}")
    if not enabled:
        output.line(
            "everyone but administrators must now supply credentials to run tasks "
            "(runas task start … --user USER)"
        )
