"""Resolution answered from memory: everything ``explain`` needs, kept per resolution epoch.

A server answers the same kind of question many times between two changes. What resolution
reads is content (classes, groups, profiles, associations, workflows: a few thousand rows at
most), accounts with their approval for one computer, one computer object and the object
asked about. An :class:`EpochView` holds all of it as of one epoch; the content is read
whole when the view is built, and the per-computer and per-object parts as questions need
them (a large management group has far more objects than any server wants to hold up
front). Every change that can alter any of it — content, accounts, distribution, discovery —
bumps the epoch, so a view is right for exactly as long as the database is at its epoch.

:meth:`ResolutionMemory.explain_known` answers without any I/O when everything is in memory
for the epoch the caller vouches for (the server's :class:`~runas.server.epochs.EpochWatcher`),
and says None otherwise; :meth:`ResolutionMemory.explain` then answers in a transaction,
reading what is missing and keeping it for the next question. Both produce exactly what
:func:`runas.services.explain.explain` produces: the resolution is the same pure function
over the same data (``tests/services/test_resolution_memory.py`` compares them).

Configuration deliveries use the same view, and more of it: after a change every agent asks
for its configuration at the new epoch, so once a view has answered :data:`BULK_AFTER`
computers one at a time it reads the agents (their keys, certificate serial and status) and
every computer's objects in one query each (up to :data:`MAX_AGENTS` and
:data:`MAX_OBJECTS`; past that it keeps asking per computer). From then on a configuration
is built from memory alone (``session`` None): a view method that would have to read raises
:class:`NeedsDatabase`, and the caller builds in a transaction instead, which fills what was
missing.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from runas.domain.model import ObjectRecord, WorkflowDef
from runas.domain.resolution import AccountInfo, Catalog, resolve_for_profile, resolve_workflow
from runas.errors import InvalidInput, NotFound
from runas.services import catalog as catalog_loader
from runas.services import convert, lookup, ssh_hosts
from runas.services.explain import ExplainView, applicable, to_view
from runas.storage.tables import AccountRow, AgentRow, DistributionRow, ObjectRow, WorkflowRow

#: objects and computers one view remembers; past that it forgets them all (the next
#: questions read them again): memory stays bounded in a management group of any size
MAX_OBJECTS = 100_000
MAX_COMPUTERS = 20_000
#: approvals (account, computer) of the associated accounts a view reads in one go; a
#: management group with more is asked per computer instead
MAX_APPROVALS = 200_000
#: agents a view reads in one go; a management group with more reads each agent's row
MAX_AGENTS = 100_000
#: computers a view reads one at a time before it reads all agents and objects at once (a
#: change that only a few agents ask about does not pay for reading them all)
BULK_AFTER = 16


class NeedsDatabase(Exception):
    """Raised by a view asked without a session (``session`` None) for something it does not
    hold yet. A control-flow signal between this module and its callers, never shown to
    anyone: the caller answers in a transaction instead."""


@dataclass(frozen=True)
class AgentSnapshot:
    """What a configuration needs of an agent's row, as of the view's epoch (approval,
    rejection, removal and new keys all bump the epoch; a renewed certificate does not, so a
    serial that does not match is checked against the database)."""

    id: str
    status: str
    cert_serial: str | None
    hpke_public_key: bytes
    last_seen_at: datetime | None
    last_seen_from: str | None
    last_epoch: int | None

    @classmethod
    def of(cls, row: AgentRow) -> AgentSnapshot:
        return cls(
            row.id,
            row.status,
            row.cert_serial,
            bytes(row.hpke_public_key),
            row.last_seen_at,
            row.last_seen_from,
            row.last_epoch,
        )


def _need(session: Session | None) -> Session:
    if session is None:
        raise NeedsDatabase
    return session


@dataclass(frozen=True)
class AccountPublic:
    """What a configuration shows of an account (never its secret)."""

    id: int
    name: str
    type: str
    secret_version: int
    public: dict[str, Any]


@dataclass
class EpochView:
    """What resolution reads, as of one epoch. Content is complete; ``objects`` (keyed by
    the reference asked with: id or full name) and ``catalogs`` (by computer) fill as
    questions come. The associated accounts (without their approvals, which are per
    computer), the workflows' schedules and the trusted SSH host keys are read once per view:
    every agent's configuration at this epoch needs them."""

    epoch: int
    content: catalog_loader.Content
    workflows: dict[str, WorkflowDef]
    account_ids: tuple[int, ...]
    #: workflow id -> its schedule as stored (None: no schedule)
    schedules: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    objects: dict[str, ObjectRecord] = field(default_factory=dict)
    catalogs: dict[str, Catalog] = field(default_factory=dict)
    _accounts: tuple[dict[int, AccountInfo], dict[int, AccountPublic]] | None = None
    _known_hosts: tuple[str, ...] | None = None
    #: computer -> associated accounts approved there (None: not read yet; False: too many
    #: to hold, read per computer)
    _approvals: dict[str, frozenset[int]] | bool | None = None
    _applicable: dict[str, tuple[WorkflowDef, ...]] = field(default_factory=dict)
    #: every agent (None: not read yet; False: too many, read one at a time)
    _agents: dict[str, AgentSnapshot] | bool | None = None
    #: every computer's objects by id (None: not read yet; False: too many to hold)
    _by_computer: dict[str, tuple[ObjectRecord, ...]] | bool | None = None
    #: computers answered one at a time so far (see BULK_AFTER)
    _single_reads: int = 0

    def _bulk_due(self) -> bool:
        self._single_reads += 1
        return self._single_reads > BULK_AFTER

    def agent(self, session: Session | None, agent_id: str) -> AgentSnapshot | None:
        """The agent's row as of this view's epoch (None: no such agent)."""
        known = self._agents
        if isinstance(known, dict):
            return known.get(agent_id)
        s = _need(session)
        if known is None and self._bulk_due():
            # columns, not ORM objects: this is every agent of the group
            rows = s.execute(
                select(
                    AgentRow.id,
                    AgentRow.status,
                    AgentRow.cert_serial,
                    AgentRow.hpke_public_key,
                    AgentRow.last_seen_at,
                    AgentRow.last_seen_from,
                    AgentRow.last_epoch,
                ).limit(MAX_AGENTS + 1)
            ).all()
            if len(rows) <= MAX_AGENTS:
                table = {r[0]: AgentSnapshot(r[0], r[1], r[2], bytes(r[3]), *r[4:]) for r in rows}
                self._agents = table
                return table.get(agent_id)
            self._agents = False
        row = s.get(AgentRow, agent_id)
        return AgentSnapshot.of(row) if row is not None else None

    def objects_of(self, session: Session | None, computer: str) -> tuple[ObjectRecord, ...]:
        """The objects hosted by ``computer`` (itself included), by id."""
        known = self._by_computer
        if isinstance(known, dict):
            return known.get(computer, ())
        s = _need(session)
        if known is None and self._bulk_due():
            # columns, not ORM objects: this is every object of the group
            rows = s.execute(
                select(
                    ObjectRow.id,
                    ObjectRow.class_id,
                    ObjectRow.full_name,
                    ObjectRow.key_values,
                    ObjectRow.properties,
                    ObjectRow.host_id,
                    ObjectRow.computer_name,
                )
                .order_by(ObjectRow.id)
                .limit(MAX_OBJECTS + 1)
            ).all()
            if len(rows) <= MAX_OBJECTS:
                grouped: dict[str, list[ObjectRecord]] = {}
                for oid, class_id, full_name, key, props, host_id, name in rows:
                    grouped.setdefault(name, []).append(
                        ObjectRecord(
                            oid, class_id, full_name, tuple(key), dict(props), host_id, name
                        )
                    )
                table = {name: tuple(records) for name, records in grouped.items()}
                self._by_computer = table
                return table.get(computer, ())
            self._by_computer = False
        return tuple(
            convert.object_record(r)
            for r in s.scalars(
                select(ObjectRow).where(ObjectRow.computer_name == computer).order_by(ObjectRow.id)
            )
        )

    def _account_base(
        self, session: Session | None
    ) -> tuple[dict[int, AccountInfo], dict[int, AccountPublic]]:
        found = self._accounts
        if found is None:
            session = _need(session)
            rows = (
                list(session.scalars(select(AccountRow).where(AccountRow.id.in_(self.account_ids))))
                if self.account_ids
                else []
            )
            found = (
                {r.id: convert.account_info(r, frozenset()) for r in rows},
                {
                    r.id: AccountPublic(
                        r.id, r.name, r.type, r.current_version, dict(r.public_fields)
                    )
                    for r in rows
                },
            )
            self._accounts = found
        return found

    def accounts_public(
        self, session: Session | None, ids: Iterable[int]
    ) -> dict[int, AccountPublic]:
        """The accounts ``ids`` as a configuration shows them (associated accounts are read
        once per view; any other is read now)."""
        known = self._account_base(session)[1]
        wanted = set(ids)
        out = {i: known[i] for i in wanted if i in known}
        missing = sorted(wanted - set(out))
        if missing:
            for r in _need(session).scalars(select(AccountRow).where(AccountRow.id.in_(missing))):
                out[r.id] = AccountPublic(
                    r.id, r.name, r.type, r.current_version, dict(r.public_fields)
                )
        return out

    def _approved_on(self, session: Session | None, computer: str) -> frozenset[int]:
        """The associated accounts approved on ``computer`` (more-secure distribution): all
        approvals are read once per view when there are at most :data:`MAX_APPROVALS`."""
        if not self.account_ids:
            return frozenset()
        known = self._approvals
        if known is None:
            rows = (
                _need(session)
                .execute(
                    select(DistributionRow.computer_name, DistributionRow.account_id)
                    .where(DistributionRow.account_id.in_(self.account_ids))
                    .limit(MAX_APPROVALS + 1)
                )
                .all()
            )
            if len(rows) > MAX_APPROVALS:
                known = False
            else:
                by_computer: dict[str, set[int]] = {}
                for name, account_id in rows:
                    by_computer.setdefault(name, set()).add(account_id)
                known = {name: frozenset(ids) for name, ids in by_computer.items()}
            self._approvals = known
        if known is not False:
            assert isinstance(known, dict)
            return known.get(computer, frozenset())
        return frozenset(
            _need(session).scalars(
                select(DistributionRow.account_id).where(
                    DistributionRow.computer_name == computer,
                    DistributionRow.account_id.in_(self.account_ids),
                )
            )
        )

    def known_hosts(self, session: Session | None) -> list[str]:
        """The trusted SSH host keys as known_hosts lines (every agent receives them)."""
        found = self._known_hosts
        if found is None:
            found = tuple(ssh_hosts.known_hosts(_need(session)))
            self._known_hosts = found
        return list(found)

    def applicable(self, class_id: str) -> tuple[WorkflowDef, ...]:
        """The enabled workflows that target ``class_id`` or an ancestor, by id."""
        found = self._applicable.get(class_id)
        if found is None:
            found = tuple(
                sorted(
                    applicable(list(self.workflows.values()), self.content.hierarchy, class_id),
                    key=lambda w: w.id,
                )
            )
            self._applicable[class_id] = found
        return found

    def catalog_for(
        self,
        session: Session | None,
        computer: str,
        *,
        computer_record: ObjectRecord | None = None,
    ) -> Catalog:
        """The catalog for objects of ``computer``: the view's content and accounts with the
        approvals of this one computer. ``computer_record``: its computer object, when the
        caller has just read it (saves reading it again)."""
        found = self.catalogs.get(computer)
        if found is not None:
            return found
        record = computer_record
        if record is None:
            row = (
                _need(session)
                .scalars(
                    select(ObjectRow).where(
                        ObjectRow.computer_name == computer, ObjectRow.host_id.is_(None)
                    )
                )
                .first()
            )
            record = convert.object_record(row) if row is not None else None
        computers = {computer: record} if record is not None else {}
        content = self.content
        base = self._account_base(session)[0]
        accounts = dict(base)
        for account_id in self._approved_on(session, computer):
            if account_id in accounts:
                accounts[account_id] = dataclasses.replace(
                    accounts[account_id], approved=frozenset({computer})
                )
        made = Catalog(
            hierarchy=content.hierarchy,
            groups=content.groups,
            profiles=content.profiles,
            accounts=accounts,
            associations=content.associations,
            targeted_classes=content.targeted_classes,
            computers=computers,
        )
        if len(self.catalogs) >= MAX_COMPUTERS:
            self.catalogs.clear()
        self.catalogs[computer] = made
        return made

    def object(self, session: Session, ref: str) -> ObjectRecord:
        found = self.objects.get(ref)
        if found is not None:
            return found
        record = convert.object_record(lookup.obj(session, ref))
        if len(self.objects) >= MAX_OBJECTS:
            self.objects.clear()
        self.objects[ref] = record
        return record


def _check_question(workflow: str | None, profile: str | None) -> None:
    if (workflow is None) == (profile is None):
        raise InvalidInput("explain needs exactly one of --workflow or --profile")


def _answer(
    view: EpochView, obj: ObjectRecord, cat: Catalog, workflow: str | None, profile: str | None
) -> ExplainView:
    if workflow is not None:
        w = view.workflows.get(workflow)
        if w is None:
            raise NotFound(f"no workflow {workflow!r}")
        return to_view(resolve_workflow(w, obj, cat))
    assert profile is not None
    p = view.content.profiles.get(profile)
    if p is None:
        raise NotFound(f"no Run As profile {profile!r}")
    return to_view(resolve_for_profile(p, obj, cat))


class ResolutionMemory:
    """The newest :class:`EpochView` of this process. Thread-safe: views are only ever
    replaced by newer ones, and filling a view's dictionaries is atomic under the GIL (two
    threads filling the same key write equal values)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._building = threading.Lock()
        self._view: EpochView | None = None

    def explain_known(
        self, epoch: int, obj_ref: str, *, workflow: str | None, profile: str | None
    ) -> ExplainView | None:
        """The answer from memory if the view is at ``epoch`` and holds the object and its
        computer; None if the database must be read (then call :meth:`explain`)."""
        _check_question(workflow, profile)
        view = self._view
        if view is None or view.epoch != epoch:
            return None
        obj = view.objects.get(obj_ref)
        if obj is None:
            return None
        cat = view.catalogs.get(obj.computer)
        if cat is None:
            return None
        return _answer(view, obj, cat, workflow, profile)

    def explain(
        self, session: Session, obj_ref: str, *, workflow: str | None, profile: str | None
    ) -> ExplainView:
        """The answer in ``session``'s transaction, keeping what it read."""
        _check_question(workflow, profile)
        view = self.view(session)
        obj = view.object(session, obj_ref)
        return _answer(view, obj, view.catalog_for(session, obj.computer), workflow, profile)

    def view_if_current(self, epoch: int) -> EpochView | None:
        """The newest view if it is at ``epoch`` (the epoch a caller vouches for, as the
        server's epoch watcher does; for tests and metrics)."""
        view = self._view
        return view if view is not None and view.epoch == epoch else None

    def view(self, session: Session) -> EpochView:
        """The view at the epoch ``session`` sees, built if this process has none yet. A
        transaction that sees an older epoch than the newest view (it began before a commit)
        gets a view of its own, not kept."""
        epoch = lookup.epoch(session)
        current = self._view
        if current is not None and current.epoch == epoch:
            return current
        # One thread builds the new epoch's view; the others (every agent polls after a
        # change) wait for it instead of each reading the same content.
        with self._building:
            current = self._view
            if current is not None and current.epoch == epoch:
                return current
            made = self._build(session, epoch)
            with self._lock:
                if self._view is None or self._view.epoch < epoch:
                    self._view = made
            return made

    def _build(self, session: Session, epoch: int) -> EpochView:
        rows = list(session.scalars(select(WorkflowRow)))
        made = EpochView(
            epoch=epoch,
            content=catalog_loader.content(session, None),
            workflows={r.id: convert.workflow_def(r) for r in rows},
            account_ids=(),
            schedules={r.id: (dict(r.schedule) if r.schedule else None) for r in rows},
        )
        made.account_ids = tuple(
            sorted({a.account_id for lst in made.content.associations.values() for a in lst})
        )
        return made
