"""``runas account add|list|show|update|remove``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import SecretStr

from runas.cli import output
from runas.cli.secrets import needed_secrets, read_secrets
from runas.cli.state import backend
from runas.domain.accounts import FIELDS, AccountType, parse_account_type
from runas.errors import InvalidInput
from runas.services.accounts import AccountCreate, AccountUpdate, AccountView

app = typer.Typer(help="Run As accounts: typed credentials, encrypted at rest, write-only.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
StdinOpt = Annotated[
    bool,
    typer.Option(
        "--stdin",
        help="Read the main secret (password, community, key data…) from standard input.",
    ),
]
StdinJsonOpt = Annotated[
    bool, typer.Option("--stdin-json", help='Read secrets as JSON {"name": "value"} from stdin.')
]
SecretFileOpt = Annotated[
    list[str] | None,
    typer.Option("--secret-file", metavar="SECRET=PATH", help="Read one secret from a file."),
]
# Secrets are never flag values. These hidden options exist to say so clearly.
RefusedOpt = Annotated[str | None, typer.Option(hidden=True)]
# Public fields, the same for add and update.
DomainOpt = Annotated[str | None, typer.Option(help="Domain (FQDN form).")]
UserOpt = Annotated[str | None, typer.Option(help="User name.")]
ExpiresOpt = Annotated[str | None, typer.Option(help="Expiry date, YYYY-MM-DD.")]
ElevationOpt = Annotated[str | None, typer.Option(help="UNIX: none, sudo, su, privileged.")]
ContextOpt = Annotated[str | None, typer.Option(help="SNMPv3 context.")]
AuthProtocolOpt = Annotated[str | None, typer.Option(help="SNMPv3: MD5, SHA, SHA-256…")]
PrivProtocolOpt = Annotated[str | None, typer.Option(help="SNMPv3: DES, AES, AES-256…")]


def _refuse_secret_flags(**given: str | None) -> None:
    for name, value in given.items():
        if value is not None:
            raise InvalidInput(
                f"--{name.replace('_', '-')} is not accepted: secrets never go on the command "
                "line (process lists, shell history); use the prompt, --stdin, --stdin-json or "
                "--secret-file"
            )


def _expiry(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"--expires {value!r} is not a date (YYYY-MM-DD)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _public(
    domain: str | None,
    user: str | None,
    context: str | None,
    auth_protocol: str | None,
    priv_protocol: str | None,
    elevation: str | None,
) -> dict[str, str | None]:
    given = {
        "domain": domain,
        "user": user,
        "context": context,
        "auth_protocol": auth_protocol,
        "priv_protocol": priv_protocol,
        "elevation": elevation,
    }
    return {k: v for k, v in given.items() if v is not None}


def _secrets(
    atype: AccountType,
    public: dict[str, str | None],
    stdin: bool,
    stdin_json: bool,
    secret_file: list[str] | None,
) -> dict[str, SecretStr]:
    """Secrets from the channels given; the prompt asks for the rest on a terminal."""
    return read_secrets(
        atype,
        stdin=stdin,
        stdin_json=stdin_json,
        files=secret_file or [],
        needed=needed_secrets(atype, public),
        interactive=sys.stdin.isatty() and not (stdin or stdin_json),
    )


def render(view: AccountView) -> None:
    output.fields(
        [
            ("Name", view.name),
            ("Id", view.id),
            ("Type", view.type),
            ("Identity", view.identity),
            ("Description", view.description),
            *((k.replace("_", " ").capitalize(), v) for k, v in sorted(view.fields.items())),
            ("Secret", f"version {view.secret_version} (write-only, never shown)"),
            ("Expires", view.expires_at.date().isoformat() if view.expires_at else None),
            ("Distribution", view.distribution),
            ("Approved", view.computers),
            ("Created", f"{view.created_at:%Y-%m-%d %H:%M} by {view.created_by}"),
            ("Modified", f"{view.modified_at:%Y-%m-%d %H:%M} by {view.modified_by}"),
        ]
    )
    if view.associations:
        output.line()
        output.table(
            ["Association", "Profile", "Target", "Enforced"],
            (
                (f"#{a.id}", a.profile, f"{a.target_kind} {a.target or ''}".strip(), a.enforced)
                for a in view.associations
            ),
        )
    output.line()
    output.table(
        ["Version", "Created", "By", "Key", "Current"],
        (
            (v.version, f"{v.created_at:%Y-%m-%d %H:%M}", v.created_by, v.kek_id, v.current)
            for v in view.versions
        ),
    )


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique account name.")],
    account_type: Annotated[
        str, typer.Option("--type", "-t", help="windows, action, basic, digest, simple, …")
    ],
    domain: DomainOpt = None,
    user: UserOpt = None,
    description: Annotated[str, typer.Option(help="What the account is for.")] = "",
    expires: ExpiresOpt = None,
    elevation: ElevationOpt = None,
    context: ContextOpt = None,
    auth_protocol: AuthProtocolOpt = None,
    priv_protocol: PrivProtocolOpt = None,
    stdin: StdinOpt = False,
    stdin_json: StdinJsonOpt = False,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    password: RefusedOpt = None,
    community: RefusedOpt = None,
    secret: RefusedOpt = None,
) -> None:
    """Create a Run As account. Secrets come by prompt, --stdin, --stdin-json or --secret-file."""
    _refuse_secret_flags(password=password, community=community, secret=secret)
    atype = parse_account_type(account_type)
    public = _public(domain, user, context, auth_protocol, priv_protocol, elevation)
    secrets = _secrets(atype, public, stdin, stdin_json, secret_file)
    req = AccountCreate(
        name=name,
        type=atype.value,
        description=description,
        fields={k: v for k, v in public.items() if v is not None},
        secrets=secrets,
        expires_at=_expiry(expires),
    )
    view = backend(ctx).account_add(req)
    if as_json:
        output.emit_json(view)
    else:
        output.line(f"created {view.type} account {view.name!r} (id {view.id}, secret version 1)")
        output.line(
            "distribution: more secure, no computer approved yet "
            f"(runas distribution set {view.name!r} --more-secure --computer …)"
        )


@app.command("list")
def list_(
    ctx: typer.Context,
    account_type: Annotated[str | None, typer.Option("--type", "-t")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List Run As accounts."""
    rows = backend(ctx).account_list(account_type)
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Name", "Type", "Identity", "Version", "Distribution", "Computers", "Associations"],
        (
            (
                r.name,
                r.type,
                r.identity,
                r.secret_version,
                r.distribution,
                r.distributed_to,
                r.associations,
            )
            for r in rows
        ),
    )


@app.command("show")
def show(ctx: typer.Context, account: str, as_json: JsonOpt = False) -> None:
    """Show an account (never its secret)."""
    view = backend(ctx).account_show(account)
    if as_json:
        output.emit_json(view)
    else:
        render(view)


@app.command("update")
def update(
    ctx: typer.Context,
    account: str,
    domain: DomainOpt = None,
    user: UserOpt = None,
    description: Annotated[str | None, typer.Option(help="What the account is for.")] = None,
    expires: ExpiresOpt = None,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="Remove the expiry date.")] = False,
    elevation: ElevationOpt = None,
    context: ContextOpt = None,
    auth_protocol: AuthProtocolOpt = None,
    priv_protocol: PrivProtocolOpt = None,
    rename: Annotated[str | None, typer.Option(help="New account name.")] = None,
    new_secret: Annotated[
        bool,
        typer.Option(
            "--new-secret", help="Prompt for a new secret (a new secret version replaces all)."
        ),
    ] = False,
    stdin: StdinOpt = False,
    stdin_json: StdinJsonOpt = False,
    secret_file: SecretFileOpt = None,
    as_json: JsonOpt = False,
    password: RefusedOpt = None,
    community: RefusedOpt = None,
    secret: RefusedOpt = None,
) -> None:
    """Change an account. Giving secrets creates a new secret version holding exactly them."""
    _refuse_secret_flags(password=password, community=community, secret=secret)
    be = backend(ctx)
    current = be.account_show(account)
    atype = AccountType(current.type)
    public = _public(domain, user, context, auth_protocol, priv_protocol, elevation)
    secrets = None
    if new_secret or stdin or stdin_json or secret_file:
        merged = {**current.fields, **public}
        secrets = _secrets(atype, merged, stdin, stdin_json, secret_file)
    if no_expiry and expires:
        raise InvalidInput("use --expires or --no-expiry, not both")
    req = AccountUpdate(
        description=description,
        fields=public,
        secrets=secrets,
        expires_at=_expiry(expires),
        clear_expiry=no_expiry,
        rename=rename,
    )
    view = be.account_update(account, req)
    if as_json:
        output.emit_json(view)
    else:
        what = f", new secret version {view.secret_version}" if secrets is not None else ""
        output.line(f"updated account {view.name!r}{what}")


@app.command("remove")
def remove(ctx: typer.Context, account: str) -> None:
    """Remove an account (refused while it is associated with a profile)."""
    name = backend(ctx).account_remove(account)
    output.line(f"removed account {name!r} and every version of its secret")


@app.command("types")
def types(as_json: JsonOpt = False) -> None:
    """List the account types and their fields (* = secret)."""
    if as_json:
        output.emit_json(
            {
                t.value: [
                    {"name": f.name, "secret": f.secret, "required": f.required, "help": f.help}
                    for f in specs
                ]
                for t, specs in FIELDS.items()
            }
        )
        return
    output.table(
        ["Type", "Fields (* secret, ? optional)"],
        (
            (
                t.value,
                ", ".join(
                    f.name + ("*" if f.secret else "") + ("" if f.required else "?") for f in specs
                ),
            )
            for t, specs in FIELDS.items()
        ),
    )
