"""``runas task list|start|status|output|history``: run a pack's tasks on demand.

A run uses the task's predefined Run As account unless ``--user`` is given; then the password
for that user comes from a hidden prompt (on a terminal) or standard input
(``--password-stdin``) — never from a flag, which the process list and the shell history would
keep. The management server seals it to the agents that run the task and never stores it."""

from __future__ import annotations

import getpass
import sys
import time
from datetime import datetime
from typing import Annotated

import typer
from pydantic import SecretStr

from runas.backend import Backend
from runas.cli import output
from runas.cli.secrets import stdin_text
from runas.cli.state import backend
from runas.errors import InvalidInput
from runas.services.tasks import (
    SuppliedCredentials,
    TaskRunView,
    TaskStart,
    TaskTargetView,
    TaskView,
)

app = typer.Typer(help="Tasks: run a pack's tasks on objects or groups, on demand.")

#: how often ``--wait`` asks the server how the run is going (seconds)
POLL_INTERVAL = 0.5
#: statuses a target does not leave
FINAL = frozenset({"succeeded", "failed", "timed-out", "refused"})

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
MgOpt = Annotated[
    str | None,
    typer.Option(
        "--mg",
        help="A connected management group (runas mg list) that owns the target; this group's "
        "roles and Tasks Execution setting apply.",
        show_default=False,
    ),
]
# Passwords are never flag values. This hidden option exists to say so clearly.
RefusedOpt = Annotated[str | None, typer.Option("--password", hidden=True)]


def _refuse_password_flag(value: str | None) -> None:
    if value is not None:
        raise InvalidInput(
            "--password is not accepted: passwords never go on the command line (process "
            "lists, shell history); give --user and type the password at the prompt, or use "
            "--password-stdin"
        )


def _overrides(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidInput(f"--override takes NAME=VALUE (got {item!r})")
        if name in out:
            raise InvalidInput(f"parameter {name!r} overridden twice")
        out[name] = value
    return out


def _split_user(user: str, domain: str | None) -> tuple[str, str | None]:
    """``DOMAIN\\user`` is how people type a Windows identity; ``--domain`` says it too."""
    head, sep, tail = user.partition("\\")
    if sep:
        if domain is not None:
            raise InvalidInput("give the domain once: DOMAIN\\user or --domain, not both")
        if not head or not tail:
            raise InvalidInput(f"--user {user!r} is not DOMAIN\\user")
        return tail, head
    return user, domain


def _credentials(
    user: str | None, domain: str | None, password_stdin: bool
) -> SuppliedCredentials | None:
    if user is None:
        if password_stdin:
            raise InvalidInput("--password-stdin is for the password of --user USER; name the user")
        if domain is not None:
            raise InvalidInput("--domain goes with --user USER")
        return None
    name, dom = _split_user(user.strip(), domain)
    if not name:
        raise InvalidInput("--user is empty")
    shown = f"{dom}\\{name}" if dom else name
    if password_stdin:
        text = stdin_text()
    elif sys.stdin.isatty():
        text = getpass.getpass(f"Password for {shown}: ")
    else:
        raise InvalidInput(
            f"no password for {shown}: type it at the prompt (on a terminal) or use "
            "--password-stdin"
        )
    if not text:
        raise InvalidInput("the password is empty")
    return SuppliedCredentials(user=name, domain=dom, password=SecretStr(text))


def _params(view: TaskView) -> str:
    # name=default, with * on those a run may override
    return ", ".join(f"{p.name}={p.default}{'*' if p.overridable else ''}" for p in view.parameters)


def _when(moment: datetime | None) -> str | None:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment is not None else None


def _credential_text(run: TaskRunView) -> str:
    if run.credential_mode == "supplied":
        return f"supplied ({run.supplied_user})"
    return run.credential_mode


def _target_line(t: TaskTargetView) -> str:
    parts = [f"{t.object} ({t.computer}): {t.status}"]
    if t.state:
        parts.append(f"[{t.state}]")
    if t.message:
        parts.append(t.message)
    return " ".join(parts)


@app.command("list")
def list_(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Only the tasks that can run on this object."),
    ] = None,
    mg: MgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the tasks packs declare (parameters marked * may be overridden at run time)."""
    be = backend(ctx)
    rows = be.task_list(target) if mg is None else be.mg_task_list(mg, target)
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Task", "Target class", "Profile", "Probe", "Timeout", "Parameters"],
        (
            (t.id, t.target_class, t.profile, t.probe_type, f"{t.timeout_seconds}s", _params(t))
            for t in rows
        ),
    )


@app.command("start")
def start(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="The task's id (runas task list).")],
    target: Annotated[
        list[str],
        typer.Option(
            "--target",
            help="An object's full name, or a group id (runs on its members). Repeatable.",
            show_default=False,
        ),
    ],
    override: Annotated[
        list[str] | None,
        typer.Option("--override", metavar="NAME=VALUE", help="Override a parameter."),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="Run with these credentials instead of the predefined Run As account "
            "(USER or DOMAIN\\USER); the password is prompted or read with --password-stdin.",
            show_default=False,
        ),
    ] = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="The domain of --user.", show_default=False)
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password of --user from standard input."),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the run until every target is done; exit 1 unless all succeeded.",
        ),
    ] = False,
    mg: MgOpt = None,
    as_json: JsonOpt = False,
    password: RefusedOpt = None,
) -> None:
    """Start a task run on objects or groups; prints the task run id."""
    _refuse_password_flag(password)
    overrides = _overrides(override or [])
    credentials = _credentials(user, domain, password_stdin)
    req = TaskStart(task=task, targets=target, overrides=overrides, credentials=credentials)
    be = backend(ctx)
    # A run forwarded to a connected group keeps a row here too: status and --wait follow it
    # through this group like any other run.
    run = be.task_start(req) if mg is None else be.mg_task_start(mg, req)
    if not wait:
        if as_json:
            output.emit_json(run)
            return
        output.line(run.id)
        for t in run.targets:
            if t.status in FINAL:  # refused at once: say why now, not only in status
                output.line(_target_line(t))
        return
    run = _follow(be, run, show=not as_json, mg=mg)
    if as_json:
        output.emit_json(run)
    failed = [t for t in run.targets if t.status != "succeeded"]
    if failed:
        output.error(
            f"task run {run.id}: {len(failed)} of {len(run.targets)} target(s) did not succeed"
        )
        raise typer.Exit(1)


def _follow(be: Backend, run: TaskRunView, *, show: bool, mg: str | None = None) -> TaskRunView:
    """Poll the run every POLL_INTERVAL and print each target's status changes until every
    target's status is final."""
    if show:
        output.line(f"task run {run.id}")
    seen: dict[int, tuple[str, str | None]] = {}
    while True:
        for t in run.targets:
            now = (t.status, t.state)
            if seen.get(t.id) != now:
                seen[t.id] = now
                if show:
                    output.line(_target_line(t))
        if all(t.status in FINAL for t in run.targets):
            return run
        time.sleep(POLL_INTERVAL)
        # a forwarded run's targets live in the connected group: ask it through this one
        run = _fetch(be, run.id, mg)


def _fetch(be: Backend, run_id: str, mg: str | None, *, with_output: bool = False) -> TaskRunView:
    """A run of this group, or a forwarded run's view, asked of its connected group."""
    if mg is not None:
        return be.mg_task_show(mg, run_id, with_output)
    return be.task_output(run_id) if with_output else be.task_status(run_id)


@app.command("status")
def status(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The task run id.")],
    mg: MgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a task run and the status of each of its targets."""
    be = backend(ctx)
    run = _fetch(be, run_id, mg)
    if as_json:
        output.emit_json(run)
        return
    _render(run)


def _render(run: TaskRunView) -> None:
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(run.overrides.items()))
    output.fields(
        [
            ("Run", run.id),
            ("Task", run.task),
            ("Status", run.status),
            ("Requested", f"{_when(run.requested_at)} by {run.requested_by}"),
            ("Management group", run.management_group),
            ("Credentials", _credential_text(run)),
            ("Overrides", overrides),
        ]
    )
    output.line()
    output.table(
        ["Object", "Computer", "Status", "State", "Account", "Exit", "Finished", "Message"],
        (
            (
                t.object,
                t.computer,
                t.status,
                t.state,
                t.account,
                t.exit_code,
                _when(t.finished_at),
                t.message,
            )
            for t in run.targets
        ),
    )


@app.command("output")
def output_(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The task run id.")],
    mg: MgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what each target's task printed (scrubbed of the credentials it used)."""
    be = backend(ctx)
    run = _fetch(be, run_id, mg, with_output=True)
    if as_json:
        output.emit_json(run)
        return
    for n, t in enumerate(run.targets):
        if n:
            output.line()
        code = f", exit {t.exit_code}" if t.exit_code is not None else ""
        output.line(f"== {t.object} ({t.computer}): {t.status}{code}")
        text = t.output or ""
        if text:
            output.line(text.rstrip("\n"))
        elif t.message:
            output.line(f"(no output: {t.message})")
        else:
            output.line("(no output)")


@app.command("history")
def history(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many runs.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The latest task runs (yours; administrators see everyone's), newest first."""
    rows = backend(ctx).task_history(limit)
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Run", "Task", "Requested", "By", "Credentials", "Targets", "Status"],
        (
            (
                r.id,
                r.task,
                _when(r.requested_at),
                r.requested_by,
                _credential_text(r),
                len(r.targets),
                r.status,
            )
            for r in rows
        ),
    )
