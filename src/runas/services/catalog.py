"""Fill a resolution :class:`~runas.domain.resolution.Catalog` from the database.

Only what a question needs is read: every class and group definition (content, a few
thousand rows at most), the associations of the profiles asked about (plus the Default Action
Account profile), and the accounts those associations name with their distribution lists.
Objects are never loaded in bulk here; computers are fetched one by one when resolution asks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from runas.domain.classes import ClassHierarchy
from runas.domain.groups import GroupCatalog
from runas.domain.model import (
    DEFAULT_ACTION_PROFILE,
    Association,
    ObjectRecord,
    ProfileDef,
    TargetKind,
)
from runas.domain.resolution import AccountInfo, Catalog
from runas.services import convert, lookup
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


@dataclass(frozen=True)
class Content:
    """What a catalog holds that does not depend on the computers asked about."""

    hierarchy: ClassHierarchy
    groups: GroupCatalog
    profiles: dict[str, ProfileDef]
    associations: dict[str, list[Association]]
    targeted_classes: dict[str, frozenset[str]]


def content(session: Session, wanted: frozenset[str] | None) -> Content:
    h = hierarchy(session)
    assocs = associations_for(session, wanted)
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
    return Content(
        hierarchy=h,
        groups=group_catalog(session, h, groups),
        profiles={r.id: convert.profile_def(r) for r in session.scalars(stmt)},
        associations=assocs,
        targeted_classes=targeted_classes(session, wanted),
    )


class CatalogCache:
    """The computer-independent part of catalogs, kept per resolution epoch.

    For a process that answers many questions (the management server). Every change that can
    alter resolution bumps the epoch in the same transaction (``lookup.bump_epoch``), so content
    read at epoch N is right for as long as the database is at N. Each use reads the epoch in
    the caller's transaction first: a change committed by any server, this one or another, is
    seen by the next question (content read after that read is at least as new as N, never
    older). An older epoch than the newest seen (a transaction that started earlier) neither
    uses nor fills the cache. Thread-safe; at most ``size`` profile sets per epoch.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._epoch = -1
        self._entries: OrderedDict[frozenset[str] | None, Content] = OrderedDict()

    def content(self, session: Session, wanted: frozenset[str] | None) -> Content:
        epoch = lookup.epoch(session)
        with self._lock:
            if epoch > self._epoch:
                self._epoch = epoch
                self._entries.clear()
            found = self._entries.get(wanted) if epoch == self._epoch else None
            if found is not None:
                self._entries.move_to_end(wanted)
                return found
        found = content(session, wanted)
        with self._lock:
            if epoch == self._epoch:
                self._entries[wanted] = found
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        return found


def load(
    session: Session,
    profile_ids: Iterable[str] | None = None,
    *,
    computers: Iterable[str] | None = None,
    cache: CatalogCache | None = None,
) -> Catalog:
    """A catalog able to resolve the given profiles (all profiles when None), for objects on
    the given computers (any computer when None). With ``cache``, content is reused while the
    resolution epoch stays the same; accounts and computers are always read."""
    wanted = None if profile_ids is None else frozenset({*profile_ids, DEFAULT_ACTION_PROFILE})
    found = content(session, wanted) if cache is None else cache.content(session, wanted)
    accounts = account_infos(
        session, (a.account_id for lst in found.associations.values() for a in lst), computers
    )
    return Catalog(
        hierarchy=found.hierarchy,
        groups=found.groups,
        profiles=found.profiles,
        accounts=accounts,
        associations=found.associations,
        targeted_classes=found.targeted_classes,
        computers=_Computers(session),
    )
