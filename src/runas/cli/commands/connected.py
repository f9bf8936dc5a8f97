"""``runas mg connect|list|remove``: connected management groups (docs/tasks.md, "Connected
management groups"). Administrators only.

A connection names the other group's server and a local Run As account of type basic that is
an administrator there; ``connect`` logs in with it before storing anything, so a wrong URL,
certificate or password is refused at once with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runas.cli import output
from runas.cli.state import backend
from runas.errors import InvalidInput
from runas.services.connected import ConnectedGroupCreate

app = typer.Typer(
    help="Connected management groups: alerts and tasks of other groups, through a Run As "
    "account that is an administrator there.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
#: a CA file holds certificates, not a disk image
_CA_FILE_LIMIT = 256 * 1024


def _read_ca(path: Path) -> str:
    try:
        if path.stat().st_size > _CA_FILE_LIMIT:
            raise InvalidInput(f"--ca-file {path} is larger than {_CA_FILE_LIMIT // 1024} KiB")
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not a PEM file"
        raise InvalidInput(f"--ca-file {path} cannot be read: {reason}") from None


@app.command("connect")
def connect(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the connected group (e.g. MG2).")],
    server: Annotated[
        str, typer.Option("--server", help="The connected group's server (https://host:port).")
    ],
    account: Annotated[
        str,
        typer.Option(
            "--account",
            help="A Run As account of type basic (user + password) that is an administrator "
            "of the connected group.",
        ),
    ],
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file", help="PEM CA certificate of the connected server (default: system CAs)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Connect a management group (after a login to it with the account succeeded)."""
    req = ConnectedGroupCreate(
        name=name,
        server_url=server,
        account=account,
        ca_pem=_read_ca(ca_file) if ca_file is not None else None,
    )
    v = backend(ctx).mg_connect(req)
    if as_json:
        output.emit_json(v)
        return
    output.line(f"connected management group {v.name} at {v.server_url} (account {v.account})")


@app.command("list")
def list_groups(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the connected management groups."""
    rows = backend(ctx).mg_list()
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Name", "Server", "Account", "CA", "Created (UTC)", "By"],
        (
            (
                v.name,
                v.server_url,
                v.account,
                "given" if v.custom_ca else "system",
                f"{v.created_at:%Y-%m-%d %H:%M}",
                v.created_by,
            )
            for v in rows
        ),
    )


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The connected group's name.")],
) -> None:
    """Remove a connection (nothing changes in the connected group)."""
    removed = backend(ctx).mg_remove(name)
    output.line(f"removed connected management group {removed}")
