"""The tamper-evident audit trail: who changed what, when, from where, and with what outcome.

Every change and every use of a secret that passes through runas is recorded (domain.md §11).
Records form a hash chain: record *n* stores the SHA-256 of its own canonical form, which
includes the hash of record *n - 1*; the chain head (last seq and hash) is also kept in
``mg_settings`` under :data:`HEAD_KEY`, so that removing the newest records shows too.

How a record is written
    :func:`record` validates the entry at once (a detail that could hold a secret raises) and
    queues it on the session; the entries are appended to the chain just before the session's
    transaction commits, in the same transaction. So the change and its record commit together
    or not at all: if the append fails, the commit fails and the change is rolled back.

    Appending last is deliberate. The append locks the chain head row (``SELECT … FOR UPDATE``
    on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), which serialises
    every change of the management group from that point to its commit: taken last, that lock
    is held for the shortest time, and always after every other lock a change takes (account
    rows, the resolution epoch), so two servers on one database never deadlock on it nor fork
    the chain.

What a record may hold
    ``details`` holds names of changed fields, secret *versions*, counts and identifiers; never
    a secret. Only JSON values are accepted (str, int, bool, None, lists, objects with string
    keys), and a key that names a secret (``password``, ``auth_key``, ``token``…) is refused
    unless it names a version, a count, a name or an id of one (``secret_version``,
    ``token_name``).

    verify(session) -> AuditVerifyView     walks the chain by seq, streaming
    list_records(session, …) -> [AuditRecordView]
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import event, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, SessionTransaction

from runas.errors import InvalidInput, RunAsError
from runas.runtime import Runtime, UnitOfWork
from runas.storage.tables import FULL_NAME_LENGTH, NAME_LENGTH, AuditRow, SettingRow

#: ``mg_settings`` key of the chain head: ``{"seq": n, "hash": h}``
HEAD_KEY = "audit_head"
#: ``prev_hash`` of record 1
GENESIS_HASH = "0" * 64
#: ``list_records`` never returns more than this many records at once
MAX_LIMIT = 100_000
#: a record's details, as canonical JSON, stay small: names and counts (see :func:`capped`)
MAX_DETAILS_BYTES = 64 * 1024
#: how many names :func:`capped` keeps
MAX_LISTED = 100

Outcome = Literal["success", "denied", "failure"]
OUTCOMES: tuple[Outcome, ...] = ("success", "denied", "failure")

_ACTION_LENGTH = 128
_SOURCE_LENGTH = 128


class AuditAction(StrEnum):
    """What happened, as ``subject:action``. Where it came from is the record's ``source``."""

    MG_INIT = "mg:init"

    ACCOUNT_CREATE = "account:create"
    ACCOUNT_UPDATE = "account:update"
    #: an update that stored a new secret version (public changes may come with it)
    ACCOUNT_SECRET_VERSION = "account:secret-version"  # noqa: S105 - an event tag
    ACCOUNT_REMOVE = "account:remove"
    #: a secret was decrypted on the server, with the purpose in the details
    ACCOUNT_SECRET_USE = "account:secret-use"  # noqa: S105 - an event tag

    DISTRIBUTION_SET = "distribution:set"
    DISTRIBUTION_APPROVE_SUGGESTED = "distribution:approve-suggested"

    PACK_IMPORT = "pack:import"
    PACK_UPGRADE = "pack:upgrade"
    PACK_REMOVE = "pack:remove"

    DISCOVERY_SUBMIT = "discovery:submit"

    PROFILE_CREATE = "profile:create"
    ASSOCIATION_CREATE = "association:create"
    ASSOCIATION_REMOVE = "association:remove"

    KEY_ROTATE = "key:rotate"
    KEY_REWRAP = "key:rewrap"
    KEY_RETIRE = "key:retire"

    USER_CREATE = "user:create"
    USER_UPDATE = "user:update"
    USER_PASSWORD = "user:password"  # noqa: S105 - an event tag
    USER_DISABLE = "user:disable"
    USER_ENABLE = "user:enable"
    USER_REMOVE = "user:remove"

    ROLE_GRANT = "role:grant"
    ROLE_REVOKE = "role:revoke"

    TOKEN_CREATE = "token:create"  # noqa: S105 - an event tag
    TOKEN_REVOKE = "token:revoke"  # noqa: S105 - an event tag

    AUTH_LOGIN = "auth:login"
    AUTH_LOGOUT = "auth:logout"

    # monitoring: agent reports, Run As health alerts (services/monitoring.py, run_as_health.py)
    #: an agent's report had output scrubbed: counts per workflow, never the values
    AGENT_OUTPUT_SCRUBBED = "agent:output-scrubbed"
    #: an agent's report carried a discovery snapshot that was refused (details: why)
    AGENT_DISCOVERY_REFUSED = "agent:discovery-refused"
    ALERT_OPEN = "alert:open"
    ALERT_CLOSE = "alert:close"

    #: a mutating API request refused or failed before any service named it more precisely
    API_REQUEST = "api:request"

    # agents: enrolment, approval, the management group's CA (services/agents.py)
    #: an agent asked to join (a new request, or new details of a pending one)
    AGENT_ENROL = "agent:enrol"
    AGENT_APPROVE = "agent:approve"
    AGENT_REJECT = "agent:reject"
    AGENT_REMOVE = "agent:remove"
    #: an approved agent's certificate was issued again (it was close to its end)
    AGENT_RENEW = "agent:renew"
    AGENT_TOKEN_CREATE = "agent:token-create"  # noqa: S105 - an event tag
    AGENT_CA_CREATE = "agent:ca-create"

    # SSH host keys the management group trusts (services/ssh_hosts.py)
    #: an agent reported a host key nobody trusts yet (pending)
    SSH_HOST_KEY_OFFER = "ssh-host-key:offer"
    #: an agent reported a key other than the trusted one of that type: possible interception
    SSH_HOST_KEY_CHANGED = "ssh-host-key:changed"
    SSH_HOST_KEY_APPROVE = "ssh-host-key:approve"
    SSH_HOST_KEY_ADD = "ssh-host-key:add"
    SSH_HOST_KEY_REMOVE = "ssh-host-key:remove"

    # tasks (services/tasks.py)
    #: a task run started (details: credential_mode, supplied_user — never a password)
    TASK_START = "task:start"
    #: targets of a run that were not sent to any agent, with why
    TASK_REFUSED = "task:refused"
    SETTINGS_TASKS_EXECUTION = "settings:tasks-execution"

    # connected management groups (services/connected.py)
    CONNECTED_GROUP_ADD = "connected-group:add"
    CONNECTED_GROUP_REMOVE = "connected-group:remove"
    #: a task start this group checked and forwarded to a connected group (details: where)
    TASK_FORWARD = "task:forward"


class AuditTrailBroken(RunAsError):
    """``runas audit verify`` found a record that was edited, removed or reordered."""

    code = "audit-trail-broken"
    status = 500

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"audit trail broken at record {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class UnsafeAuditDetails(ValueError):
    """A caller tried to record details that are not plain JSON or could hold a secret.
    A programming error: the change it belongs to does not happen."""


class AuditRecordView(BaseModel):
    seq: int
    at: datetime
    actor: str
    source: str
    action: str
    target: str
    outcome: str
    details: dict[str, Any]
    hash: str


class AuditVerifyView(BaseModel):
    ok: bool
    #: records walked
    records: int
    #: seq of the first broken record (for a removed record: the seq that is missing)
    first_broken: int | None
    reason: str
    #: the chain head's hash: keep a copy elsewhere to detect a rewrite of the whole trail
    head_hash: str | None = None


# -- details: plain JSON, no secrets ---------------------------------------------------------

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "tokens",
        "credential",
        "credentials",
        "community",
        "private",
        "key",
        "keys",
        "plaintext",
        "ciphertext",
        "dek",
    }
)
#: a key ending in one of these names *about* a secret, not the secret (``secret_version``)
_ABOUT_WORDS = frozenset(
    {
        "version",
        "versions",
        "fields",
        "count",
        "name",
        "names",
        "id",
        "ids",
        "kind",
        "purpose",
        # how credentials were given (a task's ``credential_mode``: predefined or supplied)
        "mode",
    }
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _names_a_secret(key: str) -> bool:
    words = [w.lower() for w in _WORD.findall(key)]
    if not words or words[-1] in _ABOUT_WORDS:
        return False
    return any(w in _SECRET_WORDS for w in words)


def _clean(value: object, where: str) -> Any:
    """A deep copy of ``value`` if it is plain JSON without secret-named keys; else raise."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UnsafeAuditDetails(f"audit details{where}: key {k!r} is not a string")
            if _names_a_secret(k):
                raise UnsafeAuditDetails(
                    f"audit details{where}: key {k!r} names a secret; record its version or "
                    "name, never its value"
                )
            out[k] = _clean(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
    # floats are refused too: they do not survive every JSON column unchanged
    raise UnsafeAuditDetails(
        f"audit details{where}: a {type(value).__name__} is not allowed (only str, int, bool, "
        "None, lists and objects)"
    )


def capped(values: Iterable[str], limit: int = MAX_LISTED) -> list[str]:
    """``values`` sorted, for a record's details: at most ``limit`` of them, then one entry
    saying how many more there were (``"… and 250 more"``)."""
    items = sorted(values)
    if len(items) <= limit:
        return items
    return [*items[:limit], f"… and {len(items) - limit} more"]


def _canonical(value: object) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _fit(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def record_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    source: str,
    action: str,
    target: str,
    outcome: str,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 (hex) over the record's canonical JSON form, ``prev_hash`` included."""
    body = {
        "seq": seq,
        "at": _iso(at),
        "actor": actor,
        "source": source,
        "action": action,
        "target": target,
        "outcome": outcome,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(_canonical(body)).hexdigest()


# -- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    at: datetime
    actor: str
    source: str
    action: str
    target: str
    outcome: Outcome
    details: dict[str, Any]


_PENDING = "runas.audit.pending"
_LISTENING = "runas.audit.listening"
#: savepoint -> how many records were queued when it began
_MARKS = "runas.audit.savepoints"


def record(
    uow: UnitOfWork,
    action: AuditAction,
    target: str,
    details: Mapping[str, Any] | None = None,
    outcome: Outcome = "success",
) -> None:
    """Record ``action`` on ``target`` by ``uow.actor`` from ``uow.source``, in ``uow``'s
    transaction: the record is appended to the chain when the transaction commits, and if it
    cannot be, the transaction (the change) does not commit.

    Raises :class:`UnsafeAuditDetails` at once for details that are not plain JSON or whose
    keys name a secret."""
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    clean = _clean(dict(details or {}), "")
    if len(_canonical(clean)) > MAX_DETAILS_BYTES:
        raise UnsafeAuditDetails(
            f"audit details of {action} exceed {MAX_DETAILS_BYTES} bytes: record counts, not lists"
        )
    if uow.now.tzinfo is None or uow.now.utcoffset() is None:
        raise ValueError("audit records need a timezone-aware time")
    entry = _Entry(
        at=uow.now.astimezone(UTC),
        actor=_fit(uow.actor, NAME_LENGTH),
        source=_fit(uow.source, _SOURCE_LENGTH),
        action=_fit(str(AuditAction(action)), _ACTION_LENGTH),
        target=_fit(target, FULL_NAME_LENGTH),
        outcome=outcome,
        details=clean,
    )
    session = uow.session
    if not session.info.get(_LISTENING):
        # once per session, which may commit more than once (each commit appends its records)
        event.listen(session, "before_commit", _on_before_commit)
        event.listen(session, "after_transaction_create", _on_transaction_create)
        event.listen(session, "after_soft_rollback", _on_soft_rollback)
        event.listen(session, "after_transaction_end", _on_transaction_end)
        session.info[_LISTENING] = True
    session.info.setdefault(_PENDING, []).append(entry)


def _on_before_commit(session: Session) -> None:
    pending: list[_Entry] = session.info.pop(_PENDING, None) or []
    if pending:
        _append(session, pending)


def _on_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_MARKS, {})
        marks[id(transaction)] = len(session.info.get(_PENDING) or ())


def _on_soft_rollback(session: Session, previous: SessionTransaction) -> None:
    """A rolled-back savepoint drops only the records queued inside it (its changes are gone,
    the transaction goes on); a rolled-back transaction drops them all."""
    if previous.nested:
        # no mark: the listener was set up inside this savepoint, so all were queued in it
        mark = (session.info.get(_MARKS) or {}).get(id(previous), 0)
        pending = session.info.get(_PENDING)
        if pending is not None:
            del pending[mark:]
    elif previous.parent is None:
        session.info.pop(_PENDING, None)


def _on_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # Marks live until the outermost transaction ends: SQLAlchemy ends a savepoint *before*
    # it reports the savepoint's rollback, which still needs the mark.
    if transaction.parent is None:
        session.info.pop(_MARKS, None)


def _lock_head(session: Session) -> SettingRow:
    """The chain head row, locked until the transaction ends (created at the first record).

    The row is inserted if missing with ON CONFLICT DO NOTHING, so two transactions writing
    the very first record do not both insert it: the second waits for the first to commit."""
    genesis = {"seq": 0, "hash": GENESIS_HASH}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(
            pg_insert(SettingRow)
            .values(key=HEAD_KEY, value=genesis)
            .on_conflict_do_nothing(index_elements=[SettingRow.key])
        )
    elif dialect == "sqlite":
        session.execute(
            sqlite_insert(SettingRow)
            .values(key=HEAD_KEY, value=genesis)
            .on_conflict_do_nothing(index_elements=[SettingRow.key])
        )
    row = session.scalars(
        select(SettingRow)
        .where(SettingRow.key == HEAD_KEY)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:  # another dialect, without an upsert we know how to write
        row = SettingRow(key=HEAD_KEY, value=genesis)
        session.add(row)
    return row


def _append(session: Session, entries: Sequence[_Entry]) -> None:
    head = _lock_head(session)
    seq = int(head.value["seq"])
    prev = str(head.value["hash"])
    rows: list[dict[str, Any]] = []
    for e in entries:
        seq += 1
        digest = record_hash(
            seq=seq,
            at=e.at,
            actor=e.actor,
            source=e.source,
            action=e.action,
            target=e.target,
            outcome=e.outcome,
            details=e.details,
            prev_hash=prev,
        )
        rows.append(
            {
                "seq": seq,
                "at": e.at,
                "actor": e.actor,
                "source": e.source,
                "action": e.action,
                "target": e.target,
                "outcome": e.outcome,
                "details": e.details,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    # One bulk INSERT for the transaction's records (a group commit of many configuration
    # deliveries writes hundreds): the ORM's unit of work per record cost more than hashing.
    session.execute(insert(AuditRow), rows)
    head.value = {"seq": seq, "hash": prev}
    session.flush()


_DENIED_CODES = frozenset({"unauthenticated", "forbidden", "too-many-requests"})
_DENIED_STATUSES = frozenset({401, 403, 429})


def record_failure(
    runtime: Runtime,
    *,
    actor: str,
    source: str,
    action: AuditAction,
    target: str,
    code: str,
    status: int | None = None,
) -> None:
    """Record a change that was refused or failed, in a transaction of its own (the change's
    was rolled back). ``code`` is the error's code (``RunAsError.code``, e.g. ``forbidden``);
    the outcome is ``denied`` for authentication and authorisation refusals (401, 403, 429),
    else ``failure``. An anonymous caller is recorded as ``anonymous``."""
    denied = code in _DENIED_CODES or (status is not None and status in _DENIED_STATUSES)
    with runtime.unit_of_work(actor=actor or "anonymous", source=source) as uow:
        record(
            uow,
            action,
            target,
            {"error": code},
            outcome="denied" if denied else "failure",
        )


# -- reading ---------------------------------------------------------------------------------


def _view(row: AuditRow) -> AuditRecordView:
    return AuditRecordView(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        source=row.source,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        details=dict(row.details),
        hash=row.hash,
    )


def list_records(
    session: Session,
    *,
    since: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    limit: int = 1000,
) -> list[AuditRecordView]:
    """The newest ``limit`` records that match, oldest first.

    ``action`` matches as a prefix (``account`` finds every ``account:…``); ``target`` matches
    exactly or as the first part of a ``/``-separated target (a profile finds its
    associations)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT} (got {limit})")
    if since is not None and (since.tzinfo is None or since.utcoffset() is None):
        since = since.replace(tzinfo=UTC)
    stmt = select(AuditRow)
    if since is not None:
        stmt = stmt.where(AuditRow.at >= since)
    if actor:
        stmt = stmt.where(AuditRow.actor == actor)
    if action:
        stmt = stmt.where(AuditRow.action.startswith(action, autoescape=True))
    if target:
        stmt = stmt.where(
            or_(
                AuditRow.target == target, AuditRow.target.startswith(f"{target}/", autoescape=True)
            )
        )
    rows = list(session.scalars(stmt.order_by(AuditRow.seq.desc()).limit(limit)))
    rows.reverse()
    return [_view(r) for r in rows]


def head(session: Session) -> tuple[int, str]:
    """The chain head: last seq and its hash (``(0, GENESIS_HASH)`` for an empty trail)."""
    row = session.get(SettingRow, HEAD_KEY)
    if row is None:
        return 0, GENESIS_HASH
    return int(row.value["seq"]), str(row.value["hash"])


@dataclass
class _Walk:
    """How far the walk got: records seen, the last good record's seq and hash, and the first
    break (seq, reason) if any."""

    count: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    broken: tuple[int, str] | None = None


def _walk(rows: Iterable[Any]) -> _Walk:
    walk = _Walk()
    for seq, at, actor, source, action, target, outcome, details, prev, digest in rows:
        walk.count += 1
        expected = walk.last_seq + 1
        if seq != expected:
            if seq < expected:  # cannot happen with a unique seq walked in order
                walk.broken = (seq, f"unexpected sequence number {seq} after {walk.last_seq}")
            elif seq == expected + 1:
                walk.broken = (expected, f"record {expected} is missing")
            else:
                walk.broken = (expected, f"records {expected} to {seq - 1} are missing")
            return walk
        if prev != walk.last_hash:
            what = "the start of the trail" if seq == 1 else f"record {seq - 1}"
            walk.broken = (
                seq,
                f"it does not follow {what} (records were reordered, replaced or removed)",
            )
            return walk
        actual = record_hash(
            seq=seq,
            at=at,
            actor=actor,
            source=source,
            action=action,
            target=target,
            outcome=outcome,
            details=details or {},
            prev_hash=prev,
        )
        if actual != digest:
            walk.broken = (seq, "its content does not match its hash (the record was altered)")
            return walk
        walk.last_seq, walk.last_hash = seq, digest
    return walk


def verify(session: Session, *, batch: int = 1000) -> AuditVerifyView:
    """Walk the chain by seq and report the first broken record.

    Detects an edited record (its hash no longer matches its content), a removed one (a gap
    in seq), records reordered or replaced (a ``prev_hash`` that is not the previous record's
    hash), removed newest records (the chain head says there were more) and records added
    behind runas's back (beyond the chain head). Rows are streamed (a server-side cursor on
    PostgreSQL), so a long trail is never held in memory at once."""
    head_row = session.get(SettingRow, HEAD_KEY)
    head_hash = None if head_row is None else str(head_row.value.get("hash"))
    stmt = (
        select(
            AuditRow.seq,
            AuditRow.at,
            AuditRow.actor,
            AuditRow.source,
            AuditRow.action,
            AuditRow.target,
            AuditRow.outcome,
            AuditRow.details,
            AuditRow.prev_hash,
            AuditRow.hash,
        )
        .order_by(AuditRow.seq)
        .execution_options(yield_per=batch)
    )
    result = session.execute(stmt)
    try:
        walk = _walk(result)
    finally:
        result.close()  # the walk may stop early: release the server-side cursor now

    def broken(seq: int, reason: str) -> AuditVerifyView:
        return AuditVerifyView(
            ok=False, records=walk.count, first_broken=seq, reason=reason, head_hash=head_hash
        )

    if walk.broken is not None:
        return broken(*walk.broken)
    last = walk.last_seq
    if head_row is None:
        if last:
            return broken(1, "the chain head is missing from the settings")
        return AuditVerifyView(ok=True, records=0, first_broken=None, reason="empty trail")
    head_seq = int(head_row.value.get("seq", -1))
    if head_seq > last:
        missing = (
            f"record {last + 1} is missing"
            if head_seq == last + 1
            else f"records {last + 1} to {head_seq} are missing"
        )
        return broken(last + 1, f"{missing} (the chain head is at {head_seq})")
    if head_seq < last:
        return broken(
            head_seq + 1, f"it is beyond the chain head ({head_seq}): not appended by runas"
        )
    if head_hash != walk.last_hash:
        return broken(last, "the chain head does not match the newest record")
    return AuditVerifyView(
        ok=True, records=walk.count, first_broken=None, reason="intact", head_hash=head_hash
    )


def check(session: Session) -> AuditVerifyView:
    """:func:`verify`, raising :class:`AuditTrailBroken` if the trail is broken."""
    result = verify(session)
    if not result.ok:
        assert result.first_broken is not None
        raise AuditTrailBroken(result.first_broken, result.reason)
    return result


__all__ = [
    "GENESIS_HASH",
    "HEAD_KEY",
    "AuditAction",
    "AuditRecordView",
    "AuditTrailBroken",
    "AuditVerifyView",
    "Outcome",
    "UnsafeAuditDetails",
    "capped",
    "check",
    "head",
    "list_records",
    "record",
    "record_failure",
    "record_hash",
    "verify",
]
