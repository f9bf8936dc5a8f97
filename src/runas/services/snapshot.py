"""Load a whole management group from the database into the bulk resolution index.

The big tables (objects, distribution, associations, accounts) are read with Core selects and
streamed in partitions (``yield_per``: a server-side cursor on PostgreSQL), straight into the
columns of an :class:`~runas.domain.bulk.ObjectTable`: no ORM instance, no identity map, no
``ObjectRecord`` per row. Content (classes, groups, profiles, workflows: a few thousand rows)
goes through the ORM and :mod:`runas.services.convert`, so that it is read exactly as the
per-object services read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter

from sqlalchemy import Connection, select

from runas.domain.accounts import AccountType, DistributionMode, display_identity, elevation_of
from runas.domain.bulk import ObjectTable, ResolutionIndex
from runas.domain.classes import ClassHierarchy
from runas.domain.groups import GroupCatalog
from runas.domain.model import Association, GroupDef, ProfileDef, TargetKind, WorkflowDef
from runas.domain.resolution import AccountInfo
from runas.services import convert
from runas.storage.database import Database
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

#: Rows fetched per round trip when streaming the big tables.
BATCH_ROWS = 20_000


@dataclass
class Snapshot:
    """Everything resolution reads, for a whole management group."""

    hierarchy: ClassHierarchy
    groups: list[GroupDef]
    profiles: list[ProfileDef]
    workflows: list[WorkflowDef]
    accounts: list[AccountInfo]
    associations: list[Association]
    objects: ObjectTable
    #: seconds spent reading each part
    timings: dict[str, float] = field(default_factory=dict)

    def index(self, timings: dict[str, float] | None = None) -> ResolutionIndex:
        return ResolutionIndex.build(
            hierarchy=self.hierarchy,
            groups=GroupCatalog(self.groups, self.hierarchy),
            profiles=self.profiles,
            workflows=self.workflows,
            accounts=self.accounts,
            associations=self.associations,
            objects=self.objects,
            timings=timings,
        )


def load_snapshot(db: Database) -> Snapshot:
    """Read the management group in one transaction (one consistent view)."""
    timings: dict[str, float] = {}
    clock = perf_counter()
    with db.session() as session:
        hierarchy = ClassHierarchy(convert.class_def(r) for r in session.scalars(select(ClassRow)))
        groups = [convert.group_def(r) for r in session.scalars(select(GroupRow))]
        profiles = [convert.profile_def(r) for r in session.scalars(select(ProfileRow))]
        workflows = [convert.workflow_def(r) for r in session.scalars(select(WorkflowRow))]
        timings["content"] = perf_counter() - clock
        connection = session.connection()
        clock = perf_counter()
        accounts = _accounts(connection)
        associations = _associations(connection, {a.id: a.name for a in accounts})
        timings["accounts"] = perf_counter() - clock
        clock = perf_counter()
        objects = _objects(connection)
        timings["objects"] = perf_counter() - clock
    return Snapshot(
        hierarchy, groups, profiles, workflows, accounts, associations, objects, timings
    )


def _objects(connection: Connection) -> ObjectTable:
    o = ObjectRow.__table__.c
    table = ObjectTable()
    append = table.append
    stmt = select(
        o.id, o.class_id, o.full_name, o.key_values, o.properties, o.host_id, o.computer_name
    ).order_by(o.id)
    result = connection.execution_options(yield_per=BATCH_ROWS).execute(stmt)
    for part in result.partitions():
        for oid, class_id, full_name, key, props, host_id, computer in part:
            append(oid, class_id, full_name, key, props, host_id, computer)
    return table


def _accounts(connection: Connection) -> list[AccountInfo]:
    d = DistributionRow.__table__.c
    approved: dict[int, set[str]] = {}
    result = connection.execution_options(yield_per=BATCH_ROWS).execute(
        select(d.account_id, d.computer_name)
    )
    for part in result.partitions():
        for account_id, computer in part:
            found = approved.get(account_id)
            if found is None:
                found = approved[account_id] = set()
            found.add(computer)
    a = AccountRow.__table__.c
    out: list[AccountInfo] = []
    stmt = select(
        a.id, a.name, a.type, a.public_fields, a.current_version, a.distribution_mode
    ).order_by(a.id)
    for account_id, name, type_, public, version, mode in connection.execute(stmt):
        account_type = AccountType(type_)
        out.append(
            AccountInfo(
                id=account_id,
                name=name,
                type=account_type,
                identity=display_identity(account_type, public),
                secret_version=version,
                distribution_mode=DistributionMode(mode),
                approved=frozenset(approved.get(account_id, ())),
                elevation=elevation_of(account_type, public),
            )
        )
    return out


def _associations(connection: Connection, account_names: dict[int, str]) -> list[Association]:
    c = AssociationRow.__table__.c
    stmt = select(
        c.id, c.profile_id, c.account_id, c.target_kind, c.target, c.enforced, c.position
    ).order_by(c.id)
    kinds = {k.value: k for k in TargetKind}
    out: list[Association] = []
    result = connection.execution_options(yield_per=BATCH_ROWS).execute(stmt)
    for part in result.partitions():
        for assoc_id, profile_id, account_id, kind_text, target, enforced, position in part:
            kind = kinds[kind_text]
            out.append(
                Association(
                    id=assoc_id,
                    profile=profile_id,
                    account_id=account_id,
                    account_name=account_names[account_id],
                    target_kind=kind,
                    # "" stands for "no target" in the table (see runas.storage.tables)
                    target=None if kind is TargetKind.ALL else target,
                    enforced=enforced,
                    position=position,
                )
            )
    return out


def load_index(db: Database, timings: dict[str, float] | None = None) -> ResolutionIndex:
    """Load the management group and resolve it."""
    snapshot = load_snapshot(db)
    if timings is not None:
        timings.update(snapshot.timings)
    return snapshot.index(timings)


__all__ = ["BATCH_ROWS", "Snapshot", "load_index", "load_snapshot"]
