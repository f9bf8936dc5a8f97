"""Agents: enrolment, approval, the management group's CA, and who an agent certificate is.

How an agent joins (docs/agents.md)::

    enrol(id, HPKE key, CSR, token?) ──▶ pending ──approve──▶ approved (certificate issued)
                    │                       └─────reject───▶ rejected
                    └─ a valid one-time token for this computer: approved at once

    remove ──▶ the row is deleted: the agent's certificate names nobody any more, and the
               computer may enrol again, with new keys.

The CA (``group_ca``) is the management group's own: created on first use, its certificate
stored in clear and its private key sealed under the keyring like a secret version, at the
envelope place reserved for group keys (account id 0, version 1), so a stolen database without
the keyring issues nothing and key rotation re-wraps it (``services/keys.py``).

Every request of an agent that holds a certificate is checked by :func:`identify`: the
certificate must be the group CA's, name an agent that still exists and is approved, and carry
the serial the row holds — so a removed agent that enrolled again makes its old certificate
worthless. There is no revocation list: the database is the list.

Enrolment is the one write anybody who reaches the agent listener can make, so new pending
requests are limited (:class:`EnrolLimits`): per source address within a window, and in total.
An agent asking again, or bringing a valid token, is never refused by them.

Enrolment tokens are shown once and stored as their SHA-256; neither they nor any key appear in
an audit record. Approving, rejecting and removing bump the resolution epoch: what an agent is
given depends on whether it is approved.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from runas.crypto import envelope
from runas.crypto.ca import (
    CertificateAuthority,
    agent_id_of,
    check_agent_id,
    load_csr,
    verify_issued,
)
from runas.crypto.keyring import Keyring
from runas.crypto.sealing import check_public_key
from runas.errors import (
    AgentNotApproved,
    AgentRemoved,
    Conflict,
    InvalidInput,
    NotFound,
    TooManyRequests,
)
from runas.runtime import UnitOfWork
from runas.services import lookup
from runas.services.audit import AuditAction, record
from runas.storage.tables import AgentRow, EnrolmentTokenRow, GroupKeyRow

#: ``group_keys.name`` of the agent CA
CA_KEY_NAME = "agent-ca"
#: the envelope place of group keys: no account has id 0 (ids start at 1)
GROUP_KEY_ACCOUNT_ID = 0
GROUP_KEY_VERSION = 1
#: the ``mg_settings`` key of the management group's name (``services/setup.py``)
_MG_NAME_KEY = "management_group"

TOKEN_PREFIX = "rae_"  # noqa: S105 - a prefix, not a token
TOKEN_BYTES = 32
DEFAULT_TOKEN_LIFETIME = timedelta(hours=1)
MIN_TOKEN_LIFETIME = timedelta(minutes=1)
MAX_TOKEN_LIFETIME = timedelta(days=7)
#: used and expired tokens are kept this long (for ``agent:enrol`` records to name), then purged
TOKEN_RETENTION = timedelta(days=30)

#: an agent's last-seen time is written at most this often (every poll would be a write)
TOUCH_INTERVAL = timedelta(seconds=30)
#: an approved agent that enrols again gets a new certificate when its own ends within this
RENEW_BEFORE = timedelta(days=30)

AgentStatus = Literal["pending", "approved", "rejected"]
STATUSES: tuple[AgentStatus, ...] = ("pending", "approved", "rejected")
_CN_LIMIT = 64

# -- views ---------------------------------------------------------------------------------


class EnrolRequest(BaseModel):
    """What an agent sends to ``POST /agent/v1/enrol`` (docs/agents.md)."""

    agent_id: str = Field(min_length=1, max_length=64)
    #: base64 of the agent's X25519 public key (32 bytes)
    hpke_public_key: str = Field(min_length=1, max_length=128)
    #: PEM certificate signing request for the agent's TLS key
    csr: str = Field(min_length=1, max_length=16_384)
    token: SecretStr | None = Field(default=None, max_length=256)
    agent_version: str = Field(default="", max_length=64)


class EnrolAnswer(BaseModel):
    status: AgentStatus
    #: the client certificate (PEM) once approved
    certificate: str | None = None


class AgentView(BaseModel):
    """An agent as administrators see it (never its keys: only a fingerprint of the TLS key,
    to compare with the computer's before approving)."""

    id: str
    status: AgentStatus
    management_server: bool
    agent_version: str
    enrolled_at: datetime
    enrolled_from: str
    decided_at: datetime | None
    decided_by: str | None
    last_seen_at: datetime | None
    last_seen_from: str
    #: the configuration epoch the agent last fetched
    last_epoch: int
    cert_not_after: datetime | None
    #: SHA-256 (hex) of the TLS public key the agent enrolled with (SubjectPublicKeyInfo)
    key_fingerprint: str


class EnrolmentTokenCreate(BaseModel):
    computer: str = Field(min_length=1, max_length=64)
    #: seconds until the token expires
    expires_in: int = Field(
        default=int(DEFAULT_TOKEN_LIFETIME.total_seconds()),
        ge=int(MIN_TOKEN_LIFETIME.total_seconds()),
        le=int(MAX_TOKEN_LIFETIME.total_seconds()),
    )


class EnrolmentTokenCreated(BaseModel):
    id: int
    #: the token itself, shown this once (only its SHA-256 is stored)
    token: str = Field(repr=False)
    computer: str
    expires_at: datetime


class AgentCaView(BaseModel):
    """The agent CA's certificate: what agents trust (their ``ca_file``)."""

    subject: str
    #: SHA-256 fingerprint (hex) of the certificate (DER)
    sha256: str
    not_before: datetime
    not_after: datetime
    #: the certificate, PEM
    certificate: str


def agent_view(row: AgentRow) -> AgentView:
    return AgentView(
        id=row.id,
        status=_status(row.status),
        management_server=row.management_server,
        agent_version=row.agent_version,
        enrolled_at=row.enrolled_at,
        enrolled_from=row.enrolled_from,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        last_seen_at=row.last_seen_at,
        last_seen_from=row.last_seen_from,
        last_epoch=row.last_epoch,
        cert_not_after=row.cert_not_after,
        key_fingerprint=row.tls_key_sha256,
    )


def _status(value: str) -> AgentStatus:
    for status in STATUSES:
        if status == value:
            return status
    raise ValueError(f"unknown agent status {value!r}")


# -- the group CA --------------------------------------------------------------------------


def group_ca(uow: UnitOfWork) -> CertificateAuthority:
    """The management group's agent CA, created on first use (needs the keyring)."""
    row = uow.session.get(GroupKeyRow, CA_KEY_NAME)
    if row is None:
        row = _create_ca(uow)
    return _open_ca(uow.keyring(), row)


def _open_ca(keyring: Keyring, row: GroupKeyRow) -> CertificateAuthority:
    sealed = envelope.SealedSecret(row.kek_id, bytes(row.wrapped_dek), bytes(row.ciphertext))
    key_pem = envelope.open_secret(
        keyring, account_id=GROUP_KEY_ACCOUNT_ID, version=GROUP_KEY_VERSION, sealed=sealed
    )
    return CertificateAuthority.load(row.cert_pem.encode("ascii"), key_pem)


def _ca_name(session: Session) -> str:
    name = str(lookup.setting(session, _MG_NAME_KEY) or "management group")
    room = _CN_LIMIT - len("runas  agent CA")
    return f"runas {name[:room]} agent CA"


def _create_ca(uow: UnitOfWork) -> GroupKeyRow:
    """Create the CA, unless another server creates it at the same moment: then that one is
    the group's (insert-or-nothing on the name, then read back what is stored)."""
    s = uow.session
    ca = CertificateAuthority.create(_ca_name(s), now=uow.now)
    cert_pem, key_pem = ca.to_pem(None)
    sealed = envelope.seal_secret(
        uow.keyring(),
        account_id=GROUP_KEY_ACCOUNT_ID,
        version=GROUP_KEY_VERSION,
        plaintext=key_pem,
    )
    values = {
        "name": CA_KEY_NAME,
        "cert_pem": cert_pem.decode("ascii"),
        "kek_id": sealed.kek_id,
        "wrapped_dek": sealed.wrapped_dek,
        "ciphertext": sealed.ciphertext,
        "created_at": uow.now,
    }
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        s.execute(pg_insert(GroupKeyRow).values(values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        s.execute(sqlite_insert(GroupKeyRow).values(values).on_conflict_do_nothing())
    else:  # pragma: no cover - the two supported databases are above
        s.add(GroupKeyRow(**values))
        s.flush()
    row = s.get(GroupKeyRow, CA_KEY_NAME, populate_existing=True)
    assert row is not None
    if row.cert_pem == values["cert_pem"]:
        record(
            uow,
            AuditAction.AGENT_CA_CREATE,
            CA_KEY_NAME,
            {"subject": ca.subject, "sha256": _fingerprint(ca.certificate)},
        )
    return row


@lru_cache(maxsize=8)
def _ca_certificate(cert_pem: str) -> x509.Certificate:
    # Parsed once per CA (identify runs for every agent connection the listener has not
    # seen yet); keyed by the PEM itself, so a new CA is never confused with the old one.
    return x509.load_pem_x509_certificate(cert_pem.encode("ascii"))


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def ca_view(uow: UnitOfWork) -> AgentCaView:
    """The CA certificate, creating the CA if it does not exist yet."""
    row = uow.session.get(GroupKeyRow, CA_KEY_NAME)
    if row is None:
        group_ca(uow)
        row = uow.session.get(GroupKeyRow, CA_KEY_NAME)
        assert row is not None
    return _ca_view(row)


def find_ca(session: Session) -> AgentCaView | None:
    """The CA certificate, or None before the CA exists (reads only)."""
    row = session.get(GroupKeyRow, CA_KEY_NAME)
    return None if row is None else _ca_view(row)


def _ca_view(row: GroupKeyRow) -> AgentCaView:
    cert = _ca_certificate(row.cert_pem)
    return AgentCaView(
        subject=cert.subject.rfc4514_string(),
        sha256=_fingerprint(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        certificate=row.cert_pem,
    )


def server_certificate(
    uow: UnitOfWork, *, hostnames: list[str], ips: list[str]
) -> tuple[bytes, bytes]:
    """A new key and a server certificate for the agent listener: ``(cert PEM, key PEM)``."""
    return group_ca(uow).issue_server_certificate(hostnames=hostnames, ips=ips, now=uow.now)


# -- enrolment -----------------------------------------------------------------------------


def _hpke_key(value: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("hpke_public_key must be base64") from None
    return check_public_key(raw)


def _csr_key_sha256(csr_pem: bytes) -> str:
    csr = load_csr(csr_pem)
    spki = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _csr_bytes(csr: str) -> bytes:
    try:
        return csr.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidInput("not a PEM certificate signing request") from None


def _same_keys(row: AgentRow, hpke: bytes, tls_sha256: str) -> bool:
    return bytes(row.hpke_public_key) == hpke and row.tls_key_sha256 == tls_sha256


@dataclass(frozen=True)
class EnrolLimits:
    """How many new pending enrolment requests the listener accepts (server settings
    ``enrol_per_source``, ``enrol_window``, ``max_pending_enrolments``). A request for an
    agent already enrolled (agents repeat theirs until approved) and one approved at once by
    its token are never refused by them."""

    #: new pending requests from one source address within ``window``
    per_source: int = 50
    window: timedelta = timedelta(minutes=10)
    #: pending requests in the whole management group
    max_pending: int = 1000


class EnrolmentRateLimited(TooManyRequests):
    """Too many new enrolment requests; ``retry_after`` seconds (sent as ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _check_enrol_limits(uow: UnitOfWork, limits: EnrolLimits) -> None:
    s = uow.session
    source = uow.source[:128]
    since = uow.now - limits.window
    count, oldest = s.execute(
        select(func.count(), func.min(AgentRow.enrolled_at)).where(
            AgentRow.status == "pending",
            AgentRow.enrolled_from == source,
            AgentRow.enrolled_at > since,
        )
    ).one()
    if count >= limits.per_source:
        wait = (oldest + limits.window - uow.now).total_seconds() if oldest else 60.0
        raise EnrolmentRateLimited(
            f"too many new enrolment requests from {source or 'this address'}"
            f" ({count} in {_minutes(limits.window)}); try again later or use an enrolment token",
            retry_after=max(1, math.ceil(wait)),
        )
    pending = s.scalar(select(func.count()).where(AgentRow.status == "pending")) or 0
    if pending >= limits.max_pending:
        raise EnrolmentRateLimited(
            f"{pending} enrolment requests are waiting for approval (at most"
            f" {limits.max_pending}): approve or reject some first",
            retry_after=60,
        )


def _minutes(window: timedelta) -> str:
    minutes = window.total_seconds() / 60
    return f"{minutes:g} minute{'s' if minutes != 1 else ''}"


def hash_enrolment_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _usable_token(
    uow: UnitOfWork, token: SecretStr | None, agent_id: str
) -> tuple[EnrolmentTokenRow | None, str | None]:
    """(the token row if the token approves ``agent_id`` now, why not otherwise). The row is
    locked, so two servers cannot both spend it."""
    value = token.get_secret_value().strip() if token is not None else ""
    if not value:
        return None, None
    row = uow.session.scalars(
        select(EnrolmentTokenRow)
        .where(EnrolmentTokenRow.token_hash == hash_enrolment_token(value))
        .with_for_update()
    ).one_or_none()
    if row is None:
        return None, "unknown enrolment token"
    if row.computer != agent_id:
        return None, f"enrolment token {row.id} is for another computer"
    if row.used_at is not None:
        return None, f"enrolment token {row.id} was already used"
    if row.expires_at <= uow.now:
        return None, f"enrolment token {row.id} has expired"
    return row, None


def _issue(uow: UnitOfWork, row: AgentRow, decided_by: str) -> None:
    """Approve ``row``: a new client certificate over its enrolled key."""
    pem = group_ca(uow).issue_agent_certificate(
        row.csr_pem.encode("ascii"), agent_id=row.id, now=uow.now
    )
    cert = x509.load_pem_x509_certificate(pem)
    row.status = "approved"
    row.cert_pem = pem.decode("ascii")
    row.cert_serial = format(cert.serial_number, "x")
    row.cert_not_after = cert.not_valid_after_utc
    row.decided_at = uow.now
    row.decided_by = decided_by[:255]


def _approve_with_token(uow: UnitOfWork, row: AgentRow, token: EnrolmentTokenRow) -> None:
    token.used_at = uow.now
    _issue(uow, row, f"{token.created_by} (enrolment token {token.id})")
    uow.session.flush()
    lookup.bump_epoch(uow.session)
    record(
        uow,
        AuditAction.AGENT_APPROVE,
        row.id,
        {"token_id": token.id, "cert_serial": row.cert_serial},
    )


def _renew_if_due(uow: UnitOfWork, row: AgentRow) -> None:
    """Issue an approved agent's certificate again when it ends soon, or when the group's CA
    is no longer the one that issued it."""
    assert row.cert_pem is not None
    ca_row = uow.session.get(GroupKeyRow, CA_KEY_NAME)
    due = ca_row is None
    if ca_row is not None:
        try:
            cert = verify_issued(
                _ca_certificate(ca_row.cert_pem), row.cert_pem.encode(), now=uow.now
            )
        except InvalidInput:
            due = True
        else:
            due = cert.not_valid_after_utc - uow.now < RENEW_BEFORE
    if not due:
        return
    old_serial = row.cert_serial
    assert row.decided_by is not None
    decided_at = row.decided_at
    _issue(uow, row, row.decided_by)
    row.decided_at = decided_at  # a renewal is no new decision
    uow.session.flush()
    record(
        uow,
        AuditAction.AGENT_RENEW,
        row.id,
        {"cert_serial": row.cert_serial, "previous_cert_serial": old_serial},
    )


def enrol(uow: UnitOfWork, req: EnrolRequest, *, limits: EnrolLimits | None = None) -> EnrolAnswer:
    """An agent asks to join, or asks again how its request stands (idempotent: agents repeat
    it until approved). See the module docstring for the outcomes. A new request without a
    usable token is refused (:class:`EnrolmentRateLimited`) past ``limits``: the agent
    listener passes its settings; None (no limit) is for the administrator's own tools."""
    agent_id = check_agent_id(req.agent_id.strip()).lower()
    uow.actor = f"agent:{agent_id}"
    hpke = _hpke_key(req.hpke_public_key)
    csr_pem = _csr_bytes(req.csr)
    tls_sha256 = _csr_key_sha256(csr_pem)
    s = uow.session
    row = s.get(AgentRow, agent_id, with_for_update=True)
    if row is not None:
        if not _same_keys(row, hpke, tls_sha256):
            raise Conflict(
                f"agent {agent_id} is already enrolled with other keys; remove it first "
                f"('runas agent remove {agent_id}')"
            )
        return _enrol_again(uow, row, req)

    token, refusal = _usable_token(uow, req.token, agent_id)
    if token is None and limits is not None:
        _check_enrol_limits(uow, limits)
    row = AgentRow(
        id=agent_id,
        status="pending",
        hpke_public_key=hpke,
        tls_key_sha256=tls_sha256,
        csr_pem=csr_pem.decode("ascii"),
        agent_version=req.agent_version,
        management_server=False,
        enrolled_at=uow.now,
        enrolled_from=uow.source[:128],
        last_epoch=0,
    )
    s.add(row)
    s.flush()
    details: dict[str, object] = {"agent_version": req.agent_version, "tls_fingerprint": tls_sha256}
    if refusal is not None:
        details["refusal"] = refusal
    record(uow, AuditAction.AGENT_ENROL, agent_id, details)
    if token is not None:
        _approve_with_token(uow, row, token)
    return _answer(row)


def _enrol_again(uow: UnitOfWork, row: AgentRow, req: EnrolRequest) -> EnrolAnswer:
    if row.agent_version != req.agent_version:
        record(
            uow,
            AuditAction.AGENT_ENROL,
            row.id,
            {"agent_version": req.agent_version, "previous_agent_version": row.agent_version},
        )
        row.agent_version = req.agent_version
        uow.session.flush()
    if row.status == "pending":
        # A token refused here is not recorded again: the agent repeats its request every
        # poll, and the first refusal is in the trail.
        token, _ = _usable_token(uow, req.token, row.id)
        if token is not None:
            _approve_with_token(uow, row, token)
    elif row.status == "approved":
        _renew_if_due(uow, row)
    return _answer(row)


def _answer(row: AgentRow) -> EnrolAnswer:
    status = _status(row.status)
    return EnrolAnswer(status=status, certificate=row.cert_pem if status == "approved" else None)


def register_management_server(
    uow: UnitOfWork, agent_id: str, hpke_public_key: bytes, csr_pem: bytes
) -> bytes:
    """Enrol and approve a management server's own agent in one step; return its certificate
    (PEM). The server holds the CA, so there is nothing for an administrator to vouch for; a
    server whose keys changed (a new data directory) is registered again with the new ones.
    An ordinary agent of the same name is refused: remove it first."""
    agent_id = check_agent_id(agent_id.strip()).lower()
    hpke = check_public_key(hpke_public_key)
    tls_sha256 = _csr_key_sha256(csr_pem)
    s = uow.session
    row = s.get(AgentRow, agent_id, with_for_update=True)
    if row is not None and not row.management_server:
        raise Conflict(
            f"agent {agent_id} is already enrolled as an ordinary agent; remove it first "
            f"('runas agent remove {agent_id}')"
        )
    if row is not None and row.status == "approved" and _same_keys(row, hpke, tls_sha256):
        _renew_if_due(uow, row)
        assert row.cert_pem is not None
        return row.cert_pem.encode("ascii")
    details: dict[str, object] = {"management_server": True, "tls_fingerprint": tls_sha256}
    if row is None:
        row = AgentRow(
            id=agent_id,
            status="pending",
            hpke_public_key=hpke,
            tls_key_sha256=tls_sha256,
            csr_pem=csr_pem.decode("ascii"),
            management_server=True,
            enrolled_at=uow.now,
            enrolled_from=uow.source[:128],
            last_epoch=0,
            agent_version="",
        )
        s.add(row)
    else:
        details["rekeyed"] = not _same_keys(row, hpke, tls_sha256)
        row.hpke_public_key = hpke
        row.tls_key_sha256 = tls_sha256
        row.csr_pem = csr_pem.decode("ascii")
    s.flush()
    _issue(uow, row, uow.actor)
    s.flush()
    lookup.bump_epoch(s)
    record(uow, AuditAction.AGENT_ENROL, agent_id, details)
    record(uow, AuditAction.AGENT_APPROVE, agent_id, {"cert_serial": row.cert_serial})
    assert row.cert_pem is not None
    return row.cert_pem.encode("ascii")


# -- administrators' decisions -------------------------------------------------------------


def _find(session: Session, agent_id: str, *, for_update: bool = False) -> AgentRow:
    key = agent_id.strip().lower()
    row = session.get(AgentRow, key, with_for_update=for_update) if key else None
    if row is None:
        raise NotFound(f"no agent named {agent_id!r}")
    return row


def approve(uow: UnitOfWork, agent_id: str) -> AgentView:
    """Approve a pending (or rejected) agent: issue its client certificate. Approving an
    approved agent changes nothing."""
    row = _find(uow.session, agent_id, for_update=True)
    if row.status == "approved":
        return agent_view(row)
    previous = row.status
    _issue(uow, row, uow.actor)
    uow.session.flush()
    lookup.bump_epoch(uow.session)
    record(
        uow,
        AuditAction.AGENT_APPROVE,
        row.id,
        {"previous_status": previous, "cert_serial": row.cert_serial},
    )
    return agent_view(row)


def reject(uow: UnitOfWork, agent_id: str) -> AgentView:
    """Reject a pending agent, or stop an approved one: its certificate is refused from now
    on (``agent-not-approved``). Rejecting a rejected agent changes nothing."""
    row = _find(uow.session, agent_id, for_update=True)
    if row.status == "rejected":
        return agent_view(row)
    if row.management_server:
        raise Conflict(
            f"agent {row.id} is a management server's own agent and cannot be rejected "
            "(the server holds the CA); remove the server from the management group instead"
        )
    previous = row.status
    row.status = "rejected"
    # The serial stays, so that the certificate is told "not approved" rather than "removed".
    row.cert_pem = None
    row.cert_not_after = None
    row.decided_at = uow.now
    row.decided_by = uow.actor[:255]
    uow.session.flush()
    lookup.bump_epoch(uow.session)
    record(uow, AuditAction.AGENT_REJECT, row.id, {"previous_status": previous})
    return agent_view(row)


def remove(uow: UnitOfWork, agent_id: str) -> str:
    """Delete an agent: its certificate is refused from now on (``agent-removed``) and the
    computer may enrol again, with new keys."""
    row = _find(uow.session, agent_id, for_update=True)
    removed, previous = row.id, row.status
    uow.session.delete(row)
    uow.session.flush()
    lookup.bump_epoch(uow.session)
    record(uow, AuditAction.AGENT_REMOVE, removed, {"previous_status": previous})
    return removed


def list_agents(session: Session, status: str | None = None) -> list[AgentView]:
    stmt = select(AgentRow).order_by(AgentRow.id)
    if status is not None:
        wanted = status.strip().lower()
        if wanted not in STATUSES:
            raise InvalidInput(f"unknown agent status {status!r} (use {', '.join(STATUSES)})")
        stmt = stmt.where(AgentRow.status == wanted)
    return [agent_view(r) for r in session.scalars(stmt)]


def show(session: Session, agent_id: str) -> AgentView:
    return agent_view(_find(session, agent_id))


def create_enrolment_token(
    uow: UnitOfWork, computer: str, expires_in: timedelta = DEFAULT_TOKEN_LIFETIME
) -> EnrolmentTokenCreated:
    """A one-time token that approves the agent of ``computer`` when it enrols. The token is
    in the result and nowhere else (its SHA-256 is stored)."""
    name = check_agent_id(computer.strip()).lower()
    if not MIN_TOKEN_LIFETIME <= expires_in <= MAX_TOKEN_LIFETIME:
        raise InvalidInput("an enrolment token lasts from 1 minute to 7 days")
    s = uow.session
    s.execute(
        delete(EnrolmentTokenRow).where(EnrolmentTokenRow.expires_at < uow.now - TOKEN_RETENTION)
    )
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    row = EnrolmentTokenRow(
        token_hash=hash_enrolment_token(token),
        computer=name,
        created_at=uow.now,
        created_by=uow.actor[:255],
        expires_at=uow.now + expires_in,
    )
    s.add(row)
    s.flush()
    record(
        uow,
        AuditAction.AGENT_TOKEN_CREATE,
        name,
        {"token_id": row.id, "expires_at": row.expires_at.isoformat()},
    )
    return EnrolmentTokenCreated(id=row.id, token=token, computer=name, expires_at=row.expires_at)


# -- agents' requests ----------------------------------------------------------------------


def identify(session: Session, cert_der: bytes, *, now: datetime) -> AgentRow:
    """The approved agent a client certificate (DER, or PEM) stands for.

    Raises :class:`AgentRemoved` when the certificate is not the group CA's (or no longer
    valid), names no agent, or is not the agent's current certificate (it was removed and
    enrolled again); :class:`AgentNotApproved` when the agent is pending or rejected. Reads
    only; needs no keyring."""
    ca_row = session.get(GroupKeyRow, CA_KEY_NAME)
    if ca_row is None:
        raise AgentRemoved("this management group has no agent CA yet: enrol again")
    try:
        cert = verify_issued(_ca_certificate(ca_row.cert_pem), cert_der, now=now)
        agent_id = agent_id_of(cert).lower()
    except InvalidInput as err:
        raise AgentRemoved(
            f"the client certificate is not usable here ({err}): enrol again"
        ) from None
    row = session.get(AgentRow, agent_id)
    if row is None:
        raise AgentRemoved(f"agent {agent_id} is not in this management group: enrol again")
    if row.cert_serial != format(cert.serial_number, "x"):
        raise AgentRemoved(
            f"agent {agent_id} was removed and enrolled again: this certificate is not its own"
        )
    if row.status != "approved":
        raise AgentNotApproved(f"agent {agent_id} is {row.status}, not approved")
    return row


def touch(session: Session, agent_id: str, *, now: datetime, source: str, epoch: int) -> bool:
    """Note that the agent was seen (from ``source``, holding configuration ``epoch``). Written
    only when something changed or the last note is older than :data:`TOUCH_INTERVAL`, with a
    plain UPDATE that leaves ``row_version`` alone (nobody's change conflicts with it).
    Returns whether it wrote."""
    row = session.get(AgentRow, agent_id)
    if row is None:
        return False
    source = source[:128]
    if not needs_touch((row.last_seen_at, row.last_seen_from, row.last_epoch), now, source, epoch):
        return False
    session.execute(
        update(AgentRow)
        .where(AgentRow.id == agent_id)
        .values(last_seen_at=now, last_seen_from=source, last_epoch=epoch)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(row, "last_seen_at", now)
    set_committed_value(row, "last_seen_from", source)
    set_committed_value(row, "last_epoch", epoch)
    return True


Seen = tuple[datetime | None, str | None, int | None]


def needs_touch(seen: Seen, now: datetime, source: str, epoch: int) -> bool:
    """Whether an agent last noted as ``seen`` (last_seen_at, last_seen_from, last_epoch) must
    be noted again: something changed, or the note is older than :data:`TOUCH_INTERVAL`."""
    at, was_from, was_epoch = seen
    return not (
        at is not None
        and now - at < TOUCH_INTERVAL
        and was_from == source[:128]
        and was_epoch == epoch
    )


def touch_many(session: Session, notes: list[tuple[str, datetime, str, int]]) -> None:
    """Note many agents as seen at once (agent id, when, from, epoch): one UPDATE statement
    executed for all of them (the deliveries of a group commit), ``row_version`` left alone.
    The caller decided with :func:`needs_touch` which ones need it."""
    if not notes:
        return
    table = AgentRow.__table__
    assert isinstance(table, Table)
    session.execute(
        table.update()
        .where(table.c.id == bindparam("agent"))
        .values(
            last_seen_at=bindparam("at", type_=table.c.last_seen_at.type),
            last_seen_from=bindparam("src", type_=table.c.last_seen_from.type),
            last_epoch=bindparam("ep", type_=table.c.last_epoch.type),
        ),
        [
            {"agent": agent_id, "at": at, "src": source[:128], "ep": epoch}
            for agent_id, at, source, epoch in notes
        ],
    )


__all__ = [
    "CA_KEY_NAME",
    "AgentCaView",
    "AgentStatus",
    "AgentView",
    "EnrolAnswer",
    "EnrolRequest",
    "EnrolmentTokenCreate",
    "EnrolmentTokenCreated",
    "agent_view",
    "approve",
    "ca_view",
    "create_enrolment_token",
    "enrol",
    "find_ca",
    "group_ca",
    "identify",
    "list_agents",
    "needs_touch",
    "register_management_server",
    "reject",
    "remove",
    "server_certificate",
    "show",
    "touch",
    "touch_many",
]
