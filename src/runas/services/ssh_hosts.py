"""SSH host keys the management group trusts (docs/probes/ssh-host-keys.md).

The ``ssh`` probe verifies a target's host key only against the lines the management group
sends every agent (``known_hosts`` in the configuration document): there is no trust on first
use. The life of a key::

    agent reports an offered key ──▶ pending ──approve (host[:port] + exact fingerprint)──▶ trusted
    administrator adds a key ───────────────────────────────────────────────────────────▶ trusted
    remove ──▶ gone (pending or trusted)

* An offer is recorded once per distinct key (``record_offer``, called for each result of an
  agent's report that carries a ``host_key``). Offers come from authenticated agents but prove
  nothing: a pending key is never sent to anyone.
* A **changed** offer: the host already has a trusted key of the same type and offers another
  one. That is what a man-in-the-middle looks like, so besides the pending row it is logged at
  WARNING, audited as ``ssh-host-key:changed`` and opens an alert (source ``ssh-host-key``) on
  the reporting computer until an administrator approves or removes the new key. Approving it
  replaces the old trusted key of that type (the host was re-keyed).
* Approving needs the fingerprint of a pending key exactly (``SHA256:…`` as ``ssh-keygen -l``
  prints it): that is the administrator's explicit first-use decision, made after checking the
  key on the host itself.

Every change is audited. A change of the *trusted* set bumps the configuration epoch, so every
agent fetches a configuration with the new ``known_hosts`` (its ETag is the epoch); a pending
offer changes nothing any agent receives, so it does not (that would make every agent of the
group fetch its configuration again for nothing).

Hosts are kept as they were reported or typed (trimmed): the probe's known_hosts matching is
exact, so the line must carry the host exactly as the workflow's configuration names it.
Administrators' look-ups (approve, remove) ignore case.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import logging
import re
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from runas.errors import Conflict, InvalidInput, NotFound
from runas.runtime import UnitOfWork
from runas.services import lookup
from runas.services.audit import AuditAction, record
from runas.storage.tables import NAME_LENGTH, AlertRow, SshHostKeyRow

_log = logging.getLogger("runas.services.ssh_hosts")

DEFAULT_PORT = 22
#: the alert source of a changed host key
ALERT_SOURCE = "ssh-host-key"
#: who opens and closes changed-key alerts in the audit trail
SYSTEM_ACTOR = "system"
#: host key types a known_hosts line may carry here (certificates and DSA are not accepted)
KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
    }
)
#: base64 length of the largest key blob accepted (RSA up to 8192 bits fits; the column and
#: its unique index are bounded, see ``SshHostKeyRow.key``)
MAX_KEY_CHARS = 2048

HostKeyStatus = Literal["pending", "trusted"]
STATUSES: tuple[HostKeyStatus, ...] = ("pending", "trusted")

# A host name, IPv4 or IPv6 address (with a zone): nothing that known_hosts would read as a
# pattern (* ? !), a list (,), a hashed entry (|), a marker (@) or a comment (#).
_HOST = re.compile(r"[A-Za-z0-9._%:-]+")


# -- views -----------------------------------------------------------------------------------


class SshHostKeyView(BaseModel):
    """One host key (public data)."""

    id: int
    host: str
    port: int
    key_type: str
    #: base64 of the key blob
    key: str
    #: ``SHA256:…`` as ``ssh-keygen -l`` prints it
    fingerprint: str
    status: HostKeyStatus
    #: a pending key of a host whose trusted key of the same type is another one
    changed: bool = False
    first_seen_at: datetime
    #: the agent that reported it; None when an administrator added it
    reported_by: str | None
    approved_by: str | None
    approved_at: datetime | None
    #: the known_hosts line agents receive once it is trusted
    known_hosts_line: str


class SshHostKeyAdd(BaseModel):
    """``POST /api/v1/ssh-hosts``: trust a key an administrator pasted."""

    #: ``host``, ``host:port`` or ``[host]:port``
    host: str = Field(min_length=1, max_length=NAME_LENGTH + 8)
    port: int | None = Field(default=None, ge=1, le=65535)
    #: OpenSSH public key: ``<type> <base64> [comment]`` (or a known_hosts / ssh-keyscan line)
    key: str = Field(min_length=1, max_length=16384)


class SshHostKeyApprove(BaseModel):
    fingerprint: str = Field(min_length=1, max_length=128)


class SshHostKeysRemoved(BaseModel):
    removed: list[SshHostKeyView]


# -- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    key_type: str
    #: base64 of the blob, canonical (no whitespace, padded)
    key: str
    fingerprint: str


def _port(text: str, where: str) -> int:
    if not text.isdecimal() or not 1 <= int(text) <= 65535:
        raise InvalidInput(f"{where}: the port must be a number from 1 to 65535")
    return int(text)


def check_host(host: str) -> str:
    value = host.strip()
    if not value:
        raise InvalidInput("an SSH host needs a name or an address")
    if len(value) > NAME_LENGTH:
        raise InvalidInput(f"SSH host name too long (at most {NAME_LENGTH} characters)")
    if not _HOST.fullmatch(value):
        raise InvalidInput(
            f"{value!r} is not a host name or address (letters, digits, '.', '-', '_', ':' "
            "only; no patterns)"
        )
    return value


def parse_target(text: str, port: int | None = None) -> tuple[str, int]:
    """``(host, port)`` from ``host``, ``host:port``, ``[host]:port`` (an IPv6 address with a
    port) or a bare IPv6 address; ``port`` (when given) is the default when the text names
    none. Port 22 unless said otherwise."""
    value = text.strip()
    default = DEFAULT_PORT if port is None else port
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise InvalidInput(f"{text!r}: missing ']' (use [host]:port)")
        host, rest = value[1:end], value[end + 1 :]
        if not rest:
            found = default
        elif rest.startswith(":"):
            found = _port(rest[1:], text)
        else:
            raise InvalidInput(f"{text!r}: use [host]:port")
    elif value.count(":") == 1:
        host, _, number = value.partition(":")
        found = _port(number, text)
    else:
        host, found = value, default  # a name, or an IPv6 address without a port
    if port is not None and found != port:
        raise InvalidInput(f"{text!r} names port {found}, but the port given is {port}")
    return check_host(host), found


def format_target(host: str, port: int) -> str:
    """``host`` for port 22, else ``host:port`` (``[host]:port`` for IPv6): what the CLI takes."""
    if port == DEFAULT_PORT:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def known_hosts_line(host: str, port: int, key_type: str, key: str) -> str:
    """The OpenSSH known_hosts line: ``host type b64`` on port 22, ``[host]:port type b64``."""
    where = host if port == DEFAULT_PORT else f"[{host}]:{port}"
    return f"{where} {key_type} {key}"


def fingerprint_of(blob: bytes) -> str:
    """``SHA256:`` + base64 (no padding) of the SHA-256 of the key blob, as OpenSSH prints."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def _blob_type(blob: bytes) -> str | None:
    # The blob starts with its own type name (RFC 4253 §6.6): a string, length-prefixed.
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length > 64 or len(blob) < 4 + length:
        return None
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def _key_words(text: str) -> tuple[str, str]:
    """``(type, base64)`` of the one key in ``text``: a public key line (``type b64
    [comment]``), or a known_hosts / ``ssh-keyscan`` line (``host type b64``)."""
    lines = [
        line.strip()
        for line in text.replace("\r", "\n").split("\n")
        if line.strip() and not line.strip().startswith("#")
    ]
    if not lines:
        raise InvalidInput("no SSH public key given (expected '<type> <base64>')")
    if len(lines) > 1:
        raise InvalidInput(
            f"{len(lines)} keys given; give one key at a time ('ssh-keyscan -t ed25519 HOST' "
            "prints one)"
        )
    words = lines[0].split()
    if len(words) >= 2 and words[0] in KEY_TYPES:
        return words[0], words[1]
    if len(words) >= 3 and words[1] in KEY_TYPES:
        return words[1], words[2]
    named = next((w for w in words[:2] if "-" in w and not w.startswith("-")), None)
    if named is not None and len(words) >= 2 and not words[0].startswith(("AAAA", "[")):
        raise InvalidInput(
            f"SSH key type {named!r} is not accepted as a host key (use one of "
            f"{', '.join(sorted(KEY_TYPES))})"
        )
    raise InvalidInput("not an OpenSSH public key (expected '<type> <base64>')")


def parse_public_key(text: str) -> PublicKey:
    """Check an OpenSSH public key and return its canonical form and fingerprint. Raises
    :class:`InvalidInput` with a one-line reason for anything else."""
    key_type, b64 = _key_words(text)
    if len(b64) > MAX_KEY_CHARS:
        raise InvalidInput(f"SSH key too long (at most {MAX_KEY_CHARS} base64 characters)")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the SSH key is not valid base64") from None
    if _blob_type(blob) != key_type:
        raise InvalidInput(f"the SSH key's data is not a {key_type} key")
    canonical = base64.b64encode(blob).decode("ascii")
    try:
        serialization.load_ssh_public_key(f"{key_type} {canonical}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput(f"the SSH key is not a valid {key_type} public key") from None
    return PublicKey(key_type, canonical, fingerprint_of(blob))


# -- reading ---------------------------------------------------------------------------------


def _status(value: str) -> HostKeyStatus:
    for status in STATUSES:
        if status == value:
            return status
    raise ValueError(f"unknown host key status {value!r}")


def _view(row: SshHostKeyRow, changed: bool = False) -> SshHostKeyView:
    return SshHostKeyView(
        id=row.id,
        host=row.host,
        port=row.port,
        key_type=row.key_type,
        key=row.key,
        fingerprint=row.fingerprint,
        status=_status(row.status),
        changed=changed,
        first_seen_at=row.first_seen_at,
        reported_by=row.reported_by,
        approved_by=row.approved_by,
        approved_at=row.approved_at,
        known_hosts_line=known_hosts_line(row.host, row.port, row.key_type, row.key),
    )


def _views(rows: list[SshHostKeyRow]) -> list[SshHostKeyView]:
    trusted = {(r.host, r.port, r.key_type) for r in rows if r.status == "trusted"}
    return [
        _view(r, r.status == "pending" and (r.host, r.port, r.key_type) in trusted) for r in rows
    ]


def _ordered(stmt: Select[SshHostKeyRow]) -> Select[SshHostKeyRow]:
    return stmt.order_by(
        SshHostKeyRow.host, SshHostKeyRow.port, SshHostKeyRow.key_type, SshHostKeyRow.id
    )


def list_keys(
    session: Session, status: str | None = None, host: str | None = None
) -> list[SshHostKeyView]:
    """Every key (pending and trusted), by host and port; ``status`` and ``host[:port]``
    narrow the list. Whether a pending key is a *changed* one is always computed against the
    trusted keys of its host."""
    wanted: str | None = None
    if status is not None:
        wanted = status.strip().lower()
        if wanted not in STATUSES:
            raise InvalidInput(f"unknown host key status {status!r} (use {', '.join(STATUSES)})")
    stmt = _ordered(select(SshHostKeyRow))
    if host is not None:
        name, port = parse_target(host)
        stmt = stmt.where(
            func.lower(SshHostKeyRow.host) == name.lower(), SshHostKeyRow.port == port
        )
    views = _views(list(session.scalars(stmt)))
    return [v for v in views if wanted is None or v.status == wanted]


def known_hosts(session: Session) -> list[str]:
    """The trusted keys as OpenSSH known_hosts lines: what every agent receives."""
    rows = session.scalars(_ordered(select(SshHostKeyRow).where(SshHostKeyRow.status == "trusted")))
    return [known_hosts_line(r.host, r.port, r.key_type, r.key) for r in rows]


def _rows_of(session: Session, host: str, port: int, *, lock: bool) -> list[SshHostKeyRow]:
    stmt = _ordered(
        select(SshHostKeyRow).where(
            func.lower(SshHostKeyRow.host) == host.lower(), SshHostKeyRow.port == port
        )
    )
    if lock:
        stmt = stmt.with_for_update()
    return list(session.scalars(stmt))


# -- alerts of changed keys --------------------------------------------------------------------


def _alert_key(host: str, port: int, key_type: str) -> str:
    return f"{ALERT_SOURCE}:{format_target(host, port)}:{key_type}"


def _alert_details(alert: AlertRow) -> dict[str, object]:
    return {
        "alert": alert.id,
        "computer": alert.computer,
        "state": alert.state,
        "severity": alert.severity,
        "message": alert.message,
    }


def _open_changed_alert(uow: UnitOfWork, row: SshHostKeyRow, previous: str) -> None:
    s = uow.session
    key = _alert_key(row.host, row.port, row.key_type)
    already = s.scalars(
        select(AlertRow).where(AlertRow.key == key, AlertRow.closed_at.is_(None))
    ).first()
    message = (
        f"SSH host key of {format_target(row.host, row.port)} changed: {row.key_type} "
        f"{row.fingerprint} offered, {previous} trusted (possible man-in-the-middle). If the "
        f"host was re-keyed: runas ssh-host approve {format_target(row.host, row.port)} "
        f"--fingerprint {row.fingerprint}"
    )
    system = dataclasses.replace(uow, actor=SYSTEM_ACTOR)
    if already is not None:
        already.message = message
        already.updated_at = uow.now
        return
    alert = AlertRow(
        key=key,
        source=ALERT_SOURCE,
        computer=row.reported_by or "",
        account_id=None,
        object_name=None,
        state="host-key-changed",
        severity="critical",
        message=message,
        opened_at=uow.now,
        updated_at=uow.now,
        closed_at=None,
    )
    s.add(alert)
    s.flush()
    record(system, AuditAction.ALERT_OPEN, key, _alert_details(alert))


def _close_alerts(uow: UnitOfWork, host: str, port: int, key_types: set[str], why: str) -> None:
    keys = sorted(_alert_key(host, port, t) for t in key_types)
    if not keys:
        return
    system = dataclasses.replace(uow, actor=SYSTEM_ACTOR)
    for alert in uow.session.scalars(
        select(AlertRow).where(AlertRow.key.in_(keys), AlertRow.closed_at.is_(None))
    ):
        alert.closed_at = uow.now
        alert.updated_at = uow.now
        record(system, AuditAction.ALERT_CLOSE, alert.key, {**_alert_details(alert), "why": why})


# -- agents' offers ----------------------------------------------------------------------------


def record_offer(uow: UnitOfWork, agent_id: str, host: str, port: int, key: str) -> bool:
    """Record a host key an agent's probe was offered and could not verify (from a report).
    Returns whether it was new. Never raises for what the agent sent: a key that is not valid
    is logged and dropped (the rest of the report is still stored)."""
    try:
        name, _ = parse_target(host, port)
        parsed = parse_public_key(key)
    except InvalidInput as err:
        _log.warning(
            "ssh_host_key.offer_refused",
            extra={"fields": {"agent": agent_id, "port": port, "error": str(err)}},
        )
        return False
    s = uow.session
    values = {
        "host": name,
        "port": port,
        "key_type": parsed.key_type,
        "key": parsed.key,
        "fingerprint": parsed.fingerprint,
        "status": "pending",
        "first_seen_at": uow.now,
        "reported_by": agent_id[:64],
    }
    # Insert-or-nothing on the unique key: two servers may store the same offer at once. The
    # id comes back only when this statement inserted (rowcount is not reliable on every
    # driver for ON CONFLICT DO NOTHING).
    dialect = s.get_bind().dialect.name
    stmt: PgInsert | SqliteInsert
    if dialect == "postgresql":
        stmt = pg_insert(SshHostKeyRow).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite_insert(SshHostKeyRow).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - the two supported databases are above
        raise NotImplementedError(dialect)
    new_id = s.execute(stmt.returning(SshHostKeyRow.id)).scalar_one_or_none()
    if new_id is None:
        return False
    row = s.get(SshHostKeyRow, new_id)
    assert row is not None
    trusted = [
        r
        for r in _rows_of(s, name, port, lock=False)
        if r.status == "trusted" and r.key_type == parsed.key_type and r.host == name
    ]
    target = format_target(name, port)
    details: dict[str, object] = {
        "host": name,
        "port": port,
        "algorithm": parsed.key_type,
        "fingerprint": parsed.fingerprint,
        "agent": agent_id,
    }
    if trusted:
        previous = ", ".join(r.fingerprint for r in trusted)
        _log.warning(
            "ssh_host_key.changed",
            extra={
                "fields": {
                    "agent": agent_id,
                    "target": target,
                    "algorithm": parsed.key_type,
                    "offered": parsed.fingerprint,
                    "trusted": previous,
                }
            },
        )
        record(
            uow,
            AuditAction.SSH_HOST_KEY_CHANGED,
            target,
            {**details, "trusted_fingerprints": [r.fingerprint for r in trusted]},
            outcome="denied",
        )
        _open_changed_alert(uow, row, previous)
    else:
        _log.info(
            "ssh_host_key.offered",
            extra={"fields": {"agent": agent_id, "target": target, "fp": parsed.fingerprint}},
        )
        record(uow, AuditAction.SSH_HOST_KEY_OFFER, target, details)
    return True


# -- administrators' decisions -----------------------------------------------------------------


def _pending_list(rows: list[SshHostKeyRow]) -> str:
    pending = [f"{r.fingerprint} ({r.key_type})" for r in rows if r.status == "pending"]
    return ", ".join(pending) if pending else "none"


def approve(uow: UnitOfWork, target: str, fingerprint: str) -> SshHostKeyView:
    """Trust the pending key of ``host[:port]`` whose fingerprint is exactly ``fingerprint``.
    A changed key replaces the trusted key of its type. Approving a key that is already trusted
    changes nothing."""
    host, port = parse_target(target)
    wanted = fingerprint.strip()
    if not wanted.startswith("SHA256:"):
        raise InvalidInput("give the SHA256 fingerprint as 'ssh-keygen -lf' prints it (SHA256:…)")
    s = uow.session
    rows = _rows_of(s, host, port, lock=True)
    where = format_target(host, port)
    if not rows:
        raise NotFound(f"no SSH host key was offered or added for {where}")
    matching = [r for r in rows if r.fingerprint == wanted]
    done = next((r for r in matching if r.status == "trusted"), None)
    pending = [r for r in matching if r.status == "pending"]
    if not pending:
        if done is not None:
            return _view(done)
        raise Conflict(
            f"no pending SSH host key of {where} has fingerprint {wanted}; pending: "
            f"{_pending_list(rows)}"
        )
    row = pending[0]
    replaced = [
        r
        for r in rows
        if r.status == "trusted" and r.key_type == row.key_type and r.host == row.host
    ]
    for old in replaced:
        s.delete(old)
    row.status = "trusted"
    row.approved_by = uow.actor[:NAME_LENGTH]
    row.approved_at = uow.now
    s.flush()
    lookup.bump_epoch(s)
    record(
        uow,
        AuditAction.SSH_HOST_KEY_APPROVE,
        format_target(row.host, row.port),
        {
            "host": row.host,
            "port": row.port,
            "algorithm": row.key_type,
            "fingerprint": row.fingerprint,
            "reported_by": row.reported_by,
            "replaced_fingerprints": [r.fingerprint for r in replaced],
        },
    )
    _close_alerts(uow, row.host, row.port, {row.key_type}, "approved")
    return _view(row)


def add(uow: UnitOfWork, req: SshHostKeyAdd) -> SshHostKeyView:
    """Trust a key an administrator gives (a pending offer of the same key becomes trusted).
    Other keys of the host stay as they are; adding a trusted key again changes nothing."""
    host, port = parse_target(req.host, req.port)
    parsed = parse_public_key(req.key)
    s = uow.session
    rows = _rows_of(s, host, port, lock=True)
    row = next(
        (
            r
            for r in rows
            if r.host == host and r.key_type == parsed.key_type and r.key == parsed.key
        ),
        None,
    )
    if row is not None and row.status == "trusted":
        return _view(row)
    was_pending = row is not None
    if row is None:
        row = SshHostKeyRow(
            host=host,
            port=port,
            key_type=parsed.key_type,
            key=parsed.key,
            fingerprint=parsed.fingerprint,
            first_seen_at=uow.now,
            reported_by=None,
        )
        s.add(row)
    row.status = "trusted"
    row.approved_by = uow.actor[:NAME_LENGTH]
    row.approved_at = uow.now
    s.flush()
    lookup.bump_epoch(s)
    record(
        uow,
        AuditAction.SSH_HOST_KEY_ADD,
        format_target(host, port),
        {
            "host": host,
            "port": port,
            "algorithm": parsed.key_type,
            "fingerprint": parsed.fingerprint,
            "was_pending": was_pending,
        },
    )
    if not any(r.status == "pending" and r.key_type == parsed.key_type for r in rows):
        _close_alerts(uow, host, port, {parsed.key_type}, "added")
    return _view(row)


def remove(uow: UnitOfWork, target: str, fingerprint: str | None = None) -> list[SshHostKeyView]:
    """Forget the keys of ``host[:port]`` (pending and trusted), or only the one whose
    fingerprint is ``fingerprint``. Returns what was removed."""
    host, port = parse_target(target)
    s = uow.session
    rows = _rows_of(s, host, port, lock=True)
    where = format_target(host, port)
    if not rows:
        raise NotFound(f"no SSH host key was offered or added for {where}")
    if fingerprint is not None:
        wanted = fingerprint.strip()
        chosen = [r for r in rows if r.fingerprint == wanted]
        if not chosen:
            known = ", ".join(f"{r.fingerprint} ({r.key_type}, {r.status})" for r in rows)
            raise NotFound(f"no SSH host key of {where} has fingerprint {wanted}; known: {known}")
    else:
        chosen = rows
    views = _views(rows)
    removed = [v for v in views if v.id in {r.id for r in chosen}]
    for r in chosen:
        s.delete(r)
    s.flush()
    if any(v.status == "trusted" for v in removed):
        lookup.bump_epoch(s)
    record(
        uow,
        AuditAction.SSH_HOST_KEY_REMOVE,
        where,
        {
            "host": host,
            "port": port,
            "removed": [
                {"algorithm": v.key_type, "fingerprint": v.fingerprint, "status": v.status}
                for v in removed
            ],
        },
    )
    left_pending = {r.key_type for r in rows if r not in chosen and r.status == "pending"}
    _close_alerts(uow, host, port, {v.key_type for v in removed} - left_pending, "removed")
    return removed


__all__ = [
    "ALERT_SOURCE",
    "DEFAULT_PORT",
    "KEY_TYPES",
    "PublicKey",
    "SshHostKeyAdd",
    "SshHostKeyApprove",
    "SshHostKeyView",
    "SshHostKeysRemoved",
    "add",
    "approve",
    "check_host",
    "fingerprint_of",
    "format_target",
    "known_hosts",
    "known_hosts_line",
    "list_keys",
    "parse_public_key",
    "parse_target",
    "record_offer",
    "remove",
]
