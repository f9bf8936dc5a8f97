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
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from runas.domain.model import ObjectRecord, WorkflowDef
from runas.domain.resolution import Catalog, resolve_for_profile, resolve_workflow
from runas.errors import InvalidInput, NotFound
from runas.services import catalog as catalog_loader
from runas.services import convert, lookup
from runas.services.explain import ExplainView, to_view
from runas.storage.tables import ObjectRow, WorkflowRow

#: objects and computers one view remembers; past that it forgets them all (the next
#: questions read them again): memory stays bounded in a management group of any size
MAX_OBJECTS = 100_000
MAX_COMPUTERS = 20_000


@dataclass
class EpochView:
    """What resolution reads, as of one epoch. Content is complete; ``objects`` (keyed by
    the reference asked with: id or full name) and ``catalogs`` (by computer) fill as
    questions come."""

    epoch: int
    content: catalog_loader.Content
    workflows: dict[str, WorkflowDef]
    account_ids: tuple[int, ...]
    objects: dict[str, ObjectRecord] = field(default_factory=dict)
    catalogs: dict[str, Catalog] = field(default_factory=dict)

    def catalog_for(self, session: Session, computer: str) -> Catalog:
        found = self.catalogs.get(computer)
        if found is not None:
            return found
        row = session.scalars(
            select(ObjectRow).where(
                ObjectRow.computer_name == computer, ObjectRow.host_id.is_(None)
            )
        ).first()
        computers = {computer: convert.object_record(row)} if row is not None else {}
        content = self.content
        made = Catalog(
            hierarchy=content.hierarchy,
            groups=content.groups,
            profiles=content.profiles,
            accounts=catalog_loader.account_infos(session, self.account_ids, [computer]),
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
        made = EpochView(
            epoch=epoch,
            content=catalog_loader.content(session, None),
            workflows={r.id: convert.workflow_def(r) for r in session.scalars(select(WorkflowRow))},
            account_ids=(),
        )
        made.account_ids = tuple(
            sorted({a.account_id for lst in made.content.associations.values() for a in lst})
        )
        return made
