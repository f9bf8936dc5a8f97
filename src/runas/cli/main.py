"""The ``runas`` command: assembles the command groups and maps every error once.

Exit codes: 0 success, 1 error (one line on stderr naming the problem), 2 usage error.
No stack trace reaches the user: unexpected failures print one line and the traceback goes
to the log file.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from runas import __version__, logs
from runas.cli import output
from runas.cli.commands import accounts, admin, content, login, profiles, resolution, users
from runas.cli.commands import agents as agent_commands
from runas.cli.commands import audit as audit_commands
from runas.cli.commands import connected as connected_commands
from runas.cli.commands import monitoring as monitoring_commands
from runas.cli.commands import server as server_command
from runas.cli.commands import settings as settings_commands
from runas.cli.commands import ssh_hosts as ssh_host_commands
from runas.cli.commands import tasks as task_commands
from runas.cli.state import CliState, state
from runas.errors import RunAsError


def _version(value: bool) -> None:
    if value:
        output.line(f"runas {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="runas",
        help="Run As accounts and profiles: which identity runs each workflow, on which computer.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        data_dir: Annotated[
            Path | None,
            typer.Option(
                "--data-dir",
                envvar="RUNAS_DATA_DIR",
                help="Data directory (database, keyring, log). Default ./runas-data.",
            ),
        ] = None,
        server: Annotated[
            str | None,
            typer.Option(
                "--server",
                envvar="RUNAS_SERVER",
                help="Talk to this management server (https://host:port) instead of the local "
                "data directory. Token: RUNAS_TOKEN or 'runas login'.",
                show_default=False,
            ),
        ] = None,
        ca_file: Annotated[
            Path | None,
            typer.Option(
                "--ca-file",
                envvar="RUNAS_CA_FILE",
                help="CA certificate that signed the server's TLS certificate.",
                show_default=False,
            ),
        ] = None,
        version: Annotated[
            bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
        ] = False,
    ) -> None:
        cli_state = state(ctx)
        cli_state.data_dir = data_dir
        cli_state.server = server
        cli_state.ca_file = ca_file

    app.command("init")(admin.init)
    app.add_typer(admin.db, name="db")
    app.add_typer(admin.keys, name="key")
    app.add_typer(accounts.app, name="account")
    app.add_typer(profiles.distribution, name="distribution")
    app.add_typer(content.packs, name="pack")
    app.add_typer(content.discovery, name="discovery")
    app.add_typer(content.objects, name="object")
    app.add_typer(content.groups, name="group")
    app.add_typer(profiles.profiles, name="profile")
    app.command("explain")(resolution.explain)
    app.add_typer(resolution.config, name="config")
    app.add_typer(users.users, name="user")
    app.add_typer(users.roles, name="role")
    app.add_typer(users.tokens, name="token")
    app.add_typer(audit_commands.app, name="audit")
    # monitoring: reported state, alerts, Run As health
    app.add_typer(monitoring_commands.state, name="state")
    app.add_typer(monitoring_commands.alerts, name="alert")
    app.add_typer(monitoring_commands.health, name="health")
    app.command("login")(login.login)
    app.command("logout")(login.logout)
    app.command("server")(server_command.server)
    # agents: enrolment, approval, tokens, the agent CA; and 'runas agent run'
    app.add_typer(agent_commands.app, name="agent")
    # SSH host keys the management group trusts (the ssh probe verifies against them only)
    app.add_typer(ssh_host_commands.app, name="ssh-host")
    # connected management groups: their alerts and tasks, one tier
    app.add_typer(connected_commands.app, name="mg")
    # tasks on demand, and the management group's settings (Tasks Execution)
    app.add_typer(task_commands.app, name="task")
    app.add_typer(settings_commands.app, name="settings")
    return app


def _validation_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{loc}: {first['msg']}" if loc else str(first["msg"])


#: the root's options that take a value as the next word (``--server URL``)
_ROOT_OPTIONS_WITH_VALUE = frozenset({"--data-dir", "--server", "--ca-file"})


def _verb(args: list[str]) -> str:
    """The command's name for the log ("account show"): its first two words once the root's
    own options are skipped. Never more: later words may be anything the user typed."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        if rest.pop(0) in _ROOT_OPTIONS_WITH_VALUE and rest:
            rest.pop(0)
    return " ".join(a for a in rest[:2] if not a.startswith("-"))


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this in-process).

    Typer handles usage errors itself (exit 2, with the usage line); every RunAsError and
    validation error raised by a command becomes one line on stderr and exit code 1.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    app = build_app()
    cli_state = CliState()
    started = time.monotonic()
    verb = _verb(args)
    code = 0
    try:
        app(args=args, prog_name="runas", obj=cli_state, standalone_mode=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except RunAsError as e:
        output.error(str(e))
        logs.event("command failed", command=verb, error=e.code, message=str(e))
        code = 1
    except DBAPIError as e:
        # Only the driver's first line: SQLAlchemy's own text carries statement parameters.
        reason = str(e.orig).strip().splitlines()[0] if e.orig is not None else type(e).__name__
        output.error(f"database error: {reason}")
        logs.event("command failed", command=verb, error="database-error", message=reason)
        code = 1
    except ValidationError as e:
        output.error(_validation_line(e))
        logs.event("command failed", command=verb, error="invalid-input")
        code = 1
    except KeyboardInterrupt:
        output.error("interrupted")
        code = 130
    except Exception as e:  # the last line of defence: no stack trace for the user
        output.error(f"internal error ({type(e).__name__}); details are in the log")
        logging.getLogger(logs.LOGGER).error(
            "internal error", exc_info=True, extra={"fields": {"command": verb}}
        )
        code = 1
    finally:
        if code == 0:
            logs.event(
                "command", command=verb, outcome="ok", ms=round((time.monotonic() - started) * 1000)
            )
        cli_state.close()
    return code


def main() -> None:
    sys.exit(run())
