"""Management packs: import (and upgrade), list, show, remove — each as one transaction."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from runas.domain.model import SYSTEM_PACK, PackDef, PackReference, TargetKind
from runas.errors import Conflict, InUse, PackError
from runas.packs import LoadedPack, check_pack, compare_versions, load_pack_text
from runas.runtime import UnitOfWork
from runas.services import audit, convert, discovery, lookup
from runas.services.audit import AuditAction
from runas.storage.tables import (
    AccountRow,
    AssociationRow,
    ClassRow,
    GroupRow,
    PackRow,
    ProfileRow,
    WorkflowRow,
)


class PackSummary(BaseModel):
    id: str
    version: str
    display_name: str
    classes: int
    groups: int
    profiles: int
    workflows: int
    imported_at: str
    imported_by: str


class PackView(BaseModel):
    id: str
    version: str
    display_name: str
    description: str
    references: list[dict[str, str | None]]
    classes: list[str]
    groups: list[str]
    profiles: list[str]
    workflows: list[str]
    referenced_by: list[str]
    imported_at: str
    imported_by: str
    source_text: str | None = None


class ImportResult(BaseModel):
    id: str
    version: str
    action: str  # imported | upgraded
    previous_version: str | None
    classes: int
    groups: int
    profiles: int
    workflows: int
    removed_objects: list[str]


def pack_def(session: Session, row: PackRow) -> PackDef:
    """Rebuild a pack's definition from its rows (what ``check_pack`` compares against)."""
    pid = row.id
    return PackDef(
        id=pid,
        version=row.version,
        display_name=row.display_name,
        description=row.description,
        references=tuple(
            PackReference(id=r["id"], min_version=r.get("min_version")) for r in row.references
        ),
        classes=tuple(
            convert.class_def(c)
            for c in session.scalars(select(ClassRow).where(ClassRow.pack_id == pid))
        ),
        groups=tuple(
            convert.group_def(g)
            for g in session.scalars(select(GroupRow).where(GroupRow.pack_id == pid))
        ),
        profiles=tuple(
            convert.profile_def(p)
            for p in session.scalars(select(ProfileRow).where(ProfileRow.pack_id == pid))
        ),
        workflows=tuple(
            convert.workflow_def(w)
            for w in session.scalars(select(WorkflowRow).where(WorkflowRow.pack_id == pid))
        ),
    )


def available_packs(session: Session, *, without: str | None = None) -> dict[str, PackDef]:
    return {
        row.id: pack_def(session, row)
        for row in session.scalars(select(PackRow).order_by(PackRow.id))
        if row.id != without
    }


def _dependants(session: Session, pack_id: str) -> list[PackRow]:
    return [
        row
        for row in session.scalars(select(PackRow).order_by(PackRow.id))
        if any(r["id"] == pack_id for r in row.references)
    ]


def _association_summary(rows: list[tuple[int, str, str]]) -> str:
    shown = ", ".join(f"#{i} ({prof} / {acct})" for i, prof, acct in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return shown + more


def _associations_using(
    session: Session, profiles: set[str], classes: set[str], groups: set[str]
) -> list[tuple[int, str, str]]:
    if not (profiles or classes or groups):
        return []
    stmt = (
        select(AssociationRow.id, AssociationRow.profile_id, AccountRow.name)
        .join(AccountRow, AccountRow.id == AssociationRow.account_id)
        .where(
            or_(
                AssociationRow.profile_id.in_(sorted(profiles)),
                (AssociationRow.target_kind == TargetKind.CLASS.value)
                & AssociationRow.target.in_(sorted(classes)),
                (AssociationRow.target_kind == TargetKind.GROUP.value)
                & AssociationRow.target.in_(sorted(groups)),
            )
        )
        .order_by(AssociationRow.id)
    )
    return [(i, p, a) for i, p, a in session.execute(stmt)]


def import_pack(uow: UnitOfWork, text: str, source: str) -> ImportResult:
    s = uow.session
    loaded = load_pack_text(text, source)
    pack = loaded.pack
    existing = s.get(PackRow, pack.id)
    previous: PackDef | None = None
    if existing is not None:
        if compare_versions(pack.version, existing.version) <= 0:
            raise Conflict(
                f"pack {pack.id} version {existing.version} is imported; an upgrade needs a "
                f"higher version than {existing.version} (this file has {pack.version})"
            )
        previous = pack_def(s, existing)
    available = available_packs(s, without=pack.id)
    check_pack(loaded, available)
    removed_objects: list[str] = []
    if previous is not None:
        removed_objects = _check_and_prepare_upgrade(s, loaded, previous, available)
    _write_pack(uow, loaded, existing)
    lookup.bump_epoch(s)
    s.flush()
    audit.record(
        uow,
        AuditAction.PACK_UPGRADE if previous is not None else AuditAction.PACK_IMPORT,
        pack.id,
        {
            "version": pack.version,
            "previous_version": previous.version if previous is not None else None,
            "file": source,
            "classes": len(pack.classes),
            "groups": len(pack.groups),
            "profiles": len(pack.profiles),
            "workflows": len(pack.workflows),
            "removed_objects": len(removed_objects),
        },
    )
    return ImportResult(
        id=pack.id,
        version=pack.version,
        action="upgraded" if previous is not None else "imported",
        previous_version=previous.version if previous is not None else None,
        classes=len(pack.classes),
        groups=len(pack.groups),
        profiles=len(pack.profiles),
        workflows=len(pack.workflows),
        removed_objects=removed_objects,
    )


def _check_and_prepare_upgrade(
    s: Session, loaded: LoadedPack, old: PackDef, available: dict[str, PackDef]
) -> list[str]:
    new = loaded.pack
    gone_profiles = {p.id for p in old.profiles} - {p.id for p in new.profiles}
    gone_classes = {c.id for c in old.classes} - {c.id for c in new.classes}
    gone_groups = {g.id for g in old.groups} - {g.id for g in new.groups}
    used = _associations_using(s, gone_profiles, gone_classes, gone_groups)
    if used:
        raise InUse(
            f"upgrading {new.id} to {new.version} removes profiles, classes or groups that "
            f"associations use: {_association_summary(used)}; dissociate them first"
        )
    # Associations whose account type the new version no longer allows.
    for p in new.profiles:
        if not p.allowed_types:
            continue
        allowed = {t.value for t in p.allowed_types}
        bad = s.execute(
            select(AssociationRow.id, AccountRow.name, AccountRow.type)
            .join(AccountRow, AccountRow.id == AssociationRow.account_id)
            .where(AssociationRow.profile_id == p.id, AccountRow.type.not_in(sorted(allowed)))
        ).first()
        if bad is not None:
            raise InUse(
                f"upgrading {new.id}: profile {p.id} would no longer accept {bad.type} accounts, "
                f"but association #{bad.id} uses {bad.name!r}"
            )
    # Packs that reference this one must still be valid against the new version.
    with_new = {**available, new.id: new}
    for dep in _dependants(s, new.id):
        dep_loaded = load_pack_text(dep.source_text, f"{dep.id} (imported)")
        try:
            check_pack(dep_loaded, {k: v for k, v in with_new.items() if k != dep.id})
        except PackError as err:
            raise InUse(
                f"upgrading {new.id} to {new.version} would break pack {dep.id}, which "
                f"references it: {err.message}"
            ) from None
    return discovery.remove_objects_of_classes(s, sorted(gone_classes))


def _write_pack(uow: UnitOfWork, loaded: LoadedPack, existing: PackRow | None) -> None:
    s = uow.session
    pack = loaded.pack
    if existing is None:
        existing = PackRow(id=pack.id)
        s.add(existing)
    existing.version = pack.version
    existing.display_name = pack.display_name
    existing.description = pack.description
    existing.references = [{"id": r.id, "min_version": r.min_version} for r in pack.references]
    existing.source_text = loaded.text
    existing.imported_at = uow.now
    existing.imported_by = uow.actor
    s.flush()
    # Classes, groups and workflows have no rows depending on them: replace them wholesale.
    for table in (ClassRow, GroupRow, WorkflowRow):
        s.execute(delete(table).where(table.pack_id == pack.id))
    s.add_all(convert.class_row(c, pack.id) for c in pack.classes)
    s.add_all(convert.group_row(g, pack.id) for g in pack.groups)
    s.add_all(convert.workflow_row(w, pack.id) for w in pack.workflows)
    # Profiles carry associations: update in place, add new ones, drop the (unused) removed.
    rows = {p.id: p for p in s.scalars(select(ProfileRow).where(ProfileRow.pack_id == pack.id))}
    for p in pack.profiles:
        if p.id in rows:
            convert.update_profile_row(rows.pop(p.id), p)
        else:
            s.add(convert.profile_row(p, pack.id))
    for leftover in rows.values():
        s.delete(leftover)
    s.expire_all()


def list_packs(session: Session) -> list[PackSummary]:
    out = []
    for row in session.scalars(select(PackRow).order_by(PackRow.id)):
        d = pack_def(session, row)
        out.append(
            PackSummary(
                id=row.id,
                version=row.version,
                display_name=row.display_name,
                classes=len(d.classes),
                groups=len(d.groups),
                profiles=len(d.profiles),
                workflows=len(d.workflows),
                imported_at=row.imported_at.isoformat(),
                imported_by=row.imported_by,
            )
        )
    return out


def show(session: Session, ref: str, *, with_source: bool = False) -> PackView:
    row = lookup.pack(session, ref)
    d = pack_def(session, row)
    return PackView(
        id=row.id,
        version=row.version,
        display_name=row.display_name,
        description=row.description,
        references=[{"id": r.id, "min_version": r.min_version} for r in d.references],
        classes=sorted(c.id for c in d.classes),
        groups=sorted(g.id for g in d.groups),
        profiles=sorted(p.id for p in d.profiles),
        workflows=sorted(w.id for w in d.workflows),
        referenced_by=[p.id for p in _dependants(session, row.id)],
        imported_at=row.imported_at.isoformat(),
        imported_by=row.imported_by,
        source_text=row.source_text if with_source else None,
    )


def remove(uow: UnitOfWork, ref: str) -> list[str]:
    """Remove a pack; refused while another pack references it or associations use its
    profiles, classes or groups. Objects of its classes go with it (returned)."""
    s = uow.session
    row = lookup.pack(s, ref)
    if row.id == SYSTEM_PACK:
        raise InUse(f"{SYSTEM_PACK} is built in and cannot be removed")
    dependants = _dependants(s, row.id)
    if dependants:
        raise InUse(
            f"pack {row.id} is referenced by {', '.join(d.id for d in dependants)}: "
            "remove those first"
        )
    d = pack_def(s, row)
    used = _associations_using(
        s, {p.id for p in d.profiles}, {c.id for c in d.classes}, {g.id for g in d.groups}
    )
    if used:
        raise InUse(
            f"pack {row.id} is used by associations {_association_summary(used)}: "
            "dissociate them first"
        )
    removed = discovery.remove_objects_of_classes(s, sorted(c.id for c in d.classes))
    s.execute(delete(ProfileRow).where(ProfileRow.pack_id == row.id))
    pack_id, version = row.id, row.version
    s.delete(row)
    lookup.bump_epoch(s)
    s.flush()
    audit.record(
        uow,
        AuditAction.PACK_REMOVE,
        pack_id,
        {"version": version, "removed_objects": len(removed)},
    )
    return removed
