"""Bulk resolution: the answer of :func:`~runas.domain.resolution.resolve_for_profile` for every
(profile, targeted object) pair of a management group, indexed, and kept current under change.

Pure: no I/O. The per-object functions of :mod:`runas.domain.resolution` stay the contract;
this module must give exactly their answers (``tests/domain/test_bulk.py`` checks it on random
management groups), only faster.

Why it is fast. For one profile P and one object O, the winner is the best-ranked covering
association (domain.md §5). The ranks split into levels, in order::

    enforced object > enforced group > enforced class/all > object > group > class/all

Whether an *all* or *class* association covers O depends only on O's class, so those levels are
computed once per (profile, class). Only *group* and *object* associations need per-object work:
group memberships are evaluated once over the whole population (``GroupCatalog.members`` with a
shared cache), and for each profile the objects they cover become *exceptions*, resolved with set
operations (a union per account, an intersection to find the objects two accounts fight over).
An outcome is then one dictionary probe plus a distribution check.

Per computer, the :class:`ComputerState` (what its agent must receive) is computed on first use
and cached; a change drops the cached states of the computers it affects and bumps their epochs.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any

from runas.domain.accounts import DistributionMode
from runas.domain.classes import ClassHierarchy
from runas.domain.groups import GroupCatalog, Membership, Population
from runas.domain.model import (
    DEFAULT_ACTION_PROFILE,
    Association,
    ObjectRecord,
    ProfileDef,
    TargetKind,
    WorkflowDef,
)
from runas.domain.resolution import (
    AccountInfo,
    Catalog,
    Outcome,
    Resolution,
    all_targets_cover,
    rank_of,
    resolve_for_profile,
    resolve_workflow,
    targeted_classes_by_profile,
)
from runas.errors import AlreadyExists, InvalidInput, NotFound

#: A resolved code: an account id (>= 0), or one of these two.
NO_CANDIDATE = -1
CONFLICT = -2

#: (outcome, account id): what :meth:`ResolutionIndex.outcome` answers.
PairOutcome = tuple[Outcome, int | None]


class ObjectTable:
    """Objects as parallel columns, filled row by row by a loader.

    A million :class:`ObjectRecord` instances (a dict of properties each) would cost well over
    a gigabyte; columns of machine integers, one string per name and properties stored as a
    shared key tuple plus a value tuple cost a fraction of that. Records are rebuilt on demand
    (:meth:`record`) for explain.
    """

    def __init__(self) -> None:
        self.ids = array("q")
        self.class_ix = array("I")
        self.computer_ix = array("I")
        #: -1 for an object without host (a computer)
        self.host_ids = array("q")
        self.full_names: list[str] = []
        self.keys: list[tuple[str, ...]] = []
        self.prop_keys: list[tuple[str, ...]] = []
        self.prop_values: list[tuple[Any, ...]] = []
        self.class_names: list[str] = []
        self.computer_names: list[str] = []
        self._class_pos: dict[str, int] = {}
        self._computer_pos: dict[str, int] = {}
        # Objects of one class mostly carry the same property names: one tuple for all of them.
        self._shapes: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def append(
        self,
        object_id: int,
        class_id: str,
        full_name: str,
        key: Sequence[str],
        properties: Mapping[str, Any],
        host_id: int | None,
        computer: str,
    ) -> int:
        """Add one object; returns its position."""
        cpos = self._class_pos.get(class_id)
        if cpos is None:
            cpos = self._class_pos[class_id] = len(self.class_names)
            self.class_names.append(class_id)
        hpos = self._computer_pos.get(computer)
        if hpos is None:
            hpos = self._computer_pos[computer] = len(self.computer_names)
            self.computer_names.append(computer)
        shape = tuple(properties)
        shared = self._shapes.setdefault(shape, shape)
        self.ids.append(object_id)
        self.class_ix.append(cpos)
        self.computer_ix.append(hpos)
        self.host_ids.append(-1 if host_id is None else host_id)
        self.full_names.append(full_name)
        self.keys.append(tuple(key))
        self.prop_keys.append(shared)
        self.prop_values.append(tuple(properties.values()))
        return len(self.ids) - 1

    def add_record(self, record: ObjectRecord) -> int:
        return self.append(
            record.id,
            record.class_id,
            record.full_name,
            record.key,
            record.properties,
            record.host_id,
            record.computer,
        )

    def properties(self, pos: int) -> dict[str, Any]:
        return dict(zip(self.prop_keys[pos], self.prop_values[pos], strict=True))

    def record(self, pos: int) -> ObjectRecord:
        host = self.host_ids[pos]
        return ObjectRecord(
            id=self.ids[pos],
            class_id=self.class_names[self.class_ix[pos]],
            full_name=self.full_names[pos],
            key=self.keys[pos],
            properties=self.properties(pos),
            host_id=None if host < 0 else host,
            computer=self.computer_names[self.computer_ix[pos]],
        )


@dataclass(frozen=True)
class ComputerState:
    """What one computer's agent must hold, as resolution decides it.

    ``bindings`` name the account each (profile, object) pair runs as; pairs that run as the
    computer's action account are not listed (``action`` says what that is). Any change of a
    pair's outcome, or of the action account, changes the state and so its ``digest``.
    """

    computer: str
    #: the computer's default action account: (outcome, account id or None)
    action: PairOutcome
    #: (account id, secret version) of every account whose secret the agent must receive
    accounts: tuple[tuple[int, int], ...]
    #: (profile, object id, account id) for pairs that run as a profile's account
    bindings: tuple[tuple[str, int, int], ...]
    #: (profile, object id): the workflow does not run, a Run As conflict alert is raised
    conflicts: tuple[tuple[str, int], ...]
    #: (profile, object id): no account and the profile cannot fall back
    unresolved: tuple[tuple[str, int], ...]
    #: (profile, object id, account id): "credentials not found" on this computer
    not_distributed: tuple[tuple[str, int, int], ...]
    digest: str


class _IndexedGroups(GroupCatalog):
    """The group catalog explain uses: the evaluated member sets answer "not a member" at once,
    so only groups that do hold the object walk rules and nesting (to say *how*)."""

    def __init__(
        self,
        source: GroupCatalog,
        hierarchy: ClassHierarchy,
        members: Mapping[str, frozenset[int]],
        position_of: Mapping[int, int],
    ) -> None:
        super().__init__((source.get(g) for g in source.ids()), hierarchy)
        self._members = members
        self._position_of = position_of

    def membership(self, group_id: str, obj: ObjectRecord) -> Membership | None:
        known = self._members.get(group_id)
        pos = self._position_of.get(obj.id)
        if known is not None and pos is not None and pos not in known:
            return None
        return super().membership(group_id, obj)


class _ComputerRecords(Mapping[str, ObjectRecord]):
    """``Catalog.computers`` over the index: records built on demand."""

    def __init__(self, index: ResolutionIndex) -> None:
        self._index = index

    def __getitem__(self, name: str) -> ObjectRecord:
        pos = self._index._computer_object_of_name(name)
        if pos is None:
            raise KeyError(name)
        return self._index._objects.record(pos)

    def __iter__(self) -> Iterator[str]:
        names = self._index._objects.computer_names
        return (names[c] for c in self._index._computer_obj)

    def __len__(self) -> int:
        return len(self._index._computer_obj)


class _ProfileState:
    """Everything the index keeps about one profile."""

    def __init__(
        self, profile: ProfileDef, workflow_classes: frozenset[int], classes: frozenset[int]
    ) -> None:
        self.profile = profile
        self.id = profile.id
        self.fallback = profile.fallback
        #: classes of the objects the profile's workflows run for (the pairs of computer states)
        self.workflow_classes = workflow_classes
        #: classes resolved: the workflow classes, plus computers for the Default Action Account
        self.classes = classes
        self.static_assocs: dict[int, Association] = {}
        #: class -> (code at the enforced level, code at the normal level) of all/class targets
        self.static: dict[int, tuple[int, int]] = {}
        #: class -> the code of an object no group/object association covers
        self.final_static: dict[int, int] = {}
        #: [normal, enforced]: object position -> account ids of object associations
        self.obj_assocs: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})
        #: [normal, enforced]: account id -> group ids of group associations
        self.grp_groups: tuple[dict[int, list[str]], dict[int, list[str]]] = ({}, {})
        #: [normal, enforced]: account id -> positions covered by its group associations
        self.grp_sets: tuple[dict[int, frozenset[int]], dict[int, frozenset[int]]] = ({}, {})
        #: position -> code, for objects decided by a group or object association
        self.exceptions: dict[int, int] = {}

    def code(self, pos: int, cls: int) -> int:
        found = self.exceptions.get(pos)
        if found is not None:
            return found
        return self.final_static.get(cls, NO_CANDIDATE)

    def decide(self, pos: int, cls: int) -> tuple[int, bool]:
        """The code of ``pos`` from first principles, and whether a group/object association
        decided it (then it belongs in ``exceptions``)."""
        s1, s0 = self.static.get(cls, (NO_CANDIDATE, NO_CANDIDATE))
        for level in (1, 0):
            accs = self.obj_assocs[level].get(pos)
            if accs:
                return _one_or_conflict(set(accs)), True
            found = {acc for acc, covered in self.grp_sets[level].items() if pos in covered}
            if found:
                return _one_or_conflict(found), True
            if level == 1 and s1 != NO_CANDIDATE:
                return s1, False
        return s0, False

    def refresh(self, pos: int, cls: int) -> None:
        code, dynamic = self.decide(pos, cls)
        if dynamic:
            self.exceptions[pos] = code
        else:
            self.exceptions.pop(pos, None)


def _one_or_conflict(accounts: set[int]) -> int:
    return next(iter(accounts)) if len(accounts) == 1 else CONFLICT


class ResolutionIndex:
    """Resolution of a whole management group. Build with :meth:`build`."""

    def __init__(
        self,
        *,
        hierarchy: ClassHierarchy,
        groups: GroupCatalog,
        profiles: Iterable[ProfileDef],
        workflows: Iterable[WorkflowDef],
        accounts: Iterable[AccountInfo],
        associations: Iterable[Association],
        objects: ObjectTable,
        timings: dict[str, float] | None = None,
    ) -> None:
        clock = perf_counter()
        self._h = hierarchy
        self._groups = groups
        self._objects = objects
        self._profiles = {p.id: p for p in profiles}
        self._workflows = {w.id: w for w in workflows}
        self._targeted = targeted_classes_by_profile(self._workflows.values())
        self._accounts = {a.id: a for a in accounts}
        self._assocs: dict[int, Association] = {}
        self._assoc_lists: dict[str, list[Association]] = {}
        for a in sorted(associations, key=lambda a: a.id):
            self._register(a)
        self._index_objects()
        n_computers = len(objects.computer_names)
        self._epochs = [1] * n_computers
        self._state_cache: dict[int, ComputerState] = {}

        # Group memberships, once, for every group an association names.
        t_groups = perf_counter()
        self._population = Population(
            dict(enumerate(map(objects.class_names.__getitem__, objects.class_ix))),
            objects.properties,
            self._by_name,
        )
        self._members_cache: dict[str, frozenset[int]] = {}
        for a in self._assocs.values():
            if a.target_kind is TargetKind.GROUP and a.target is not None and a.target in groups:
                self._members(a.target)

        t_resolve = perf_counter()
        self._catalog = Catalog(
            hierarchy=hierarchy,
            groups=_IndexedGroups(groups, hierarchy, self._members_cache, self._pos),
            profiles=self._profiles,
            accounts=self._accounts,
            associations=self._assoc_lists,
            targeted_classes=self._targeted,
            computers=_ComputerRecords(self),
        )
        self._states: dict[str, _ProfileState] = {}
        self._targeting: list[list[_ProfileState]] = [[] for _ in objects.class_names]
        self._build_profiles()
        if timings is not None:
            timings["index"] = t_groups - clock
            timings["groups"] = t_resolve - t_groups
            timings["resolve"] = perf_counter() - t_resolve

    @classmethod
    def build(
        cls,
        *,
        hierarchy: ClassHierarchy,
        groups: GroupCatalog,
        profiles: Iterable[ProfileDef],
        workflows: Iterable[WorkflowDef],
        accounts: Iterable[AccountInfo],
        associations: Iterable[Association],
        objects: ObjectTable | Iterable[ObjectRecord],
        timings: dict[str, float] | None = None,
    ) -> ResolutionIndex:
        """Resolve a whole management group. ``timings``, when given, receives the seconds spent
        indexing objects (``index``), evaluating groups (``groups``) and resolving (``resolve``).
        """
        if not isinstance(objects, ObjectTable):
            table = ObjectTable()
            for record in objects:
                table.add_record(record)
            objects = table
        return cls(
            hierarchy=hierarchy,
            groups=groups,
            profiles=profiles,
            workflows=workflows,
            accounts=accounts,
            associations=associations,
            objects=objects,
            timings=timings,
        )

    # -- construction ------------------------------------------------------------------------

    def _register(self, a: Association) -> None:
        if a.id in self._assocs:
            raise AlreadyExists(f"association #{a.id} already exists")
        if a.account_id < 0:
            raise InvalidInput(f"association #{a.id}: account ids are never negative")
        self._assocs[a.id] = a
        lst = self._assoc_lists.setdefault(a.profile, [])
        bisect.insort(lst, a, key=lambda x: x.id)

    def _index_objects(self) -> None:
        t = self._objects
        self._pos: dict[int, int] = {oid: pos for pos, oid in enumerate(t.ids)}
        self._by_name: dict[str, int] = {name: pos for pos, name in enumerate(t.full_names)}
        by_class: list[array[int]] = [array("I") for _ in t.class_names]
        on_computer: list[list[int]] = [[] for _ in t.computer_names]
        for pos, (cls, comp) in enumerate(zip(t.class_ix, t.computer_ix, strict=True)):
            by_class[cls].append(pos)
            on_computer[comp].append(pos)
        self._by_class = by_class
        self._on_computer = on_computer
        # The computer object of each computer: the unhosted instance of a computer class.
        self._computer_obj: dict[int, int] = {}
        for cls, name in enumerate(t.class_names):
            if name in self._h and self._h.is_computer(name):
                for pos in by_class[cls]:
                    if t.host_ids[pos] < 0:
                        self._computer_obj[t.computer_ix[pos]] = pos
        self._computer_pos = {name: i for i, name in enumerate(t.computer_names)}

    def _members(self, group_id: str) -> frozenset[int]:
        return self._groups.members(group_id, self._population, self._members_cache)

    def _classes_of(self, targets: Iterable[str]) -> frozenset[int]:
        targets = tuple(targets)
        return frozenset(
            cls
            for cls, name in enumerate(self._objects.class_names)
            if name in self._h and any(self._h.is_a(name, t) for t in targets)
        )

    def _build_profiles(self) -> None:
        computers = frozenset(
            cls
            for cls, name in enumerate(self._objects.class_names)
            if name in self._h and self._h.is_computer(name)
        )
        for pid, profile in self._profiles.items():
            targets = self._targeted.get(pid)
            if not targets and pid != DEFAULT_ACTION_PROFILE:
                continue  # no workflow uses it: nothing runs as it
            wf_classes = self._classes_of(targets or ())
            classes = wf_classes | computers if pid == DEFAULT_ACTION_PROFILE else wf_classes
            ps = _ProfileState(profile, wf_classes, classes)
            self._states[pid] = ps
            for cls in wf_classes:
                self._targeting[cls].append(ps)
            self._resolve_profile(ps)
        self._daa = self._states.get(DEFAULT_ACTION_PROFILE)

    def _resolve_profile(self, ps: _ProfileState) -> None:
        for a in self._assoc_lists.get(ps.id, ()):
            self._attach(ps, a)
        for cls in ps.classes:
            self._set_static(ps, cls, self._static_codes(ps, cls, ps.static_assocs.values()))
        for level in (0, 1):
            for acc, gids in ps.grp_groups[level].items():
                ps.grp_sets[level][acc] = self._union(gids)
        # Per level, every covered object at once: each account's objects, then the objects
        # two accounts share (a conflict), all with set and dict operations that run in C.
        cls_of = self._objects.class_ix
        enforced_static = {cls for cls, (s1, _) in ps.static.items() if s1 != NO_CANDIDATE}
        merged: list[dict[int, int]] = []
        for level in (0, 1):
            sets = ps.grp_sets[level]
            decided: dict[int, int] = {}
            seen: set[int] = set()
            shared: set[int] = set()
            for acc, covered in sets.items():
                shared |= seen & covered
                seen |= covered
                decided.update(dict.fromkeys(covered, acc))
            decided.update(dict.fromkeys(shared, CONFLICT))
            for pos, accs in ps.obj_assocs[level].items():
                decided[pos] = _one_or_conflict(set(accs))
            # Only objects the profile resolves; and at the normal level, an enforced
            # class/all association outranks group and object targets.
            skip = enforced_static if level == 0 else set()
            scope = ps.classes
            merged.append(
                {
                    pos: code
                    for pos, code in decided.items()
                    if cls_of[pos] in scope and cls_of[pos] not in skip
                }
            )
        ps.exceptions = merged[0]
        ps.exceptions.update(merged[1])

    def _attach(self, ps: _ProfileState, a: Association) -> None:
        level = 1 if a.enforced else 0
        if a.target_kind in (TargetKind.ALL, TargetKind.CLASS):
            ps.static_assocs[a.id] = a
        elif a.target_kind is TargetKind.GROUP:
            ps.grp_groups[level].setdefault(a.account_id, []).append(a.target or "")
        else:
            pos = self._by_name.get(a.target or "")
            if pos is not None:
                ps.obj_assocs[level].setdefault(pos, []).append(a.account_id)

    def _detach(self, ps: _ProfileState, a: Association) -> None:
        level = 1 if a.enforced else 0
        if a.target_kind in (TargetKind.ALL, TargetKind.CLASS):
            del ps.static_assocs[a.id]
        elif a.target_kind is TargetKind.GROUP:
            gids = ps.grp_groups[level][a.account_id]
            gids.remove(a.target or "")
            if not gids:
                del ps.grp_groups[level][a.account_id]
        else:
            pos = self._by_name.get(a.target or "")
            if pos is not None:
                accs = ps.obj_assocs[level][pos]
                accs.remove(a.account_id)
                if not accs:
                    del ps.obj_assocs[level][pos]

    def _union(self, group_ids: Sequence[str]) -> frozenset[int]:
        sets = [self._members(g) for g in group_ids if g in self._groups]
        if len(sets) == 1:
            return sets[0]
        return frozenset().union(*sets)

    def _covers_class(self, ps: _ProfileState, a: Association, cls: int) -> bool:
        name = self._objects.class_names[cls]
        if a.target_kind is TargetKind.ALL:
            probe = ObjectRecord(-1, name, "", (), {}, None, "")
            return all_targets_cover(ps.profile, probe, self._catalog)[0]
        target = a.target or ""
        return target in self._h and self._h.is_a(name, target)

    def _static_codes(
        self, ps: _ProfileState, cls: int, assocs: Iterable[Association]
    ) -> tuple[int, int]:
        """Codes at the enforced and the normal level from the all/class associations."""
        best: list[tuple[int, int, int] | None] = [None, None]
        accs: list[set[int]] = [set(), set()]
        all_covers: bool | None = None
        for a in assocs:
            if a.target_kind is TargetKind.ALL:
                if all_covers is None:
                    all_covers = self._covers_class(ps, a, cls)
                if not all_covers:
                    continue
            elif not self._covers_class(ps, a, cls):
                continue
            rank = rank_of(a, self._catalog)
            level = rank[0]
            top = best[level]
            if top is None or rank > top:
                best[level] = rank
                accs[level] = {a.account_id}
            elif rank == top:
                accs[level].add(a.account_id)
        s1 = _one_or_conflict(accs[1]) if accs[1] else NO_CANDIDATE
        s0 = _one_or_conflict(accs[0]) if accs[0] else NO_CANDIDATE
        return s1, s0

    @staticmethod
    def _set_static(ps: _ProfileState, cls: int, codes: tuple[int, int]) -> None:
        ps.static[cls] = codes
        ps.final_static[cls] = codes[0] if codes[0] != NO_CANDIDATE else codes[1]

    # -- answers -----------------------------------------------------------------------------

    def _position(self, object_id: int) -> int:
        pos = self._pos.get(object_id)
        if pos is None:
            raise NotFound(f"unknown object #{object_id}")
        return pos

    def _state(self, profile_id: str) -> _ProfileState:
        ps = self._states.get(profile_id)
        if ps is None:
            if profile_id in self._profiles:
                raise InvalidInput(f"no workflow uses profile {profile_id}: it resolves nothing")
            raise NotFound(f"unknown profile {profile_id!r}")
        return ps

    def _computer_object_of_name(self, name: str) -> int | None:
        cix = self._computer_pos.get(name)
        return None if cix is None else self._computer_obj.get(cix)

    def _action(self, cix: int) -> PairOutcome:
        """The default action account of a computer (``_run_as_action_account``)."""
        daa = self._daa
        pos = self._computer_obj.get(cix)
        if daa is None or pos is None:
            return Outcome.ACTION_ACCOUNT, None
        code = daa.code(pos, self._objects.class_ix[pos])
        if code == CONFLICT:
            return Outcome.CONFLICT, None
        if code == NO_CANDIDATE:
            return Outcome.ACTION_ACCOUNT, None
        if self._accounts[code].distributed_to(self._objects.computer_names[cix]):
            return Outcome.ACTION_ACCOUNT, code
        return Outcome.NOT_DISTRIBUTED, code

    def _outcome_of(self, ps: _ProfileState, code: int, cix: int) -> PairOutcome:
        if code >= 0:
            if self._accounts[code].distributed_to(self._objects.computer_names[cix]):
                return Outcome.ACCOUNT, code
            return Outcome.NOT_DISTRIBUTED, code
        if code == CONFLICT:
            return Outcome.CONFLICT, None
        if not ps.fallback:
            return Outcome.UNRESOLVED, None
        return self._action(cix)

    def _pair(self, ps: _ProfileState, pos: int) -> PairOutcome:
        t = self._objects
        return self._outcome_of(ps, ps.code(pos, t.class_ix[pos]), t.computer_ix[pos])

    def outcome(self, profile_id: str, object_id: int) -> PairOutcome:
        """What ``resolve_for_profile(profile, object)`` decides: (outcome, account id)."""
        ps = self._state(profile_id)
        pos = self._position(object_id)
        if self._objects.class_ix[pos] not in ps.classes:
            raise InvalidInput(
                f"no workflow of profile {profile_id} targets object #{object_id} "
                f"({self._objects.class_names[self._objects.class_ix[pos]]})"
            )
        return self._pair(ps, pos)

    def resolved_profiles(self) -> list[str]:
        """Profiles the index resolves (used by a workflow, or the Default Action Account)."""
        return sorted(self._states)

    def targeted_objects(self, profile_id: str) -> Iterator[int]:
        """Ids of the objects ``profile_id`` is resolved for."""
        ps = self._state(profile_id)
        ids = self._objects.ids
        for cls in sorted(ps.classes):
            for pos in self._by_class[cls]:
                yield ids[pos]

    def group_members(self, group_id: str) -> frozenset[int]:
        """Ids of the objects of a group (evaluated once, then cached)."""
        if group_id not in self._groups:
            raise NotFound(f"unknown group {group_id!r}")
        ids = self._objects.ids
        return frozenset(ids[pos] for pos in self._members(group_id))

    def record(self, object_id: int) -> ObjectRecord:
        return self._objects.record(self._position(object_id))

    def computers(self) -> list[str]:
        """Every computer that hosts at least one object."""
        return list(self._objects.computer_names)

    def epoch(self, computer: str) -> int:
        return self._epochs[self._computer_index(computer)]

    def _computer_index(self, computer: str) -> int:
        cix = self._computer_pos.get(computer)
        if cix is None:
            raise NotFound(f"unknown computer {computer!r}")
        return cix

    def computer_state(self, computer: str) -> ComputerState:
        cix = self._computer_index(computer)
        state = self._state_cache.get(cix)
        if state is None:
            state = self._state_cache[cix] = self._compute_state(cix)
        return state

    def _compute_state(self, cix: int) -> ComputerState:
        t = self._objects
        name = t.computer_names[cix]
        action = self._action(cix)
        accounts_map = self._accounts
        bindings: list[tuple[str, int, int]] = []
        conflicts: list[tuple[str, int]] = []
        unresolved: list[tuple[str, int]] = []
        not_distributed: list[tuple[str, int, int]] = []
        needed: set[int] = set()
        if action[0] is Outcome.ACTION_ACCOUNT and action[1] is not None:
            needed.add(action[1])
        distributed: dict[int, bool] = {}
        class_ix = t.class_ix
        ids = t.ids
        targeting = self._targeting
        for pos in self._on_computer[cix]:
            cls = class_ix[pos]
            oid = ids[pos]
            for ps in targeting[cls]:
                code = ps.exceptions.get(pos)
                if code is None:
                    code = ps.final_static[cls]
                if code >= 0:
                    ok = distributed.get(code)
                    if ok is None:
                        ok = distributed[code] = accounts_map[code].distributed_to(name)
                    if ok:
                        bindings.append((ps.id, oid, code))
                        needed.add(code)
                    else:
                        not_distributed.append((ps.id, oid, code))
                elif code == CONFLICT:
                    conflicts.append((ps.id, oid))
                elif not ps.fallback:
                    unresolved.append((ps.id, oid))
                elif action[0] is Outcome.CONFLICT:
                    conflicts.append((ps.id, oid))
                elif action[0] is Outcome.NOT_DISTRIBUTED:
                    assert action[1] is not None
                    not_distributed.append((ps.id, oid, action[1]))
                # else: runs as the action account, which ``action`` already names
        bindings.sort()
        conflicts.sort()
        unresolved.sort()
        not_distributed.sort()
        accounts = tuple(sorted((a, accounts_map[a].secret_version) for a in needed))
        content = (name, action[0].value, action[1], accounts, bindings, conflicts, unresolved)
        # repr of tuples of str/int is stable across runs and platforms: a canonical form.
        digest = hashlib.sha256(repr((content, not_distributed)).encode()).hexdigest()
        return ComputerState(
            computer=name,
            action=action,
            accounts=accounts,
            bindings=tuple(bindings),
            conflicts=tuple(conflicts),
            unresolved=tuple(unresolved),
            not_distributed=tuple(not_distributed),
            digest=digest,
        )

    # -- explain -----------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        """A :class:`Catalog` view on the index, for the per-object functions."""
        return self._catalog

    def explain(self, subject: str, object_id: int) -> Resolution:
        """The whole chain for a workflow (or a profile) and an object, by the contract itself."""
        record = self.record(object_id)
        workflow = self._workflows.get(subject)
        if workflow is not None:
            return resolve_workflow(workflow, record, self._catalog)
        profile = self._profiles.get(subject)
        if profile is None:
            raise NotFound(f"no workflow or profile named {subject!r}")
        return resolve_for_profile(profile, record, self._catalog)

    # -- change ------------------------------------------------------------------------------

    def add_association(self, association: Association) -> set[str]:
        """Add an association; returns the computers whose state changed (epochs bumped)."""
        self._register(association)
        ps = self._states.get(association.profile)
        if ps is None:
            return set()
        return self._change(ps, association, adding=True)

    def remove_association(self, association_id: int) -> set[str]:
        """Remove an association; returns the computers whose state changed (epochs bumped)."""
        a = self._assocs.get(association_id)
        if a is None:
            raise NotFound(f"unknown association #{association_id}")
        del self._assocs[association_id]
        self._assoc_lists[a.profile].remove(a)
        ps = self._states.get(a.profile)
        if ps is None:
            return set()
        return self._change(ps, a, adding=False)

    def _change(self, ps: _ProfileState, a: Association, *, adding: bool) -> set[str]:
        t = self._objects
        class_ix = t.class_ix
        positions: list[int]
        mutate: Callable[[], None]
        edit = self._attach if adding else self._detach
        if a.target_kind in (TargetKind.ALL, TargetKind.CLASS):
            after = dict(ps.static_assocs)
            if adding:
                after[a.id] = a
            else:
                del after[a.id]
            new_static = {}
            for cls in ps.classes:
                if self._covers_class(ps, a, cls):
                    codes = self._static_codes(ps, cls, after.values())
                    if codes != ps.static[cls]:
                        new_static[cls] = codes
            positions = [pos for cls in new_static for pos in self._by_class[cls]]

            def mutate() -> None:
                edit(ps, a)
                for cls, codes in new_static.items():
                    gate_moved = (codes[0] == NO_CANDIDATE) != (ps.static[cls][0] == NO_CANDIDATE)
                    self._set_static(ps, cls, codes)
                    if gate_moved:
                        # An enforced class/all candidate appeared or vanished: it decides over
                        # normal group/object targets, so those exceptions are reconsidered.
                        for pos in self._by_class[cls]:
                            ps.refresh(pos, cls)

        elif a.target_kind is TargetKind.GROUP:
            target = a.target or ""
            members = self._members(target) if target in self._groups else frozenset()
            positions = [pos for pos in members if class_ix[pos] in ps.classes]
            level = 1 if a.enforced else 0

            def mutate() -> None:
                edit(ps, a)
                gids = ps.grp_groups[level].get(a.account_id)
                if gids:
                    ps.grp_sets[level][a.account_id] = self._union(gids)
                else:
                    ps.grp_sets[level].pop(a.account_id, None)
                for pos in positions:
                    ps.refresh(pos, class_ix[pos])

        else:
            found = self._by_name.get(a.target or "")
            positions = [found] if found is not None and class_ix[found] in ps.classes else []

            def mutate() -> None:
                edit(ps, a)
                for pos in positions:
                    ps.refresh(pos, class_ix[pos])

        before = self._observe(ps, positions)
        mutate()
        after_obs = self._observe(ps, positions)
        changed = {
            t.computer_ix[pos]
            for pos, old, new in zip(positions, before, after_obs, strict=True)
            if old != new
        }
        return self._bump(changed)

    def _observe(
        self, ps: _ProfileState, positions: Sequence[int]
    ) -> list[tuple[PairOutcome | None, PairOutcome | None]]:
        """What a change can alter at each position: the pair's outcome (when a workflow of the
        profile runs for it) and, for the Default Action Account, the computer's action."""
        t = self._objects
        is_daa = ps is self._daa
        out: list[tuple[PairOutcome | None, PairOutcome | None]] = []
        for pos in positions:
            cls = t.class_ix[pos]
            pair = self._pair(ps, pos) if cls in ps.workflow_classes else None
            action = None
            if is_daa and self._computer_obj.get(t.computer_ix[pos]) == pos:
                action = self._action(t.computer_ix[pos])
            out.append((pair, action))
        return out

    def _bump(self, computers: Iterable[int]) -> set[str]:
        names = self._objects.computer_names
        out: set[str] = set()
        for cix in computers:
            self._epochs[cix] += 1
            self._state_cache.pop(cix, None)
            out.add(names[cix])
        return out

    def set_distribution(
        self, account_id: int, mode: DistributionMode, approved: Iterable[str] = ()
    ) -> set[str]:
        """Change an account's distribution; returns the computers whose state changed.

        Only computers whose right to the secret flips can change; each of them is compared
        before and after (a flip of the whole management group between more and less secure
        therefore costs one state computation per computer).
        """
        old = self._accounts.get(account_id)
        if old is None:
            raise NotFound(f"unknown account #{account_id}")
        new = replace(old, distribution_mode=mode, approved=frozenset(approved))
        names = self._objects.computer_names
        if old.distribution_mode is new.distribution_mode is DistributionMode.MORE_SECURE:
            flipped = {
                self._computer_pos[c]
                for c in old.approved ^ new.approved
                if c in self._computer_pos
            }
        else:
            flipped = {
                cix
                for cix, name in enumerate(names)
                if old.distributed_to(name) != new.distributed_to(name)
            }
        before = {cix: self.computer_state(names[cix]).digest for cix in flipped}
        self._accounts[account_id] = new
        for cix in flipped:
            self._state_cache.pop(cix, None)
        changed = [cix for cix in flipped if self.computer_state(names[cix]).digest != before[cix]]
        return self._bump(changed)


__all__ = [
    "CONFLICT",
    "NO_CANDIDATE",
    "ComputerState",
    "ObjectTable",
    "PairOutcome",
    "ResolutionIndex",
]
