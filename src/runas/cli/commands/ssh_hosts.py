"""``runas ssh-host …``: the SSH host keys the management group trusts
(docs/probes/ssh-host-keys.md).

No trust on first use: a key an agent was offered waits, pending, until an administrator checks
its fingerprint on the host itself (``ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub``) and
approves exactly that fingerprint. Keys can also be added directly from a public key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from runas.cli import output
from runas.cli.state import backend
from runas.errors import InvalidInput
from runas.services.ssh_hosts import SshHostKeyAdd, SshHostKeyView, format_target

app = typer.Typer(
    help="SSH host keys the management group trusts: approve offered keys by fingerprint, add "
    "or remove keys. Agents verify SSH targets against the trusted keys only.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TargetArg = Annotated[
    str,
    typer.Argument(
        metavar="HOST[:PORT]", help="The SSH target as the workflow names it (port 22 default)."
    ),
]
#: a key file is a public key, not a private one: anything bigger is not what was meant
_KEY_FILE_LIMIT = 64 * 1024


def _when(view: SshHostKeyView) -> str:
    return f"{view.first_seen_at:%Y-%m-%d %H:%M}"


def _rows(rows: list[SshHostKeyView]) -> None:
    output.table(
        ["Host", "Type", "Fingerprint", "Status", "First seen", "Reported by", "Approved by"],
        (
            (
                format_target(v.host, v.port),
                v.key_type,
                v.fingerprint,
                "pending (CHANGED)" if v.changed else v.status,
                _when(v),
                v.reported_by,
                v.approved_by,
            )
            for v in rows
        ),
    )


@app.command("list")
def ssh_host_list(
    ctx: typer.Context,
    pending: Annotated[
        bool, typer.Option("--pending", help="Only keys waiting for approval.")
    ] = False,
    host: Annotated[
        str | None, typer.Option("--host", metavar="HOST[:PORT]", help="Only this target.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List trusted and pending SSH host keys."""
    rows = backend(ctx).ssh_host_list("pending" if pending else None, host)
    if as_json:
        output.emit_json(rows)
        return
    _rows(rows)
    if any(v.changed for v in rows):
        sys.stderr.write(
            "a CHANGED key differs from the key trusted for its host: check it on the host "
            "before approving it (possible man-in-the-middle)\n"
        )
    elif any(v.status == "pending" for v in rows):
        sys.stderr.write(
            "check each pending fingerprint on the host itself ('ssh-keygen -lf "
            "/etc/ssh/ssh_host_<type>_key.pub') before 'runas ssh-host approve HOST[:PORT] "
            "--fingerprint SHA256:…'\n"
        )


@app.command("approve")
def ssh_host_approve(
    ctx: typer.Context,
    target: TargetArg,
    fingerprint: Annotated[
        str,
        typer.Option(
            "--fingerprint", metavar="SHA256:…", help="The pending key's fingerprint, exactly."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Trust the pending key of HOST[:PORT] whose fingerprint you checked on the host."""
    view = backend(ctx).ssh_host_approve(target, fingerprint)
    if as_json:
        output.emit_json(view)
        return
    output.line(
        f"trusted {view.key_type} key {view.fingerprint} of "
        f"{format_target(view.host, view.port)}; agents receive it with their next configuration"
    )


def _read_key_file(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(_KEY_FILE_LIMIT + 1)
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > _KEY_FILE_LIMIT:
        raise InvalidInput(f"{path} is too large to be an SSH public key")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not an OpenSSH public key (not text)") from None


@app.command("add")
def ssh_host_add(
    ctx: typer.Context,
    target: TargetArg,
    key: Annotated[
        str | None,
        typer.Option("--key", metavar='"TYPE BASE64"', help="The host's public key."),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            metavar="PATH",
            help="A file holding the public key (ssh_host_*_key.pub, or one ssh-keyscan line).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Trust a host key at once, from the host's public key."""
    if key is not None and key_file is None:
        text = key
    elif key is None and key_file is not None:
        text = _read_key_file(key_file)
    else:
        raise InvalidInput("give the key with exactly one of --key or --key-file")
    view = backend(ctx).ssh_host_add(SshHostKeyAdd(host=target, key=text))
    if as_json:
        output.emit_json(view)
        return
    output.line(
        f"trusted {view.key_type} key {view.fingerprint} of "
        f"{format_target(view.host, view.port)}; agents receive it with their next configuration"
    )


@app.command("remove")
def ssh_host_remove(
    ctx: typer.Context,
    target: TargetArg,
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint", metavar="SHA256:…", help="Only this key (default: every key)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Forget the keys of HOST[:PORT] (pending and trusted), or only one of them."""
    removed = backend(ctx).ssh_host_remove(target, fingerprint)
    if as_json:
        output.emit_json(removed)
        return
    for v in removed:
        output.line(
            f"removed {v.status} {v.key_type} key {v.fingerprint} of "
            f"{format_target(v.host, v.port)}"
        )
