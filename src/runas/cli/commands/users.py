"""``runas user …``, ``runas role …`` and ``runas token …``.

Passwords come from a hidden prompt or standard input (``--password-stdin``), never from a
flag value (process lists, shell history). A new token is printed once, alone on standard
output (so ``TOKEN=$(runas token create …)`` works), with the note about it on standard error.

In local mode (no ``--server``) these commands act on the database directly, as the local OS
user: that is how the first administrator is made on the server host.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from pydantic import SecretStr

from runas.cli import output
from runas.cli.secrets import decoded, without_final_newline
from runas.cli.state import backend
from runas.errors import InvalidInput
from runas.services.users import (
    PasswordChange,
    RoleAssign,
    RoleGrantView,
    TokenCreate,
    TokenView,
    UserCreate,
    UserView,
    role_list,
)

users = typer.Typer(help="Local users of the management group (they log in to the server).")
roles = typer.Typer(help="Roles and what they allow; a user's rights are the union of theirs.")
tokens = typer.Typer(help="API tokens: personal tokens for scripts, sessions from 'runas login'.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from standard input."),
]
# Passwords are never flag values. This hidden option exists to say so clearly.
RefusedOpt = Annotated[str | None, typer.Option("--password", hidden=True)]


def _refuse_password_flag(value: str | None) -> None:
    if value is not None:
        raise InvalidInput(
            "--password is not accepted: passwords never go on the command line (process "
            "lists, shell history); use the prompt or --password-stdin"
        )


def _stdin_lines(count: int) -> list[str]:
    text = decoded(sys.stdin.buffer.read(), "standard input")
    if count == 1:
        return [without_final_newline(text)]
    lines = text.split("\n")
    if len(lines) < count or not all(lines[:count]):
        raise InvalidInput(f"standard input must hold {count} lines: current, then new password")
    return lines[:count]


def _prompt(label: str, *, confirm: bool) -> str:
    value: str = typer.prompt(label, hide_input=True, confirmation_prompt=confirm)
    return value


def _passwords(from_stdin: bool, *, current: bool) -> tuple[SecretStr | None, SecretStr]:
    """(current password or None, new password) from standard input or the prompt."""
    if from_stdin:
        lines = _stdin_lines(2 if current else 1)
        old, new = (lines[0], lines[1]) if current else (None, lines[0])
    elif sys.stdin.isatty():
        old = _prompt("Current password", confirm=False) if current else None
        new = _prompt("New password", confirm=True)
    else:
        raise InvalidInput("no password given: type it at the prompt or use --password-stdin")
    if not new:
        raise InvalidInput("the password is empty")
    return (SecretStr(old) if old is not None else None), SecretStr(new)


def _when(moment: datetime | None) -> str | None:
    return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else None


def _grant(g: RoleGrantView) -> str:
    scopes = [f"group {x}" for x in g.scope_groups] + [f"task {x}" for x in g.scope_tasks]
    return f"{g.role} ({', '.join(scopes)})" if scopes else g.role


def render_user(view: UserView) -> None:
    output.fields(
        [
            ("Name", view.name),
            ("Display name", view.display_name),
            ("Roles", [_grant(g) for g in view.roles]),
            ("Disabled", "yes" if view.disabled else "no"),
            ("Created", f"{view.created_at:%Y-%m-%d %H:%M} by {view.created_by}"),
        ]
    )


# -- runas user ----------------------------------------------------------------------------


@users.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (lower case; letters, digits, ._@-).")],
    display_name: Annotated[str, typer.Option("--display-name", help="Full name.")] = "",
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-r", help="Role to give (repeatable); see 'runas role list'."),
    ] = None,
    password_stdin: PasswordStdinOpt = False,
    password: RefusedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user. The password comes by prompt or --password-stdin."""
    _refuse_password_flag(password)
    _, secret = _passwords(password_stdin, current=False)
    req = UserCreate(name=name, display_name=display_name, password=secret, roles=role or [])
    view = backend(ctx).user_add(req)
    if as_json:
        output.emit_json(view)
        return
    held = ", ".join(_grant(g) for g in view.roles) or "none yet (runas role assign)"
    output.line(f"created user {view.name!r} (roles: {held})")


@users.command("list")
def user_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List users and their roles."""
    rows = backend(ctx).user_list()
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Name", "Display name", "Roles", "Disabled", "Created"],
        (
            (
                u.name,
                u.display_name,
                ", ".join(_grant(g) for g in u.roles),
                "yes" if u.disabled else "",
                _when(u.created_at),
            )
            for u in rows
        ),
    )


@users.command("show")
def user_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show a user and their roles."""
    view = backend(ctx).user_show(name)
    if as_json:
        output.emit_json(view)
    else:
        render_user(view)


@users.command("remove")
def user_remove(ctx: typer.Context, name: str) -> None:
    """Remove a user and their tokens (refused for the last administrator)."""
    removed = backend(ctx).user_remove(name)
    output.line(f"removed user {removed!r} and their tokens")


@users.command("passwd")
def user_passwd(
    ctx: typer.Context,
    name: str,
    current: Annotated[
        bool,
        typer.Option(
            "--current",
            help="Also give the current password (needed to change your own on a server; "
            "with --password-stdin: current on the first line, new on the second).",
        ),
    ] = False,
    password_stdin: PasswordStdinOpt = False,
    password: RefusedOpt = None,
) -> None:
    """Set a user's password. Their other sessions end; personal tokens stay."""
    _refuse_password_flag(password)
    old, new = _passwords(password_stdin, current=current)
    view = backend(ctx).user_passwd(name, PasswordChange(password=new, current_password=old))
    output.line(f"password of {view.name!r} changed; their other sessions have ended")


@users.command("disable")
def user_disable(ctx: typer.Context, name: str) -> None:
    """Stop a user logging in; their tokens stop working at once (refused for the last
    administrator)."""
    view = backend(ctx).user_set_disabled(name, True)
    output.line(f"disabled user {view.name!r}: they cannot log in and their tokens are refused")


@users.command("enable")
def user_enable(ctx: typer.Context, name: str) -> None:
    """Let a disabled user log in again (their unexpired tokens work again)."""
    view = backend(ctx).user_set_disabled(name, False)
    output.line(f"enabled user {view.name!r}")


# -- runas role ----------------------------------------------------------------------------


@roles.command("list")
def role_list_cmd(as_json: JsonOpt = False) -> None:
    """The roles and the permissions each grants (each includes the roles above it)."""
    rows = role_list()
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Role", "Scoped", "Permissions"],
        ((r.role, "yes" if r.scoped else "no", ", ".join(r.permissions)) for r in rows),
    )


@roles.command("assign")
def role_assign(
    ctx: typer.Context,
    user: str,
    role: str,
    scope_group: Annotated[
        list[str] | None,
        typer.Option("--scope-group", help="Limit the role to this group (repeatable)."),
    ] = None,
    scope_task: Annotated[
        list[str] | None,
        typer.Option("--scope-task", help="Limit the role to this task (repeatable)."),
    ] = None,
) -> None:
    """Give a user a role (again: replace its scopes). No scope means no restriction."""
    req = RoleAssign(role=role, scope_groups=scope_group or [], scope_tasks=scope_task or [])
    view = backend(ctx).role_assign(user, req)
    held = next((g for g in view.roles if g.role == req.role.strip().lower()), None)
    shown = _grant(held) if held is not None else req.role
    output.line(f"{view.name!r} holds {shown}")


@roles.command("revoke")
def role_revoke(ctx: typer.Context, user: str, role: str) -> None:
    """Take a role away from a user (refused for the last administrator)."""
    view = backend(ctx).role_revoke(user, role)
    left = ", ".join(_grant(g) for g in view.roles) or "none"
    output.line(f"revoked {role} from {view.name!r} (roles now: {left})")


# -- runas token ---------------------------------------------------------------------------


def _token_rows(rows: list[TokenView]) -> None:
    output.table(
        ["Id", "User", "Name", "Kind", "Created", "Expires", "Last used", "Revoked"],
        (
            (
                t.id,
                t.user,
                t.name,
                t.kind,
                _when(t.created_at),
                _when(t.expires_at) or "never",
                _when(t.last_used_at),
                "yes" if t.revoked else "",
            )
            for t in rows
        ),
    )


@tokens.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. ci-deploy.")],
    expires_in_days: Annotated[
        int | None,
        typer.Option("--expires-in-days", min=1, max=3650, help="Expire after N days."),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", help="Whose token (default: yours; local mode: required)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a personal API token. It is printed once: store it now."""
    made = backend(ctx).token_create(TokenCreate(name=name, expires_in_days=expires_in_days), user)
    if as_json:
        output.emit_json(made)
        return
    until = f"expires {_when(made.expires_at)} UTC" if made.expires_at else "never expires"
    sys.stdout.write(made.token + "\n")
    sys.stderr.write(
        f"created token {made.name!r} (id {made.id}) for {made.user!r}, {until}; "
        "store it now: it is not shown again\n"
    )


@tokens.command("list")
def token_list(
    ctx: typer.Context,
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", help="Whose tokens (default: yours; local mode: required)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List API tokens (never the tokens themselves)."""
    rows = backend(ctx).token_list(user)
    if as_json:
        output.emit_json(rows)
    else:
        _token_rows(rows)


@tokens.command("revoke")
def token_revoke(
    ctx: typer.Context, token_id: Annotated[int, typer.Argument(metavar="ID")]
) -> None:
    """Revoke a token at once (yours; a user administrator: anyone's)."""
    revoked = backend(ctx).token_revoke(token_id)
    output.line(f"revoked token {revoked}")
