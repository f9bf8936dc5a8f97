"""Run As accounts: create, list, show, update (new secret version), remove.

Secrets arrive as :class:`pydantic.SecretStr` and leave this module only encrypted; no view
returned from here carries one.
"""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runas.crypto.envelope import SealedSecret, open_secret, seal_secret
from runas.domain.accounts import (
    AccountType,
    DistributionMode,
    display_identity,
    parse_account_type,
    validate_account,
)
from runas.errors import AccountValidationError, AlreadyExists, InUse
from runas.runtime import UnitOfWork
from runas.services import audit, lookup
from runas.services.audit import AuditAction
from runas.storage.tables import AccountRow, AssociationRow, DistributionRow, SecretVersionRow

NAME_MAX = 200


class AccountCreate(BaseModel):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    type: str
    description: str = ""
    fields: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    expires_at: datetime | None = None


class AccountUpdate(BaseModel):
    description: str | None = None
    fields: dict[str, str | None] = Field(default_factory=dict)
    #: when given, the new secret version holds exactly these secrets
    secrets: dict[str, SecretStr] | None = None
    expires_at: datetime | None = None
    clear_expiry: bool = False
    rename: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)


class SecretVersionView(BaseModel):
    version: int
    created_at: datetime
    created_by: str
    kek_id: str
    current: bool


class AssociationRef(BaseModel):
    id: int
    profile: str
    target_kind: str
    target: str | None
    enforced: bool


class AccountSummary(BaseModel):
    id: int
    name: str
    type: str
    identity: str
    description: str
    secret_version: int
    distribution: str
    distributed_to: int
    associations: int
    expires_at: datetime | None


class AccountView(BaseModel):
    id: int
    name: str
    type: str
    identity: str
    description: str
    fields: dict[str, str]
    secret_version: int
    versions: list[SecretVersionView]
    distribution: str
    computers: list[str]
    associations: list[AssociationRef]
    expires_at: datetime | None
    created_at: datetime
    created_by: str
    modified_at: datetime
    modified_by: str


def _check_name(name: str) -> str:
    clean = name.strip()
    if not clean:
        raise AccountValidationError("an account name cannot be empty")
    if clean.isdecimal():
        raise AccountValidationError(
            f"account name {clean!r} is all digits, which reads as an account id: choose a name"
        )
    if any(ord(ch) < 32 for ch in clean):
        raise AccountValidationError("an account name cannot contain control characters")
    return clean


def _plain(secrets: dict[str, SecretStr]) -> dict[str, str]:
    return {k: v.get_secret_value() for k, v in secrets.items()}


def _seal(uow: UnitOfWork, account_id: int, version: int, secrets: dict[str, str]) -> SealedSecret:
    plaintext = json.dumps(secrets, sort_keys=True, separators=(",", ":")).encode()
    return seal_secret(uow.keyring(), account_id=account_id, version=version, plaintext=plaintext)


def _store_version(uow: UnitOfWork, row: AccountRow, version: int, secrets: dict[str, str]) -> None:
    sealed = _seal(uow, row.id, version, secrets)
    uow.session.add(
        SecretVersionRow(
            account_id=row.id,
            version=version,
            kek_id=sealed.kek_id,
            wrapped_dek=sealed.wrapped_dek,
            ciphertext=sealed.ciphertext,
            created_at=uow.now,
            created_by=uow.actor,
        )
    )
    row.current_version = version


def decrypt_secrets(
    uow: UnitOfWork, account_id: int, version: int, *, purpose: str
) -> dict[str, str]:
    """The secret fields of one version, for the code paths that must hand them on (agents,
    validation of an update). Never returned by an API or printed by the CLI.

    Every use is audited (``account:secret-use`` with ``purpose``) in ``uow``'s transaction."""
    data = decrypt_unaudited(uow, account_id, version)
    if data:
        record_secret_use(uow, account_id, version, purpose=purpose, fields=sorted(data))
    return data


def decrypt_unaudited(uow: UnitOfWork, account_id: int, version: int) -> dict[str, str]:
    """:func:`decrypt_secrets` without its audit record, for a caller that records the use
    itself (:func:`record_secret_use`) in a later transaction **before** the secret leaves
    the server (an agent's configuration is built in a read-only transaction, so that many
    can be built at once, and its uses are written in one short write)."""
    sv = uow.session.get(SecretVersionRow, (account_id, version))
    if sv is None:
        return {}
    sealed = SealedSecret(kek_id=sv.kek_id, wrapped_dek=sv.wrapped_dek, ciphertext=sv.ciphertext)
    plaintext = open_secret(uow.keyring(), account_id=account_id, version=version, sealed=sealed)
    data: dict[str, str] = json.loads(plaintext)
    return data


def record_secret_use(
    uow: UnitOfWork,
    account_id: int,
    version: int,
    *,
    purpose: str,
    fields: list[str],
    name: str | None = None,
) -> None:
    """Audit a use of the secret (``account:secret-use``). ``name``: the account's name when
    the caller has read it already."""
    if name is None:
        name = uow.session.scalar(select(AccountRow.name).where(AccountRow.id == account_id))
    audit.record(
        uow,
        AuditAction.ACCOUNT_SECRET_USE,
        name or str(account_id),
        {"secret_version": version, "purpose": purpose, "fields": fields},
    )


def add(uow: UnitOfWork, req: AccountCreate) -> AccountView:
    s = uow.session
    name = _check_name(req.name)
    account_type = parse_account_type(req.type)
    public, secrets = validate_account(account_type, req.fields, _plain(req.secrets))
    if s.scalars(select(AccountRow.id).where(AccountRow.name == name)).first() is not None:
        raise AlreadyExists(f"a Run As account named {name!r} already exists")
    row = AccountRow(
        name=name,
        type=account_type.value,
        description=req.description,
        public_fields=public,
        current_version=0,
        expires_at=req.expires_at,
        distribution_mode=DistributionMode.MORE_SECURE.value,
        created_at=uow.now,
        created_by=uow.actor,
        modified_at=uow.now,
        modified_by=uow.actor,
    )
    s.add(row)
    try:
        s.flush()  # the id is part of the ciphertext's associated data
    except IntegrityError:
        raise AlreadyExists(f"a Run As account named {name!r} already exists") from None
    _store_version(uow, row, 1, secrets)
    lookup.bump_epoch(s)
    s.flush()
    audit.record(
        uow,
        AuditAction.ACCOUNT_CREATE,
        name,
        {
            "type": account_type.value,
            "fields": sorted(public),
            "secret_fields": sorted(secrets),
            "secret_version": 1,
        },
    )
    return view(s, row)


def update(uow: UnitOfWork, ref: str, req: AccountUpdate) -> AccountView:
    s = uow.session
    row = lookup.account(s, ref, for_update=True)
    account_type = AccountType(row.type)
    merged: dict[str, str | None] = {**row.public_fields, **req.fields}
    if req.secrets is not None:
        new_secrets = _plain(req.secrets)
        public, secrets = validate_account(account_type, merged, new_secrets)
    else:
        # Public changes are checked against the secrets already stored (e.g. adding an SNMP
        # privacy protocol needs a privacy key): decrypt the current version to validate.
        current = decrypt_secrets(uow, row.id, row.current_version, purpose="validate-update")
        public, _ = validate_account(account_type, merged, current)
        secrets = None
    # Names of what changed, for the audit record (values of public fields are not secret,
    # but a record is kept forever: names are enough to know what to look at).
    before = (row.name, row.description, row.expires_at, dict(row.public_fields))
    if req.rename is not None:
        new_name = _check_name(req.rename)
        if (
            new_name != row.name
            and s.scalars(select(AccountRow.id).where(AccountRow.name == new_name)).first()
        ):
            raise AlreadyExists(f"a Run As account named {new_name!r} already exists")
        row.name = new_name
    row.public_fields = public
    if req.description is not None:
        row.description = req.description
    if req.clear_expiry:
        row.expires_at = None
    elif req.expires_at is not None:
        row.expires_at = req.expires_at
    if secrets is not None:
        _store_version(uow, row, row.current_version + 1, secrets)
    row.modified_at = uow.now
    row.modified_by = uow.actor
    lookup.bump_epoch(s)
    s.flush()
    old_name, old_description, old_expiry, old_fields = before
    changed = [
        k for k in sorted(set(public) | set(old_fields)) if public.get(k) != old_fields.get(k)
    ]
    changed += [
        what
        for what, was, now in (
            ("name", old_name, row.name),
            ("description", old_description, row.description),
            ("expires_at", old_expiry, row.expires_at),
        )
        if was != now
    ]
    details: dict[str, object] = {"changed": changed}
    if row.name != old_name:
        details["renamed_from"] = old_name
    if secrets is not None:
        details["secret_fields"] = sorted(secrets)
        details["secret_version"] = row.current_version
    audit.record(
        uow,
        AuditAction.ACCOUNT_SECRET_VERSION if secrets is not None else AuditAction.ACCOUNT_UPDATE,
        row.name,
        details,
    )
    return view(s, row)


def remove(uow: UnitOfWork, ref: str) -> str:
    s = uow.session
    row = lookup.account(s, ref, for_update=True)
    profiles = sorted(
        set(s.scalars(select(AssociationRow.profile_id).where(AssociationRow.account_id == row.id)))
    )
    if profiles:
        raise InUse(
            f"account {row.name!r} is associated with profile(s) {', '.join(profiles)}: "
            "dissociate it first (runas profile dissociate)"
        )
    from runas.services.connected import users_of_account  # connected imports this module

    groups = users_of_account(s, row.id)
    if groups:
        raise InUse(
            f"account {row.name!r} is the connection account of connected management group(s) "
            f"{', '.join(groups)}: remove the connection first (runas mg remove)"
        )
    name = row.name
    s.delete(row)
    lookup.bump_epoch(s)
    s.flush()
    audit.record(uow, AuditAction.ACCOUNT_REMOVE, name, {"type": row.type})
    return name


def list_accounts(session: Session, account_type: str | None = None) -> list[AccountSummary]:
    stmt = select(AccountRow).order_by(AccountRow.name)
    if account_type is not None:
        stmt = stmt.where(AccountRow.type == parse_account_type(account_type).value)
    rows = list(session.scalars(stmt))
    dist = dict(
        session.execute(
            select(DistributionRow.account_id, func.count()).group_by(DistributionRow.account_id)
        ).all()
    )
    assoc = dict(
        session.execute(
            select(AssociationRow.account_id, func.count()).group_by(AssociationRow.account_id)
        ).all()
    )
    return [
        AccountSummary(
            id=r.id,
            name=r.name,
            type=r.type,
            identity=display_identity(AccountType(r.type), r.public_fields),
            description=r.description,
            secret_version=r.current_version,
            distribution=r.distribution_mode,
            distributed_to=dist.get(r.id, 0),
            associations=assoc.get(r.id, 0),
            expires_at=r.expires_at,
        )
        for r in rows
    ]


def show(session: Session, ref: str) -> AccountView:
    return view(session, lookup.account(session, ref))


def view(session: Session, row: AccountRow) -> AccountView:
    versions = list(
        session.scalars(
            select(SecretVersionRow)
            .where(SecretVersionRow.account_id == row.id)
            .order_by(SecretVersionRow.version)
        )
    )
    computers = sorted(
        session.scalars(
            select(DistributionRow.computer_name).where(DistributionRow.account_id == row.id)
        )
    )
    assocs = list(
        session.scalars(
            select(AssociationRow)
            .where(AssociationRow.account_id == row.id)
            .order_by(AssociationRow.id)
        )
    )
    account_type = AccountType(row.type)
    return AccountView(
        id=row.id,
        name=row.name,
        type=row.type,
        identity=display_identity(account_type, row.public_fields),
        description=row.description,
        fields=dict(row.public_fields),
        secret_version=row.current_version,
        versions=[
            SecretVersionView(
                version=v.version,
                created_at=v.created_at,
                created_by=v.created_by,
                kek_id=v.kek_id,
                current=v.version == row.current_version,
            )
            for v in versions
        ],
        distribution=row.distribution_mode,
        computers=computers,
        associations=[
            AssociationRef(
                id=a.id,
                profile=a.profile_id,
                target_kind=a.target_kind,
                target=a.target or None,
                enforced=a.enforced,
            )
            for a in assocs
        ],
        expires_at=row.expires_at,
        created_at=row.created_at,
        created_by=row.created_by,
        modified_at=row.modified_at,
        modified_by=row.modified_by,
    )
