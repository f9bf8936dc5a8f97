"""Connected management groups (domain.md §7; issue 6): another group's API, reached with a
local Run As account of type *basic* that is an administrator there.

What a connection gives the users of this group:

* the open alerts of every connected group next to this group's own (``alerts``), each marked
  with its ``management_group``; a group that does not answer is reported, not fatal;
* tasks on the connected group's objects (``forward_start``, ``forwarded_show``,
  ``forwarded_tasks``). **This group's rules apply first** — ``tasks:run``, task scopes, and
  *its own* Tasks Execution setting with the caller's administrator status and whether
  credentials were supplied — exactly as for a local target. Only then is the start sent to
  the connected group, as the connection account (an administrator there, so the connected
  group's own setting does not refuse it), with ``on_behalf_of = "<this group>:<user>"``,
  which the connected group records in its run (``management_group``, ``requested_by``) and
  its ``task:start`` audit record (``services/tasks.start``).

One tier only: every request a connection sends carries :data:`CONNECTED_FROM` (the sending
group's name). A request that carries it is never forwarded again — the forwarding operations
refuse it — so connected groups do not see each other through a third group.

Secrets: the connection account's password is decrypted on this server for each conversation
(audited ``account:secret-use``, purpose :data:`PURPOSE`, committed before the password leaves),
sent only in the JSON body of ``POST /api/v1/login`` of the connected server, and the session
token it returns is revoked when the conversation ends. Neither is stored, logged, or put in an
error message. HTTP calls are never made inside a database transaction (on SQLite that would
hold the write lock for a network round trip).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runas.domain.accounts import AccountType
from runas.domain.roles import Permission, Role
from runas.domain.tasks import credentials_refusal, task_scope
from runas.errors import (
    AlreadyExists,
    ConfigurationError,
    Forbidden,
    InvalidInput,
    NotFound,
    RunAsError,
    ServerError,
    Unauthenticated,
    error_for,
)
from runas.runtime import Runtime, UnitOfWork
from runas.services import accounts, audit, lookup
from runas.services import tasks as task_service
from runas.services.alerts import AlertView
from runas.services.audit import AuditAction
from runas.services.run_as_health import SOURCE as RUNAS_HEALTH
from runas.services.tasks import TaskRunView, TaskStart, TaskView
from runas.services.user_store import Principal
from runas.storage.tables import AccountRow, ConnectedGroupRow, TaskRunRow

if TYPE_CHECKING:
    from runas.client.transport import ApiClient

# runas.client imports the backends, which import this module: the HTTP client is imported
# where it is used.

#: header on every request a connection sends: the sending group's name (one tier only)
CONNECTED_FROM = "X-Runas-Connected-From"
#: ``account:secret-use`` purpose of the connection account's password
PURPOSE = "connected-group:login"
#: how long one call to a connected server may take (a login hashes a password there)
TIMEOUT = 15.0
NAME_MAX = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MG_NAME_KEY = "management_group"


# -- views and requests ----------------------------------------------------------------------


class ConnectedGroupCreate(BaseModel):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    server_url: str = Field(min_length=1, max_length=1024)
    #: a local Run As account of type basic (name or id)
    account: str = Field(min_length=1, max_length=255)
    #: PEM CA certificate(s) the connected server's certificate chains to (None: system CAs)
    ca_pem: str | None = Field(default=None, max_length=256 * 1024)


class ConnectedGroupView(BaseModel):
    name: str
    server_url: str
    account: str
    #: the connected server's certificate is checked against a CA given at connect time
    custom_ca: bool
    created_at: datetime
    created_by: str


class GroupAlertView(AlertView):
    """An alert and the management group it belongs to."""

    management_group: str


class UnreachableGroup(BaseModel):
    management_group: str
    error: str


class ConnectedAlertsView(BaseModel):
    """This group's alerts and those of every connected group that answered, newest first;
    ``unreachable`` names the connected groups that did not answer, and why."""

    alerts: list[GroupAlertView]
    unreachable: list[UnreachableGroup]


# -- who may ---------------------------------------------------------------------------------


def is_administrator(principal: Principal | None) -> bool:
    """The local backend (no principal: a command on the server host) counts as one."""
    return principal is None or any(g.role == Role.ADMINISTRATOR for g in principal.roles)


def _require_admin(principal: Principal | None) -> None:
    if not is_administrator(principal):
        raise Forbidden("only administrators manage connected management groups")


def _not_from_a_connection(incoming_from: str | None) -> None:
    if incoming_from:
        raise Forbidden(
            f"this request came from connected management group {incoming_from}: requests "
            "through a connection are not forwarded further (one tier only)"
        )


def own_name(session: Session) -> str:
    return str(lookup.setting(session, _MG_NAME_KEY) or "default")


# -- connect, list, remove -------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """What one conversation with a connected group needs; the password only in a SecretStr."""

    name: str
    url: str
    user: str
    password: SecretStr
    ca_pem: str | None
    #: this group's name, sent as :data:`CONNECTED_FROM`
    sender: str


def _check_name(name: str) -> str:
    clean = name.strip()
    if not _NAME.fullmatch(clean):
        raise InvalidInput(
            f"connected group name {name!r} is not valid: 1-128 letters, digits and . _ -, "
            "starting with a letter or digit"
        )
    return clean


def _check_ca(pem: str | None) -> str | None:
    if pem is None or not pem.strip():
        return None
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise InvalidInput("the CA file holds no usable PEM certificate") from None
    return pem


def _basic_account(session: Session, ref: str) -> AccountRow:
    row = lookup.account(session, ref)
    if row.type != AccountType.BASIC.value:
        raise InvalidInput(
            f"account {row.name!r} is of type {row.type}: a connection logs in with an account "
            "of type basic (user name and password)"
        )
    if row.current_version < 1:
        raise InvalidInput(f"account {row.name!r} has no password stored")
    return row


def _credentials(uow: UnitOfWork, row: AccountRow) -> tuple[str, SecretStr]:
    # Audited (account:secret-use) in uow's transaction, which commits before the HTTP call.
    secrets = accounts.decrypt_secrets(uow, row.id, row.current_version, purpose=PURPOSE)
    user = str(row.public_fields.get("user", ""))
    password = secrets.get("password")
    if not user or password is None:
        raise InvalidInput(f"account {row.name!r} has no user name or password")
    return user, SecretStr(password)


def connect(
    runtime: Runtime,
    req: ConnectedGroupCreate,
    *,
    principal: Principal | None,
    actor: str | None = None,
    source: str = "local",
    transport: httpx.BaseTransport | None = None,
) -> ConnectedGroupView:
    """Store a connection after a login to the connected server with its account worked and
    showed an administrator there. Nothing is stored when it fails."""
    from runas.client.transport import normalise_server_url

    _require_admin(principal)
    name = _check_name(req.name)
    try:
        url = normalise_server_url(req.server_url)
    except ConfigurationError as err:  # the client's own settings error; here it is input
        raise InvalidInput(str(err)) from None
    ca_pem = _check_ca(req.ca_pem)
    with runtime.unit_of_work(actor=actor, source=source) as uow:
        s = uow.session
        if name == own_name(s):
            raise InvalidInput(f"{name!r} is this management group's own name")
        if _find(s, name) is not None:
            raise AlreadyExists(f"a connected management group named {name!r} already exists")
        account = _basic_account(s, req.account)
        account_id, account_name = account.id, account.name
        user, password = _credentials(uow, account)
        conn = Connection(name, url, user, password, ca_pem, own_name(s))
    try:
        with _session(conn, transport) as api:
            me = api.call("GET", "/me", headers=_marker(conn))
    except RunAsError as err:
        raise InvalidInput(
            f"cannot connect management group {name}: logging in to {url} as {user} "
            f"(account {account_name!r}) failed: {err}"
        ) from None
    roles = me.get("roles", []) if isinstance(me, dict) else []
    if not any(isinstance(r, dict) and r.get("role") == Role.ADMINISTRATOR for r in roles):
        raise InvalidInput(
            f"cannot connect management group {name}: {user} (account {account_name!r}) is not "
            f"an administrator of the management group at {url}"
        )
    with runtime.unit_of_work(actor=actor, source=source) as uow:
        row = ConnectedGroupRow(
            name=name,
            server_url=url,
            account_id=account_id,
            ca_pem=ca_pem,
            created_at=uow.now,
            created_by=uow.actor,
        )
        uow.session.add(row)
        try:
            uow.session.flush()
        except IntegrityError:
            raise AlreadyExists(
                f"a connected management group named {name!r} already exists"
            ) from None
        audit.record(
            uow,
            AuditAction.CONNECTED_GROUP_ADD,
            name,
            {"server_url": url, "account_name": account_name, "custom_ca": ca_pem is not None},
        )
        return _view(row, account_name)


def _find(session: Session, name: str) -> ConnectedGroupRow | None:
    return session.scalars(
        select(ConnectedGroupRow).where(ConnectedGroupRow.name == name)
    ).one_or_none()


def _get(session: Session, name: str) -> ConnectedGroupRow:
    row = _find(session, name)
    if row is None:
        raise NotFound(f"no connected management group named {name!r}")
    return row


def _view(row: ConnectedGroupRow, account: str) -> ConnectedGroupView:
    return ConnectedGroupView(
        name=row.name,
        server_url=row.server_url,
        account=account,
        custom_ca=row.ca_pem is not None,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def list_groups(session: Session, *, principal: Principal | None) -> list[ConnectedGroupView]:
    if principal is not None:
        principal.require(Permission.RUNAS_READ)  # they name Run As accounts
    rows = session.execute(
        select(ConnectedGroupRow, AccountRow.name)
        .join(AccountRow, AccountRow.id == ConnectedGroupRow.account_id)
        .order_by(ConnectedGroupRow.name)
    ).all()
    return [_view(row, account) for row, account in rows]


def remove(uow: UnitOfWork, name: str, *, principal: Principal | None) -> str:
    _require_admin(principal)
    row = _get(uow.session, name)
    uow.session.delete(row)
    uow.session.flush()
    audit.record(uow, AuditAction.CONNECTED_GROUP_REMOVE, name, {"server_url": row.server_url})
    return name


def users_of_account(session: Session, account_id: int) -> list[str]:
    """The connections that log in with an account (it cannot be removed while they do)."""
    return list(
        session.scalars(
            select(ConnectedGroupRow.name)
            .where(ConnectedGroupRow.account_id == account_id)
            .order_by(ConnectedGroupRow.name)
        )
    )


def open_connection(uow: UnitOfWork, name: str) -> Connection:
    """The connection ``name`` with its account's password decrypted (audited in ``uow``)."""
    row = _get(uow.session, name)
    account = uow.session.get(AccountRow, row.account_id)
    assert account is not None  # ON DELETE RESTRICT
    user, password = _credentials(uow, account)
    return Connection(row.name, row.server_url, user, password, row.ca_pem, own_name(uow.session))


# -- talking to a connected server -------------------------------------------------------------


def _marker(conn: Connection) -> dict[str, str]:
    return {CONNECTED_FROM: conn.sender}


def _transport(conn: Connection, transport: httpx.BaseTransport | None) -> httpx.BaseTransport:
    if transport is not None:
        return transport
    verify: bool | ssl.SSLContext = True
    if conn.ca_pem is not None:
        verify = ssl.create_default_context(cadata=conn.ca_pem)
    return httpx.HTTPTransport(verify=verify)


@contextmanager
def _session(conn: Connection, transport: httpx.BaseTransport | None) -> Iterator[ApiClient]:
    """Logged in to the connected server as the connection account; logged out after."""
    from runas.client.transport import ApiClient

    wire = _transport(conn, transport)
    anon = ApiClient(conn.url, None, timeout=TIMEOUT, transport=wire)
    try:
        data = anon.call(
            "POST",
            "/login",
            body={"name": conn.user, "password": conn.password},
            auth=False,
            headers=_marker(conn),
        )
    except Unauthenticated as err:
        raise ConfigurationError(f"login refused: {err}") from None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise ServerError(f"server {conn.url} answered the login without a token")
    api = ApiClient(conn.url, SecretStr(token), timeout=TIMEOUT, transport=wire)
    try:
        yield api
    finally:
        # The session token expires by itself: a failed logout does not spoil the answer.
        with suppress(RunAsError):
            api.call("POST", "/logout", headers=_marker(conn))
        api.close()
        anon.close()


def _call(conn: Connection, transport: httpx.BaseTransport | None, fn: Any) -> Any:
    """Run ``fn(api)`` in a session; an error names the connected group, keeping its kind
    (a refusal there is a refusal here) except authentication, which is the connection's."""
    try:
        with _session(conn, transport) as api:
            return fn(api)
    except Unauthenticated as err:
        raise ServerError(f"connected management group {conn.name}: {err}") from None
    except RunAsError as err:
        raise error_for(err.code, f"connected management group {conn.name}: {err}") from None


# -- alerts ------------------------------------------------------------------------------------


def alerts(
    runtime: Runtime,
    *,
    principal: Principal | None,
    include_closed: bool,
    computer: str | None,
    source: str | None,
    limit: int,
    actor: str | None = None,
    origin: str = "local",
    incoming_from: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> ConnectedAlertsView:
    """This group's alerts (as ``GET /alerts`` shows them to ``principal``) and those of every
    connected group, each marked with its group."""
    _not_from_a_connection(incoming_from)
    from runas.services import alerts as alert_service

    include_runas = principal is None or Permission.RUNAS_READ in principal.permissions
    scope = None if principal is None else principal.object_scope()
    with runtime.unit_of_work(actor=actor, source=origin) as uow:
        here = own_name(uow.session)
        local = alert_service.list_alerts(
            uow.session,
            open_only=not include_closed,
            computer=computer,
            source=source,
            limit=limit,
            include_runas=include_runas,
            scope=scope,
        )
        names = [r.name for r in uow.session.scalars(select(ConnectedGroupRow))]
        conns: list[Connection] = []
        unreachable: list[UnreachableGroup] = []
        if scope is not None and names:
            # A scope names groups of this management group; they mean nothing elsewhere.
            unreachable = [
                UnreachableGroup(
                    management_group=n,
                    error="not shown: your roles are limited to groups of this management group",
                )
                for n in sorted(names)
            ]
        else:
            conns = [open_connection(uow, n) for n in sorted(names)]
    out = [GroupAlertView(**a.model_dump(), management_group=here) for a in local]
    query = {"all": include_closed, "computer": computer, "source": source, "limit": limit}
    for conn in conns:

        def fetch(api: ApiClient, c: Connection = conn) -> list[AlertView]:
            return api.many(AlertView, api.call("GET", "/alerts", query=query, headers=_marker(c)))

        try:
            remote: list[AlertView] = _call(conn, transport, fetch)
        except RunAsError as err:
            unreachable.append(UnreachableGroup(management_group=conn.name, error=str(err)))
            continue
        out.extend(
            GroupAlertView(**a.model_dump(), management_group=conn.name)
            for a in remote
            if include_runas or a.source != RUNAS_HEALTH
        )
    out.sort(key=lambda a: a.opened_at, reverse=True)
    return ConnectedAlertsView(alerts=out[:limit], unreachable=unreachable)


# -- tasks -------------------------------------------------------------------------------------


def _caller_name(uow: UnitOfWork, principal: Principal | None) -> str:
    return principal.name if principal is not None else uow.actor


def check_local_rules(
    session: Session, req: TaskStart, *, principal: Principal | None, connected: str
) -> None:
    """This group's rules for a start on a connected group's targets: the caller's right to run
    tasks, its task scopes, and this group's Tasks Execution setting."""
    if principal is not None:
        principal.require(Permission.TASKS_RUN)
        allowed = _task_scope(principal)
        if allowed is not None and req.task not in allowed:
            raise Forbidden(f"your roles do not allow running task {req.task!r}")
        if principal.object_scope() is not None:
            raise Forbidden(
                f"your roles are limited to groups of this management group: targets in "
                f"connected management group {connected} are outside them"
            )
    refusal = credentials_refusal(
        tasks_execution=task_service.tasks_execution(session),
        administrator=is_administrator(principal),
        supplied=req.credentials is not None,
        management_group=own_name(session),
    )
    if refusal is not None:
        raise Forbidden(refusal)


def _task_scope(principal: Principal) -> frozenset[str] | None:
    return task_scope(principal.roles)


def forward_start(
    runtime: Runtime,
    name: str,
    req: TaskStart,
    *,
    principal: Principal | None,
    actor: str | None = None,
    origin: str = "local",
    incoming_from: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> TaskRunView:
    """Check this group's rules, then start ``req`` in connected group ``name``."""
    _not_from_a_connection(incoming_from)
    if req.on_behalf_of is not None:
        raise InvalidInput("on_behalf_of is set by the connection, not by the caller")
    with runtime.unit_of_work(actor=actor, source=origin) as uow:
        _get(uow.session, name)  # a clear NotFound before any rule talks about the task
        check_local_rules(uow.session, req, principal=principal, connected=name)
        conn = open_connection(uow, name)
        who = f"{conn.sender}:{_caller_name(uow, principal)}"
    # The connected group records on_behalf_of in its run (requested_by, management_group)
    # and in its task:start audit record (services/tasks.start).
    body = req.model_copy(update={"on_behalf_of": who})

    def send(api: ApiClient) -> TaskRunView:
        data = api.call("POST", "/task-runs", body=body, headers=_marker(conn))
        return api.one(TaskRunView, data)

    run = _call(conn, transport, send)
    assert isinstance(run, TaskRunView)
    with runtime.unit_of_work(actor=actor, source=origin) as uow:
        # This group's own row of the run (no targets here): who asked, and where it runs, so
        # that ``task status --mg`` answers the user who asked and administrators only.
        uow.session.add(
            TaskRunRow(
                id=run.id,
                task_id=req.task,
                requested_by=_caller_name(uow, principal),
                requested_at=uow.now,
                management_group=name,
                credential_mode=run.credential_mode,
                supplied_user=run.supplied_user,
                overrides=dict(req.overrides),
                # the timeout is the connected group's, which holds the targets
                timeout_seconds=0,
            )
        )
        audit.record(
            uow,
            AuditAction.TASK_FORWARD,
            req.task,
            {
                "connected_group": name,
                "run": run.id,
                "mode": run.credential_mode,
                "supplied_user": run.supplied_user,
                "targets": audit.capped(req.targets),
            },
        )
    return run.model_copy(update={"management_group": name})


def forwarded_show(
    runtime: Runtime,
    name: str,
    run_id: str,
    *,
    principal: Principal | None,
    with_output: bool = False,
    actor: str | None = None,
    origin: str = "local",
    incoming_from: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> TaskRunView:
    """A run this group forwarded to ``name``, as the connected group sees it now. Like local
    runs: the user who asked sees it, administrators see every one."""
    _not_from_a_connection(incoming_from)
    with runtime.unit_of_work(actor=actor, source=origin) as uow:
        requested_by = uow.session.scalar(
            select(TaskRunRow.requested_by).where(
                TaskRunRow.id == run_id, TaskRunRow.management_group == name
            )
        )
        if requested_by is None or (
            not is_administrator(principal)
            and principal is not None
            and requested_by != principal.name
        ):
            raise NotFound(f"no task run {run_id!r} forwarded to {name}")
        conn = open_connection(uow, name)
    from runas.client.transport import segment

    path = f"/task-runs/{segment(run_id)}" + ("/output" if with_output else "")

    def fetch(api: ApiClient) -> TaskRunView:
        return api.one(TaskRunView, api.call("GET", path, headers=_marker(conn)))

    run = _call(conn, transport, fetch)
    assert isinstance(run, TaskRunView)
    return run.model_copy(update={"management_group": name, "requested_by": requested_by})


def forwarded_tasks(
    runtime: Runtime,
    name: str,
    target: str | None,
    *,
    principal: Principal | None,
    actor: str | None = None,
    origin: str = "local",
    incoming_from: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> list[TaskView]:
    """The tasks of connected group ``name`` (for ``target``), less those this group's task
    scopes keep the caller from running."""
    _not_from_a_connection(incoming_from)
    with runtime.unit_of_work(actor=actor, source=origin) as uow:
        conn = open_connection(uow, name)
    query = {"target": target}

    def fetch(api: ApiClient) -> list[TaskView]:
        return api.many(TaskView, api.call("GET", "/tasks", query=query, headers=_marker(conn)))

    found = _call(conn, transport, fetch)
    assert isinstance(found, list)
    allowed = None if principal is None else _task_scope(principal)
    return found if allowed is None else [t for t in found if t.id in allowed]


__all__ = [
    "CONNECTED_FROM",
    "ConnectedAlertsView",
    "ConnectedGroupCreate",
    "ConnectedGroupView",
    "Connection",
    "GroupAlertView",
    "UnreachableGroup",
    "alerts",
    "connect",
    "forward_start",
    "forwarded_show",
    "forwarded_tasks",
    "is_administrator",
    "list_groups",
    "open_connection",
    "remove",
    "users_of_account",
]
