"""Reading discovered objects and group membership."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from runas.domain.groups import describe_rule
from runas.domain.model import ObjectRecord
from runas.domain.names import parse_full_name
from runas.errors import InvalidInput, NotFound
from runas.services import catalog as catalog_loader
from runas.services import convert, lookup
from runas.storage.tables import DiscoveryClaimRow, GroupRow, ObjectRow

MAX_LIST = 10_000
MAX_MEMBERS_SHOWN = 1_000

#: whether an object is inside a caller's role scope
ScopeTest = Callable[[ObjectRecord], bool]


class ObjectSummary(BaseModel):
    id: int
    full_name: str
    class_id: str
    computer: str


class ObjectView(BaseModel):
    id: int
    full_name: str
    class_id: str
    computer: str
    host: str | None
    key: list[str]
    properties: dict[str, Any]
    discovered_by: list[str]
    hosts: list[str]
    groups: list[str]


class GroupView(BaseModel):
    id: str
    display_name: str
    pack: str
    explicit_members: list[str]
    rules: list[str]
    includes: list[str]
    members: list[str] | None = None
    member_count: int | None = None


def _scope_test(session: Session, scope: frozenset[str]) -> Callable[[ObjectRecord], bool]:
    """Whether an object is a member of one of the ``scope`` groups (nested ones included)."""
    h = catalog_loader.hierarchy(session)
    groups = catalog_loader.group_catalog(session, h, scope)
    present = [g for g in sorted(scope) if g in groups]
    return lambda rec: any(groups.membership(g, rec) is not None for g in present)


def visible_to(session: Session, scope: frozenset[str] | None, row: ObjectRow) -> bool:
    """Whether an object is inside a caller's role scope (None: unscoped, sees everything)."""
    return scope is None or _scope_test(session, scope)(convert.object_record(row))


def visibility(session: Session, scope: frozenset[str] | None) -> ScopeTest | None:
    """The scope test for many objects at once (None: unscoped, sees everything)."""
    return None if scope is None else _scope_test(session, scope)


def list_objects(
    session: Session,
    class_id: str | None,
    computer: str | None,
    limit: int = MAX_LIST,
    *,
    scope: frozenset[str] | None = None,
) -> list[ObjectSummary]:
    """Objects, at most ``limit``; with a ``scope`` (a caller's role scope), only members of
    those groups."""
    if limit < 1 or limit > MAX_LIST:
        raise InvalidInput(f"--limit must be between 1 and {MAX_LIST}")
    stmt = select(ObjectRow).order_by(ObjectRow.full_name)
    if class_id is not None:
        h = catalog_loader.hierarchy(session)
        h.get(class_id)
        stmt = stmt.where(ObjectRow.class_id.in_(sorted(h.descendants(class_id))))
    if computer is not None:
        stmt = stmt.where(ObjectRow.computer_name == computer)
    if scope is None:
        rows = list(session.scalars(stmt.limit(limit)))
    else:
        visible = _scope_test(session, scope)
        rows = []
        for r in session.scalars(stmt.execution_options(yield_per=1000)):
            if visible(convert.object_record(r)):
                rows.append(r)
                if len(rows) == limit:
                    break
    return [
        ObjectSummary(id=r.id, full_name=r.full_name, class_id=r.class_id, computer=r.computer_name)
        for r in rows
    ]


def show(session: Session, ref: str, *, scope: frozenset[str] | None = None) -> ObjectView:
    row = lookup.obj(session, ref)
    record = convert.object_record(row)
    visible = _scope_test(session, scope) if scope is not None else None
    if visible is not None and not visible(record):
        # Out of the caller's scope reads exactly like an object that does not exist.
        raise NotFound(
            f"no object with id {ref}" if ref.isdecimal() else f"no object named {ref!r}"
        )
    host = session.get(ObjectRow, row.host_id) if row.host_id is not None else None
    sources = [
        f"{src}@{scope}" if scope else src
        for src, scope in session.execute(
            select(DiscoveryClaimRow.source, DiscoveryClaimRow.scope)
            .where(DiscoveryClaimRow.object_id == row.id)
            .order_by(DiscoveryClaimRow.source)
        )
    ]
    hosted = sorted(session.scalars(select(ObjectRow.full_name).where(ObjectRow.host_id == row.id)))
    h = catalog_loader.hierarchy(session)
    groups = catalog_loader.group_catalog(session, h)
    member_of = [g for g in groups.ids() if groups.membership(g, record) is not None]
    return ObjectView(
        id=row.id,
        full_name=row.full_name,
        class_id=row.class_id,
        computer=row.computer_name,
        host=host.full_name if host is not None else None,
        key=list(row.key_values),
        properties=dict(row.properties),
        discovered_by=sources,
        hosts=hosted,
        groups=member_of,
    )


def _group_view(row: GroupRow) -> GroupView:
    g = convert.group_def(row)
    return GroupView(
        id=g.id,
        display_name=g.display_name,
        pack=g.pack,
        explicit_members=list(g.members),
        rules=[describe_rule(r) for r in g.rules],
        includes=list(g.includes),
    )


def list_groups(session: Session, *, scope: frozenset[str] | None = None) -> list[GroupView]:
    return [
        _group_view(r)
        for r in session.scalars(select(GroupRow).order_by(GroupRow.id))
        if scope is None or r.id in scope
    ]


def show_group(session: Session, ref: str, *, scope: frozenset[str] | None = None) -> GroupView:
    if scope is not None and ref not in scope:
        raise NotFound(f"no group {ref!r}")
    view = _group_view(lookup.group(session, ref))
    h = catalog_loader.hierarchy(session)
    groups = catalog_loader.group_catalog(session, h)
    # Candidates: objects of the rule classes and explicit members of the group and its
    # nested groups; each is then checked with the same membership test resolution uses.
    classes: set[str] = set()
    names: set[str] = set()
    for gid in groups.closure(view.id):
        g = groups.get(gid)
        names.update(g.members)
        for rule in g.rules:
            classes |= h.descendants(rule.class_id)
    for name in names:
        parse_full_name(name)
    stmt = select(ObjectRow).where(
        ObjectRow.class_id.in_(sorted(classes)) | ObjectRow.full_name.in_(sorted(names))
    )
    members = sorted(
        r.full_name
        for r in session.scalars(stmt)
        if groups.membership(view.id, convert.object_record(r)) is not None
    )
    view.member_count = len(members)
    view.members = members[:MAX_MEMBERS_SHOWN]
    return view
