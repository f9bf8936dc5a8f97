"""Fill a resolution :class:`~runas.domain.resolution.Catalog` from the database.

Only what a question needs is read: every class and group definition (content, a few
thousand rows at most), the associations of the profiles asked about (plus the Default Action
Account profile), and the accounts those associations name with their distribution lists.
Objects are never loaded in bulk here; computers are fetched one by one when resolution asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from runas.domain.classes import ClassHierarchy
from runas.domain.groups import GroupCatalog
from runas.domain.model import DEFAULT_ACTION_PROFILE, Association, ObjectRecord, TargetKind
from runas.domain.resolution import AccountInfo, Catalog
from runas.services import convert
from runas.storage.tables import (
    AccountRow,
    AssociationRow,
    ClassRow,
    DistributionRow,
    GroupRow,
    ObjectRow,
    ProfileRow,
    WorkflowRow,
)


class _Computers(Mapping[str, ObjectRecord]):
    """Computer objects by name, read from the database on first use."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._cache: dict[str, ObjectRecord | None] = {}

    def __getitem__(self, name: str) -> ObjectRecord:
        if name not in self._cache:
            row = self._session.scalars(
                select(ObjectRow).where(
                    ObjectRow.computer_name == name, ObjectRow.host_id.is_(None)
                )
            ).first()
            self._cache[name] = convert.object_record(row) if row is not None else None
        found = self._cache[name]
        if found is None:
            raise KeyError(name)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, v in self._cache.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for v in self._cache.values() if v is not None)


def hierarchy(session: Session) -> ClassHierarchy:
    return ClassHierarchy(convert.class_def(r) for r in session.scalars(select(ClassRow)))


def group_catalog(
    session: Session, h: ClassHierarchy, wanted: Iterable[str] | None = None
) -> GroupCatalog:
    """Every group, or only ``wanted`` and the groups nested in them (what resolution of a
    few profiles can reach)."""
    if wanted is None:
        rows = list(session.scalars(select(GroupRow)))
    else:
        rows = []
        seen: set[str] = set()
        frontier = set(wanted)
        while frontier:
            batch = sorted(frontier - seen)
            seen |= frontier
            found = list(session.scalars(select(GroupRow).where(GroupRow.id.in_(batch))))
            rows.extend(found)
            frontier = {nested for r in found for nested in r.includes} - seen
    return GroupCatalog((convert.group_def(r) for r in rows), h)


def targeted_classes(
    session: Session, profile_ids: Iterable[str] | None = None
) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    stmt = select(WorkflowRow.profile_id, WorkflowRow.target_class).where(
        WorkflowRow.profile_id.is_not(None)
    )
    if profile_ids is not None:
        stmt = stmt.where(WorkflowRow.profile_id.in_(sorted(profile_ids)))
    for profile_id, target in session.execute(stmt):
        if profile_id is not None:
            out.setdefault(profile_id, set()).add(target)
    return {k: frozenset(v) for k, v in out.items()}


def associations_for(
    session: Session, profile_ids: Iterable[str] | None
) -> dict[str, list[Association]]:
    stmt = (
        select(AssociationRow, AccountRow.name)
        .join(AccountRow, AccountRow.id == AssociationRow.account_id)
        .order_by(AssociationRow.id)
    )
    if profile_ids is not None:
        stmt = stmt.where(AssociationRow.profile_id.in_(list(profile_ids)))
    out: dict[str, list[Association]] = {}
    for row, account_name in session.execute(stmt):
        out.setdefault(row.profile_id, []).append(convert.association(row, account_name))
    return out


def account_infos(
    session: Session, account_ids: Iterable[int], computers: Iterable[str] | None = None
) -> dict[int, AccountInfo]:
    """Accounts with their approved computers — all of them, or only those of ``computers``
    when the question is about a few (an action account may be approved on every computer
    of a large management group; explain needs one row of that list, not all)."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    approved: dict[int, set[str]] = {}
    stmt = select(DistributionRow.account_id, DistributionRow.computer_name).where(
        DistributionRow.account_id.in_(ids)
    )
    if computers is not None:
        stmt = stmt.where(DistributionRow.computer_name.in_(sorted(set(computers))))
    for account_id, computer in session.execute(stmt):
        approved.setdefault(account_id, set()).add(computer)
    rows = session.scalars(select(AccountRow).where(AccountRow.id.in_(ids)))
    return {r.id: convert.account_info(r, frozenset(approved.get(r.id, ()))) for r in rows}


def load(
    session: Session,
    profile_ids: Iterable[str] | None = None,
    *,
    computers: Iterable[str] | None = None,
) -> Catalog:
    """A catalog able to resolve the given profiles (all profiles when None), for objects on
    the given computers (any computer when None)."""
    h = hierarchy(session)
    wanted = None if profile_ids is None else {*profile_ids, DEFAULT_ACTION_PROFILE}
    assocs = associations_for(session, wanted)
    accounts = account_infos(
        session, (a.account_id for lst in assocs.values() for a in lst), computers
    )
    stmt = select(ProfileRow)
    groups: set[str] | None = None
    if wanted is not None:
        stmt = stmt.where(ProfileRow.id.in_(sorted(wanted)))
        groups = {
            a.target
            for lst in assocs.values()
            for a in lst
            if a.target_kind is TargetKind.GROUP and a.target is not None
        }
    profiles = {r.id: convert.profile_def(r) for r in session.scalars(stmt)}
    return Catalog(
        hierarchy=h,
        groups=group_catalog(session, h, groups),
        profiles=profiles,
        accounts=accounts,
        associations=assocs,
        targeted_classes=targeted_classes(session, wanted),
        computers=_Computers(session),
    )
