"""The bulk resolution index: the answer of :func:`~runas.domain.resolution.resolve_for_profile`
for every (profile, targeted object) pair of a management group, kept current under change.

Why it is fast: see :mod:`runas.domain.bulk.profile_index` (codes per class, exceptions per
object). Group memberships are evaluated once over the whole population
(``GroupCatalog.members`` with a shared cache); for each profile the objects its group and
object associations cover are resolved with set operations (a union per account, an
intersection to find the objects two accounts fight over). An outcome is then one dictionary
probe plus a distribution check.

Per computer, the :class:`~runas.domain.bulk.computer_state.ComputerState` (what its agent
must receive) is built on first use and cached. An association change knows exactly which
pairs it changed (their outcome before and after): it patches the cached states of their
computers entry by entry and bumps their epochs; states never built stay lazy.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from time import perf_counter

from runas.domain.accounts import DistributionMode
from runas.domain.bulk.catalog_views import ComputerRecords, IndexedGroups
from runas.domain.bulk.computer_state import (
    CONFLICT as CONFLICT_ENTRY,
)
from runas.domain.bulk.computer_state import (
    UNRESOLVED,
    ComputerState,
    StateLayout,
    entry_of,
    fallback_entry,
)
from runas.domain.bulk.object_table import ObjectTable
from runas.domain.bulk.profile_index import (
    CONFLICT,
    NO_CANDIDATE,
    PairOutcome,
    ProfileIndex,
)
from runas.domain.classes import ClassHierarchy
from runas.domain.groups import GroupCatalog, Population
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
            groups=IndexedGroups(groups, hierarchy, self._members_cache, self._pos),
            profiles=self._profiles,
            accounts=self._accounts,
            associations=self._assoc_lists,
            targeted_classes=self._targeted,
            computers=ComputerRecords(self),
        )
        self._states: dict[str, ProfileIndex] = {}
        self._targeting: list[list[ProfileIndex]] = [[] for _ in objects.class_names]
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
            ps = ProfileIndex(profile, wf_classes, classes)
            self._states[pid] = ps
            for cls in sorted(wf_classes):
                ps.slot[cls] = len(self._targeting[cls])
                self._targeting[cls].append(ps)
            self._resolve_profile(ps)
        self._daa = self._states.get(DEFAULT_ACTION_PROFILE)
        # Shared by the layout of every computer state: one tuple per class.
        self._state_profiles = [tuple((ps.id, ps.salt) for ps in t) for t in self._targeting]

    def _resolve_profile(self, ps: ProfileIndex) -> None:
        by_name = self._by_name
        for a in self._assoc_lists.get(ps.id, ()):
            ps.attach(a, by_name)
        for cls in ps.classes:
            ps.set_static(cls, self._static_codes(ps, cls, ps.static_assocs.values()))
        for level in (0, 1):
            for acc, gids in ps.grp_groups[level].items():
                ps.grp_sets[level][acc] = self._union(gids)
        ps.resolve_exceptions(self._objects.class_ix)

    def _union(self, group_ids: Sequence[str]) -> frozenset[int]:
        sets = [self._members(g) for g in group_ids if g in self._groups]
        if len(sets) == 1:
            return sets[0]
        return frozenset().union(*sets)

    def _covers_class(self, ps: ProfileIndex, a: Association, cls: int) -> bool:
        name = self._objects.class_names[cls]
        if a.target_kind is TargetKind.ALL:
            probe = ObjectRecord(-1, name, "", (), {}, None, "")
            return all_targets_cover(ps.profile, probe, self._catalog)[0]
        target = a.target or ""
        return target in self._h and self._h.is_a(name, target)

    def _static_codes(
        self, ps: ProfileIndex, cls: int, assocs: Iterable[Association]
    ) -> tuple[int, int]:
        return ps.static_codes(
            cls,
            assocs,
            covers=lambda a: self._covers_class(ps, a, cls),
            rank=lambda a: rank_of(a, self._catalog),
        )

    # -- answers -----------------------------------------------------------------------------

    def _position(self, object_id: int) -> int:
        pos = self._pos.get(object_id)
        if pos is None:
            raise NotFound(f"unknown object #{object_id}")
        return pos

    def _state(self, profile_id: str) -> ProfileIndex:
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

    def _outcome_of(self, ps: ProfileIndex, code: int, cix: int) -> PairOutcome:
        if code >= 0:
            if self._accounts[code].distributed_to(self._objects.computer_names[cix]):
                return Outcome.ACCOUNT, code
            return Outcome.NOT_DISTRIBUTED, code
        if code == CONFLICT:
            return Outcome.CONFLICT, None
        if not ps.fallback:
            return Outcome.UNRESOLVED, None
        return self._action(cix)

    def _pair(self, ps: ProfileIndex, pos: int) -> PairOutcome:
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
        """What ``computer``'s agent must hold; built on first use, then kept current."""
        cix = self._computer_index(computer)
        state = self._state_cache.get(cix)
        if state is None:
            state = self._state_cache[cix] = self._compute_state(cix)
        return state

    def materialised(self) -> int:
        """How many computer states are cached (and so patched on change)."""
        return len(self._state_cache)

    def fresh_state(self, computer: str) -> ComputerState:
        """``computer``'s state built from scratch, cache untouched: to check a patched state
        against, or to time a cold build."""
        return self._compute_state(self._computer_index(computer))

    def drop_states(self) -> None:
        """Forget every cached state (each is built again on its next use)."""
        self._state_cache.clear()

    def _compute_state(self, cix: int) -> ComputerState:
        """A computer's state from scratch."""
        t = self._objects
        name = t.computer_names[cix]
        action = self._action(cix)
        on_action = fallback_entry(action)
        accounts_map = self._accounts
        entries = array("q")
        append = entries.append
        distributed: dict[int, bool] = {}
        class_ix = t.class_ix
        targeting = self._targeting
        positions = self._on_computer[cix]
        for pos in positions:
            cls = class_ix[pos]
            for ps in targeting[cls]:
                code = ps.exceptions.get(pos)
                if code is None:
                    code = ps.final_static[cls]
                if code >= 0:
                    ok = distributed.get(code)
                    if ok is None:
                        ok = distributed[code] = accounts_map[code].distributed_to(name)
                    # entry_of(), inlined: this loop runs ~490 times per computer
                    append(code << 2 if ok else code << 2 | 1)
                elif code == CONFLICT:
                    append(CONFLICT_ENTRY)
                elif not ps.fallback:
                    append(UNRESOLVED)
                else:
                    append(on_action)
        layout = StateLayout(
            tuple(t.ids[pos] for pos in positions),
            tuple(self._state_profiles[class_ix[pos]] for pos in positions),
        )
        return ComputerState.build(name, action, layout, entries, accounts_map)

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

    def _change(self, ps: ProfileIndex, a: Association, *, adding: bool) -> set[str]:
        t = self._objects
        class_ix = t.class_ix
        positions: list[int]
        mutate: Callable[[], None]
        edit = ProfileIndex.attach if adding else ProfileIndex.detach
        if adding and a.position is not None:
            # The new codes below are computed before ``edit`` runs; an ordered profile's
            # choice among tied accounts needs the new account's position already.
            ps.positions[a.account_id] = a.position
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
                edit(ps, a, self._by_name)
                for cls, codes in new_static.items():
                    gate_moved = (codes[0] == NO_CANDIDATE) != (ps.static[cls][0] == NO_CANDIDATE)
                    ps.set_static(cls, codes)
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
                edit(ps, a, self._by_name)
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
                edit(ps, a, self._by_name)
                for pos in positions:
                    ps.refresh(pos, class_ix[pos])

        before = self._observe(ps, positions)
        mutate()
        return self._patch(ps, positions, before, self._observe(ps, positions))

    def _entry(self, ps: ProfileIndex, pos: int) -> int:
        """The entry of one pair in its computer's state (as ``_compute_state`` writes it)."""
        t = self._objects
        code = ps.code(pos, t.class_ix[pos])
        cix = t.computer_ix[pos]
        if code >= 0:
            ok = self._accounts[code].distributed_to(t.computer_names[cix])
            return entry_of((Outcome.ACCOUNT if ok else Outcome.NOT_DISTRIBUTED, code))
        if code == CONFLICT:
            return CONFLICT_ENTRY
        if not ps.fallback:
            return UNRESOLVED
        return fallback_entry(self._action(cix))

    def _observe(
        self, ps: ProfileIndex, positions: Sequence[int]
    ) -> list[tuple[int | None, PairOutcome | None]]:
        """What a change can alter at each position: the pair's entry (when a workflow of the
        profile runs for it) and, for the Default Action Account, the computer's action."""
        t = self._objects
        is_daa = ps is self._daa
        out: list[tuple[int | None, PairOutcome | None]] = []
        for pos in positions:
            cls = t.class_ix[pos]
            entry = self._entry(ps, pos) if cls in ps.workflow_classes else None
            action = None
            if is_daa and self._computer_obj.get(t.computer_ix[pos]) == pos:
                action = self._action(t.computer_ix[pos])
            out.append((entry, action))
        return out

    def _patch(
        self,
        ps: ProfileIndex,
        positions: Sequence[int],
        before: Sequence[tuple[int | None, PairOutcome | None]],
        after: Sequence[tuple[int | None, PairOutcome | None]],
    ) -> set[str]:
        """Patch the cached state of every computer a change moved; bump their epochs.

        The cost is one entry update (two hashes) per changed pair: the states of computers
        nothing moved on are not touched, and computers never materialised stay lazy.
        """
        t = self._objects
        class_ix = t.class_ix
        changes: dict[int, list[tuple[int, int, int, int]]] = {}
        actions: dict[int, PairOutcome] = {}
        for pos, (old_entry, old_action), (new_entry, new_action) in zip(
            positions, before, after, strict=True
        ):
            if old_entry == new_entry and old_action == new_action:
                continue
            cix = t.computer_ix[pos]
            found = changes.setdefault(cix, [])
            if new_action is not None and new_action != old_action:
                actions[cix] = new_action
            if new_entry is not None and new_entry != old_entry and cix in self._state_cache:
                at = self._entry_position(cix, pos) + ps.slot[class_ix[pos]]
                found.append((at, ps.salt, t.ids[pos], new_entry))
        accounts = self._accounts
        for cix, entry_changes in changes.items():
            state = self._state_cache.get(cix)
            if state is not None:
                self._state_cache[cix] = state.patched(
                    entry_changes, accounts, action=actions.get(cix)
                )
        return self._bump(changes)

    def _entry_position(self, cix: int, pos: int) -> int:
        """Where the entries of the object at ``pos`` start in its computer's state."""
        lengths = self._state_profiles
        class_ix = self._objects.class_ix
        at = 0
        for p in self._on_computer[cix]:
            if p == pos:
                return at
            at += len(lengths[class_ix[p]])
        raise AssertionError(f"object at {pos} is not on computer {cix}")

    def _bump(self, computers: Iterable[int]) -> set[str]:
        names = self._objects.computer_names
        out: set[str] = set()
        for cix in computers:
            self._epochs[cix] += 1
            out.add(names[cix])
        return out

    def set_distribution(
        self, account_id: int, mode: DistributionMode, approved: Iterable[str] = ()
    ) -> set[str]:
        """Change an account's distribution; returns the computers whose state changed.

        Only computers whose right to the secret flips can change; each of them is rebuilt
        and compared before and after (a flip of the whole management group between more and
        less secure therefore costs one state computation per computer). Patching would need
        the entries that name the account, which the compact state does not index.
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
