"""Run As profiles and their associations (profile + account + target)."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from runas.domain.accounts import AccountType, parse_account_type
from runas.domain.model import ENTITY_CLASS, Accessibility, ProfileDef, TargetKind
from runas.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from runas.runtime import UnitOfWork
from runas.services import audit, convert, lookup
from runas.services.audit import AuditAction
from runas.storage.tables import (
    AccountRow,
    AssociationRow,
    ClassRow,
    GroupRow,
    ObjectRow,
    ProfileRow,
    WorkflowRow,
)

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


class ProfileSummary(BaseModel):
    id: str
    display_name: str
    pack: str | None
    accessibility: str
    allowed_types: list[str]
    fallback: bool
    associations: int
    workflows: int


class AssociationView(BaseModel):
    id: int
    profile: str
    account: str
    account_id: int
    account_type: str
    target_kind: str
    target: str | None
    enforced: bool
    position: int | None
    #: False when the target (an object, usually) is not currently present
    target_present: bool


class ProfileView(BaseModel):
    id: str
    display_name: str
    description: str
    pack: str | None
    context_class: str
    accessibility: str
    allowed_types: list[str]
    fallback: bool
    ordered: bool
    max_accounts: int | None
    associations: list[AssociationView]
    workflows: list[str]


class ProfileCreate(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    display_name: str = Field(min_length=1, max_length=200)
    description: str = ""
    context_class: str = ENTITY_CLASS
    allowed_types: list[str] = Field(default_factory=list)
    fallback: bool = True


class AssociateRequest(BaseModel):
    profile: str
    account: str
    target_kind: TargetKind = TargetKind.ALL
    target: str | None = None
    enforced: bool = False
    position: int | None = Field(default=None, ge=1)


class DissociateRequest(BaseModel):
    profile: str
    account: str
    target_kind: TargetKind | None = None
    target: str | None = None


def list_profiles(session: Session) -> list[ProfileSummary]:
    assoc = dict(
        session.execute(
            select(AssociationRow.profile_id, func.count()).group_by(AssociationRow.profile_id)
        ).all()
    )
    flows = dict(
        session.execute(
            select(WorkflowRow.profile_id, func.count()).group_by(WorkflowRow.profile_id)
        ).all()
    )
    return [
        ProfileSummary(
            id=p.id,
            display_name=p.display_name,
            pack=p.pack_id,
            accessibility=p.accessibility,
            allowed_types=list(p.allowed_types),
            fallback=p.fallback,
            associations=assoc.get(p.id, 0),
            workflows=flows.get(p.id, 0),
        )
        for p in session.scalars(select(ProfileRow).order_by(ProfileRow.id))
    ]


def _target_present(session: Session, kind: str, target: str) -> bool:
    if kind == TargetKind.ALL.value:
        return True
    if kind == TargetKind.CLASS.value:
        return session.get(ClassRow, target) is not None
    if kind == TargetKind.GROUP.value:
        return session.get(GroupRow, target) is not None
    return (
        session.scalars(select(ObjectRow.id).where(ObjectRow.full_name == target)).first()
        is not None
    )


def _association_views(session: Session, profile_id: str) -> list[AssociationView]:
    rows = session.execute(
        select(AssociationRow, AccountRow.name, AccountRow.type)
        .join(AccountRow, AccountRow.id == AssociationRow.account_id)
        .where(AssociationRow.profile_id == profile_id)
        .order_by(AssociationRow.position.is_(None), AssociationRow.position, AssociationRow.id)
    )
    return [_association_view(session, a, name, atype) for a, name, atype in rows]


def _association_view(
    session: Session, a: AssociationRow, account_name: str, account_type: str
) -> AssociationView:
    return AssociationView(
        id=a.id,
        profile=a.profile_id,
        account=account_name,
        account_id=a.account_id,
        account_type=account_type,
        target_kind=a.target_kind,
        target=a.target or None,
        enforced=a.enforced,
        position=a.position,
        target_present=_target_present(session, a.target_kind, a.target),
    )


def show(session: Session, ref: str) -> ProfileView:
    p = lookup.profile(session, ref)
    workflows = sorted(
        session.scalars(select(WorkflowRow.id).where(WorkflowRow.profile_id == p.id))
    )
    return ProfileView(
        id=p.id,
        display_name=p.display_name,
        description=p.description,
        pack=p.pack_id,
        context_class=p.context_class,
        accessibility=p.accessibility,
        allowed_types=list(p.allowed_types),
        fallback=p.fallback,
        ordered=p.ordered,
        max_accounts=p.max_accounts,
        associations=_association_views(session, p.id),
        workflows=workflows,
    )


def add(uow: UnitOfWork, req: ProfileCreate) -> ProfileView:
    """A profile created by hand (not owned by a pack), as SCOM allows."""
    s = uow.session
    if not _ID.match(req.id):
        raise InvalidInput(f"profile id {req.id!r} must be a dotted identifier (e.g. Corp.Backup)")
    if s.get(ProfileRow, req.id) is not None:
        raise AlreadyExists(f"a Run As profile {req.id!r} already exists")
    if s.get(ClassRow, req.context_class) is None:
        raise NotFound(f"unknown class {req.context_class!r}")
    allowed = tuple(parse_account_type(t) for t in req.allowed_types)
    profile = ProfileDef(
        id=req.id,
        display_name=req.display_name,
        description=req.description,
        context_class=req.context_class,
        accessibility=Accessibility.PUBLIC,
        allowed_types=allowed,
        fallback=req.fallback,
    )
    s.add(convert.profile_row(profile, None))
    s.flush()
    audit.record(
        uow,
        AuditAction.PROFILE_CREATE,
        req.id,
        {
            "context_class": req.context_class,
            "allowed_types": [t.value for t in allowed],
            "fallback": req.fallback,
        },
    )
    return show(s, req.id)


def _normalise_target(session: Session, kind: TargetKind, target: str | None) -> str:
    if kind is TargetKind.ALL:
        if target:
            raise InvalidInput("an association with all targeted objects takes no target")
        return ""
    if not target:
        raise InvalidInput(f"a {kind.value} association needs a target")
    if kind is TargetKind.CLASS:
        if session.get(ClassRow, target) is None:
            raise NotFound(f"unknown class {target!r}")
        return target
    if kind is TargetKind.GROUP:
        if session.get(GroupRow, target) is None:
            raise NotFound(f"unknown group {target!r}")
        return target
    # Objects are stored by full name so the association survives rediscovery.
    return lookup.obj(session, target).full_name


def claim(session: Session, prow: ProfileRow, expected_version: int | None = None) -> None:
    """Take the profile for a change of its associations: a new ``row_version``, written now.

    A profile's associations are one list (positions, ``max_accounts``, what resolution picks),
    so a change to any of them is a change of the profile. The UPDATE carries the version this
    transaction read (``version_id_col``): if another server changed the profile since, it
    matches no row and SQLAlchemy raises ``StaleDataError`` (409), and until this transaction
    ends the row lock makes a concurrent change wait for the outcome, then fail the same way.
    ``expected_version`` is a client's ``If-Match``: the version it based its change on."""
    if expected_version is not None and prow.row_version != expected_version:
        raise Conflict(
            f"profile {prow.id} was changed since you read it (version {prow.row_version}): "
            "reload and retry"
        )
    flag_modified(prow, "display_name")
    session.flush()


def associate(
    uow: UnitOfWork, req: AssociateRequest, *, expected_version: int | None = None
) -> AssociationView:
    s = uow.session
    prow = lookup.profile(s, req.profile)
    claim(s, prow, expected_version)
    profile = convert.profile_def(prow)
    account = lookup.account(s, req.account)
    account_type = AccountType(account.type)
    if not profile.allows(account_type):
        allowed = ", ".join(t.value for t in profile.allowed_types)
        raise InvalidInput(
            f"profile {profile.id} accepts {allowed} accounts; {account.name!r} is a "
            f"{account_type.value} account"
        )
    target = _normalise_target(s, req.target_kind, req.target)
    existing = s.scalars(
        select(AssociationRow).where(
            AssociationRow.profile_id == profile.id,
            AssociationRow.account_id == account.id,
            AssociationRow.target_kind == req.target_kind.value,
            AssociationRow.target == target,
        )
    ).first()
    if existing is not None:
        raise AlreadyExists(
            f"{account.name!r} is already associated with {profile.id} for "
            f"{req.target_kind.value} {target or 'targets'} (association #{existing.id})"
        )
    if profile.max_accounts is not None:
        accounts = set(
            s.scalars(
                select(AssociationRow.account_id).where(AssociationRow.profile_id == profile.id)
            )
        )
        if account.id not in accounts and len(accounts) >= profile.max_accounts:
            raise InvalidInput(
                f"profile {profile.id} takes at most {profile.max_accounts} account(s) and has "
                f"{len(accounts)}"
            )
    position = _position(s, profile, account.id, account.name, req.position)
    row = AssociationRow(
        profile_id=profile.id,
        account_id=account.id,
        target_kind=req.target_kind.value,
        target=target,
        enforced=req.enforced,
        position=position,
        created_at=uow.now,
        created_by=uow.actor,
    )
    s.add(row)
    lookup.bump_epoch(s)
    s.flush()
    audit.record(
        uow,
        AuditAction.ASSOCIATION_CREATE,
        association_target(profile.id, account.name, row.target_kind, row.target),
        {"id": row.id, "enforced": row.enforced, "position": row.position},
    )
    return _association_view(s, row, account.name, account.type)


def association_target(profile_id: str, account_name: str, kind: str, target: str) -> str:
    """How an association is named in the audit trail: ``profile/account/kind:target``
    (``profile/account/all`` for all targeted objects)."""
    what = kind if kind == TargetKind.ALL.value else f"{kind}:{target}"
    return f"{profile_id}/{account_name}/{what}"


def _position(
    s: Session, profile: ProfileDef, account_id: int, account_name: str, wanted: int | None
) -> int | None:
    """An ordered profile's accounts form one list: each account has one position (shared by
    all its associations with the profile) and no two accounts share one."""
    if not profile.ordered:
        if wanted is not None:
            raise InvalidInput(f"profile {profile.id} is not ordered: --position does not apply")
        return None
    taken = {
        acc: pos
        for acc, pos in s.execute(
            select(AssociationRow.account_id, AssociationRow.position).where(
                AssociationRow.profile_id == profile.id
            )
        ).all()
        if pos is not None
    }
    if account_id in taken:
        if wanted is not None and wanted != taken[account_id]:
            raise InvalidInput(
                f"{account_name!r} is already number {taken[account_id]} in {profile.id}'s "
                "order; an account keeps one position"
            )
        return taken[account_id]
    if wanted is None:
        return max(taken.values(), default=0) + 1
    holder = next((acc for acc, pos in taken.items() if pos == wanted), None)
    if holder is not None:
        name = s.scalar(select(AccountRow.name).where(AccountRow.id == holder))
        raise InvalidInput(f"position {wanted} in {profile.id} is taken by {name!r}")
    return wanted


def dissociate(
    uow: UnitOfWork, req: DissociateRequest, *, expected_version: int | None = None
) -> list[int]:
    s = uow.session
    profile = lookup.profile(s, req.profile)
    claim(s, profile, expected_version)
    account = lookup.account(s, req.account)
    stmt = select(AssociationRow).where(
        AssociationRow.profile_id == profile.id, AssociationRow.account_id == account.id
    )
    if req.target_kind is not None:
        target = _normalise_target_for_match(s, req.target_kind, req.target)
        stmt = stmt.where(
            AssociationRow.target_kind == req.target_kind.value, AssociationRow.target == target
        )
    rows = list(s.scalars(stmt.order_by(AssociationRow.id)))
    if not rows:
        raise NotFound(f"{account.name!r} is not associated with {profile.id} for that target")
    if len(rows) > 1 and req.target_kind is None:
        listed = "; ".join(
            f"#{r.id} {r.target_kind}{' ' + r.target if r.target else ''}" for r in rows
        )
        raise InvalidInput(
            f"{account.name!r} has {len(rows)} associations with {profile.id} ({listed}): "
            "name the target (--class, --group, --object or --all)"
        )
    ids = [r.id for r in rows]
    for r in rows:
        s.delete(r)
    lookup.bump_epoch(s)
    s.flush()
    for r in rows:
        audit.record(
            uow,
            AuditAction.ASSOCIATION_REMOVE,
            association_target(profile.id, account.name, r.target_kind, r.target),
            {"id": r.id},
        )
    return ids


def _normalise_target_for_match(session: Session, kind: TargetKind, target: str | None) -> str:
    if kind is TargetKind.OBJECT and target and not target.isdecimal():
        # The object may be gone (that is often why one dissociates): match by name.
        return target
    return _normalise_target(session, kind, target)
