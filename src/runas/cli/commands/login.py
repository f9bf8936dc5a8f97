"""``runas login`` and ``runas logout``: obtain a session token from a management server and
keep it in the credentials file, or forget (and revoke) it."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from runas.cli import output
from runas.cli.secrets import stdin_text
from runas.cli.state import state
from runas.errors import ConfigurationError, InvalidInput

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Server URL (default: the global --server or RUNAS_SERVER).",
        show_default=False,
    ),
]


def _server(ctx: typer.Context, server: str | None) -> tuple[str, bool | Path]:
    from runas.client.remote import ca_verify, server_url

    cli_state = state(ctx)
    url = server_url(server or cli_state.server)
    if url is None:
        raise ConfigurationError("name the server: runas login --server URL (or RUNAS_SERVER)")
    return url, ca_verify(cli_state.ca_file)


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return ""


def _password(from_stdin: bool) -> SecretStr:
    if from_stdin:
        text = stdin_text()
    elif sys.stdin.isatty():
        text = typer.prompt("Password", hide_input=True)
    else:
        raise InvalidInput("no password: use --password-stdin or run on a terminal")
    if not text:
        raise InvalidInput("the password is empty")
    return SecretStr(text)


def login(
    ctx: typer.Context,
    server: ServerOpt = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user", "-u", help="User name (default: your login name).", show_default=False
        ),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Log in to a management server and keep the session token for later commands."""
    from runas.client.remote import login as do_login
    from runas.client.remote import store

    url, verify = _server(ctx, server)
    name = user
    if name is None:
        default = _default_user()
        if sys.stdin.isatty() and not password_stdin:
            name = typer.prompt("User", default=default or None)
        else:
            name = default
    if not name:
        raise InvalidInput("name the user: runas login --user NAME")
    credentials = store()
    done = do_login(url, name, _password(password_stdin), verify=verify, credentials=credentials)
    until = f" until {done.expires_at:%Y-%m-%d %H:%M} UTC" if done.expires_at else ""
    output.line(f"logged in to {url} as {done.user}{until}")
    output.line(f"session token kept in {credentials.path} (mode 0600)")
    if os.environ.get("RUNAS_TOKEN"):
        output.line("note: RUNAS_TOKEN is set and takes precedence over this login")


def logout(ctx: typer.Context, server: ServerOpt = None) -> None:
    """Forget the session token kept for a server, and revoke it there."""
    from runas.client.remote import logout as do_logout
    from runas.client.remote import store

    url, verify = _server(ctx, server)
    gone = do_logout(url, verify=verify, credentials=store())
    if gone is None:
        output.line(f"not logged in to {url}: nothing to forget")
        return
    output.line(f"logged out of {url}: session token of {gone.user} revoked and forgotten")
