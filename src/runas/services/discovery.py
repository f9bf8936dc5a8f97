"""Discovery data: the payload agents send (and ``runas discovery submit`` accepts).

A submission is a *snapshot* from one discovery source within one scope (usually the computer
that ran the discovery): objects it lists are created or updated; objects that this source
claimed before in this scope and no longer lists lose the claim, and an object that nobody
claims any more is removed with everything it hosts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from runas.domain.classes import ClassHierarchy
from runas.domain.names import full_name, parse_full_name
from runas.errors import InvalidInput
from runas.runtime import UnitOfWork
from runas.services import audit, lookup
from runas.services import catalog as catalog_loader
from runas.services.audit import AuditAction
from runas.storage.tables import DiscoveryClaimRow, ObjectRow

MAX_OBJECTS = 100_000
Scalar = str | int | float | bool | None


class DiscoveredObject(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_id: str = Field(alias="class", min_length=1)
    key: dict[str, str | int] = Field(default_factory=dict)
    properties: dict[str, Scalar] = Field(default_factory=dict)
    #: the hosting object's full name (required for hosted classes, absent for computers)
    host: str | None = None


class DiscoveryPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: who discovered these objects: a discovery workflow id, or any name for manual data
    source: str = Field(min_length=1, max_length=200)
    #: the computer the discovery ran on; the snapshot replaces this source's objects there
    computer: str | None = Field(default=None, max_length=255)
    objects: list[DiscoveredObject] = Field(max_length=MAX_OBJECTS)

    @field_validator("source")
    @classmethod
    def _no_control(cls, value: str) -> str:
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("must not contain control characters")
        return value


class DiscoveryResult(BaseModel):
    source: str
    scope: str
    added: list[str]
    updated: list[str]
    unchanged: int
    removed: list[str]


def _segments_of(h: ClassHierarchy, o: DiscoveredObject, where: str) -> list[str]:
    keys = h.key_properties(o.class_id)
    unknown = sorted(set(o.key) - set(keys))
    if unknown:
        raise InvalidInput(
            f"{where}: {', '.join(unknown)} is not a key property of {o.class_id} "
            f"(keys: {', '.join(keys) or 'none'})"
        )
    missing = [k for k in keys if k not in o.key or str(o.key[k]) == ""]
    if missing:
        raise InvalidInput(f"{where}: key property {', '.join(missing)} of {o.class_id} is missing")
    return [str(o.key[k]) for k in keys]


def _check_properties(h: ClassHierarchy, o: DiscoveredObject, where: str) -> dict[str, Any]:
    allowed = set(h.properties(o.class_id))
    unknown = sorted(set(o.properties) - allowed)
    if unknown:
        raise InvalidInput(
            f"{where}: {o.class_id} has no property {', '.join(unknown)} "
            f"(properties: {', '.join(sorted(allowed)) or 'none'})"
        )
    props: dict[str, Any] = {k: v for k, v in o.properties.items() if v is not None}
    for k, v in o.key.items():
        props[k] = str(v)
    return props


def submit(
    uow: UnitOfWork,
    payload: DiscoveryPayload,
    *,
    only_computer: str | None = None,
    scope: str | None = None,
    remote_classes: tuple[str, ...] = (),
) -> DiscoveryResult:
    """``only_computer``: discovery from an agent (services/monitoring.py): the payload must
    name that computer and every object must be hosted on it (or be it) — or, for a discovery
    workflow that declares the classes it discovers, be of one of ``remote_classes`` (an AD-style
    system discovery creates other computers) — else InvalidInput before anything is written.

    ``scope``: what the snapshot replaces (default: the payload's computer). A discovery
    workflow's snapshot is scoped to the object it ran for, so two targets of one workflow on
    one computer do not erase each other's findings."""
    s = uow.session
    h = catalog_loader.hierarchy(s)
    if scope is None:
        scope = payload.computer or ""
    if only_computer is not None and (payload.computer or "") != only_computer:
        raise InvalidInput(
            f"discovery from {only_computer} must be scoped to it (computer: {only_computer})"
        )

    # Validate everything and work out full names first: nothing is written for bad input.
    planned: list[tuple[str, DiscoveredObject, list[str], dict[str, Any]]] = []
    by_name: dict[str, tuple[DiscoveredObject, list[str]]] = {}
    for i, o in enumerate(payload.objects, 1):
        where = f"object {i}"
        if o.class_id not in h:
            raise InvalidInput(f"{where}: unknown class {o.class_id!r}")
        c = h.get(o.class_id)
        if c.abstract:
            raise InvalidInput(f"{where}: class {o.class_id} is abstract and has no instances")
        own = _segments_of(h, o, where)
        props = _check_properties(h, o, where)
        if h.is_computer(o.class_id):
            if o.host is not None:
                raise InvalidInput(f"{where}: a computer ({o.class_id}) has no host")
            segments = own
        else:
            host_class = h.host_class(o.class_id)
            if o.host is None:
                raise InvalidInput(
                    f"{where}: {o.class_id} is hosted by {host_class}: give its host's full name"
                )
            host_cls, host_segments = parse_full_name(o.host)
            if host_cls not in h or (host_class is not None and not h.is_a(host_cls, host_class)):
                raise InvalidInput(
                    f"{where}: host {o.host} is not a {host_class} (the host class of {o.class_id})"
                )
            segments = [*host_segments, *own]
        name = full_name(o.class_id, segments)
        # The first segment of every full name is its computer's name (names.py).
        if (
            only_computer is not None
            and segments[0] != only_computer
            and not any(c in h and h.is_a(o.class_id, c) for c in remote_classes)
        ):
            raise InvalidInput(f"{where}: {name} is not hosted on {only_computer}")
        if name in by_name:
            raise InvalidInput(f"{where}: {name} is listed twice")
        by_name[name] = (o, segments)
        planned.append((name, o, segments, props))

    # Hosts first, so every host exists (in the payload or the database) before its objects.
    planned.sort(key=lambda p: len(p[2]))
    existing: dict[str, ObjectRow] = {}
    names = [p[0] for p in planned]
    for chunk_start in range(0, len(names), 500):
        chunk = names[chunk_start : chunk_start + 500]
        for row in s.scalars(select(ObjectRow).where(ObjectRow.full_name.in_(chunk))):
            existing[row.full_name] = row

    added: list[str] = []
    updated: list[str] = []
    unchanged = 0
    rows: dict[str, ObjectRow] = {}
    for name, o, segments, props in planned:
        host_row: ObjectRow | None = None
        if o.host is not None:
            host_row = rows.get(o.host) or existing.get(o.host)
            if host_row is None:
                host_row = s.scalars(
                    select(ObjectRow).where(ObjectRow.full_name == o.host)
                ).one_or_none()
            if host_row is None:
                raise InvalidInput(f"{name}: its host {o.host} is not known (discover it first)")
        computer = segments[0] if host_row is None else host_row.computer_name
        found = existing.get(name)
        if found is None:
            row = ObjectRow(
                class_id=o.class_id,
                full_name=name,
                key_values=segments[len(segments) - len(h.key_properties(o.class_id)) :],
                properties=props,
                host_id=host_row.id if host_row is not None else None,
                computer_name=computer,
                created_at=uow.now,
                updated_at=uow.now,
            )
            s.add(row)
            s.flush()
            added.append(name)
        else:
            row = found
            if row.properties != props:
                row.properties = props
                row.updated_at = uow.now
                updated.append(name)
            else:
                unchanged += 1
        rows[name] = row

    # Claims: this source now claims exactly these objects within this scope.
    claimed_before = set(
        s.scalars(
            select(DiscoveryClaimRow.object_id).where(
                DiscoveryClaimRow.source == payload.source, DiscoveryClaimRow.scope == scope
            )
        )
    )
    now_claimed = {r.id for r in rows.values()}
    for oid in sorted(now_claimed - claimed_before):
        s.add(DiscoveryClaimRow(source=payload.source, scope=scope, object_id=oid))
    dropped = sorted(claimed_before - now_claimed)
    removed: list[str] = []
    if dropped:
        s.execute(
            delete(DiscoveryClaimRow).where(
                DiscoveryClaimRow.source == payload.source,
                DiscoveryClaimRow.scope == scope,
                DiscoveryClaimRow.object_id.in_(dropped),
            )
        )
        s.flush()
        still = set(
            s.scalars(
                select(DiscoveryClaimRow.object_id)
                .where(DiscoveryClaimRow.object_id.in_(dropped))
                .group_by(DiscoveryClaimRow.object_id)
                .having(func.count() > 0)
            )
        )
        orphans = [oid for oid in dropped if oid not in still]
        removed = _remove_objects(s, orphans)
    if added or updated or removed:
        lookup.bump_epoch(s)
    s.flush()
    # Agents resend their snapshots all day: only a submission that changed something (objects
    # or claims) is a change to record.
    if added or updated or removed or dropped or now_claimed - claimed_before:
        audit.record(
            uow,
            AuditAction.DISCOVERY_SUBMIT,
            payload.source,
            {
                "computer": payload.computer,
                "objects": len(payload.objects),
                "added": len(added),
                "updated": len(updated),
                "unchanged": unchanged,
                "removed": len(removed),
            },
        )
    return DiscoveryResult(
        source=payload.source,
        scope=scope,
        added=added,
        updated=updated,
        unchanged=unchanged,
        removed=removed,
    )


def _remove_objects(session: Session, object_ids: list[int]) -> list[str]:
    """Delete objects and, through ON DELETE CASCADE, everything they host. Returns the full
    names of every object that disappears (hosted ones included)."""
    if not object_ids:
        return []
    gone: list[str] = []
    frontier = list(object_ids)
    seen: set[int] = set()
    while frontier:
        chunk, frontier = frontier[:500], frontier[500:]
        for oid, name in session.execute(
            select(ObjectRow.id, ObjectRow.full_name).where(ObjectRow.id.in_(chunk))
        ):
            if oid not in seen:
                seen.add(oid)
                gone.append(name)
        frontier.extend(session.scalars(select(ObjectRow.id).where(ObjectRow.host_id.in_(chunk))))
    for start in range(0, len(object_ids), 500):
        session.execute(delete(ObjectRow).where(ObjectRow.id.in_(object_ids[start : start + 500])))
    session.expire_all()
    return sorted(gone)


def remove_objects_of_classes(session: Session, class_ids: list[str]) -> list[str]:
    """Used when a pack upgrade or removal takes classes away."""
    if not class_ids:
        return []
    ids = list(session.scalars(select(ObjectRow.id).where(ObjectRow.class_id.in_(class_ids))))
    return _remove_objects(session, ids)
