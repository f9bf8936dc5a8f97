"""The bulk resolution index gives exactly the answers of the per-object contract
(``resolve_for_profile``), and keeps giving them under change."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runas.domain.accounts import AccountType, DistributionMode
from runas.domain.bulk import ComputerState, ResolutionIndex
from runas.domain.classes import ClassHierarchy
from runas.domain.groups import GroupCatalog
from runas.domain.model import (
    COMPUTER_CLASS,
    DEFAULT_ACTION_PROFILE,
    ENTITY_CLASS,
    Association,
    ClassDef,
    Condition,
    ConditionOp,
    GroupDef,
    GroupRule,
    ObjectRecord,
    ProfileDef,
    TargetKind,
    WorkflowDef,
    WorkflowKind,
)
from runas.domain.resolution import (
    AccountInfo,
    Catalog,
    Outcome,
    resolve_for_profile,
    targeted_classes_by_profile,
)
from runas.errors import InvalidInput

CLASSES = (
    ClassDef(ENTITY_CLASS, "Entity", None, abstract=True),
    ClassDef(COMPUTER_CLASS, "Computer", ENTITY_CLASS, key_properties=("name",)),
    ClassDef("Win.Computer", "Windows computer", COMPUTER_CLASS),
    ClassDef("App", "Application", ENTITY_CLASS, abstract=True, host=COMPUTER_CLASS),
    ClassDef("App.Sql", "SQL instance", "App", key_properties=("instance",)),
    ClassDef("App.Sql.Db", "SQL database", "App.Sql", key_properties=("db",)),
    ClassDef("App.Web", "Web site", "App", key_properties=("site",)),
)
HOSTED = ("App.Sql", "App.Sql.Db", "App.Web")
#: an unknown class, group or object name: associations may outlive what they name
GONE = "Gone.Thing"


@dataclass
class World:
    hierarchy: ClassHierarchy
    groups: list[GroupDef]
    profiles: list[ProfileDef]
    workflows: list[WorkflowDef]
    accounts: list[AccountInfo]
    associations: list[Association]
    objects: list[ObjectRecord]

    def index(self) -> ResolutionIndex:
        return ResolutionIndex.build(
            hierarchy=self.hierarchy,
            groups=GroupCatalog(self.groups, self.hierarchy),
            profiles=self.profiles,
            workflows=self.workflows,
            accounts=self.accounts,
            associations=self.associations,
            objects=self.objects,
        )

    def catalog(self) -> Catalog:
        by_profile: dict[str, list[Association]] = {}
        for a in sorted(self.associations, key=lambda a: a.id):
            by_profile.setdefault(a.profile, []).append(a)
        return Catalog(
            hierarchy=self.hierarchy,
            groups=GroupCatalog(self.groups, self.hierarchy),
            profiles={p.id: p for p in self.profiles},
            accounts={a.id: a for a in self.accounts},
            associations=by_profile,
            targeted_classes=targeted_classes_by_profile(self.workflows),
            computers={
                o.computer: o
                for o in self.objects
                if self.hierarchy.is_computer(o.class_id) and o.host_id is None
            },
        )


ENVS = ("prod", "test", "dev")


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    op = draw(st.sampled_from([ConditionOp.EQUALS, ConditionOp.NOT_EQUALS, ConditionOp.EXISTS]))
    prop = draw(st.sampled_from(["env", "port"]))
    value = draw(st.sampled_from(ENVS)) if prop == "env" else draw(st.sampled_from([1433, "80"]))
    return Condition(prop, op, value)


@st.composite
def associations(draw: st.DrawFn, world: World, ident: int) -> Association:
    kind = draw(st.sampled_from(list(TargetKind)))
    target: str | None = None
    if kind is TargetKind.CLASS:
        target = draw(st.sampled_from([c.id for c in CLASSES] + [GONE]))
    elif kind is TargetKind.GROUP:
        target = draw(st.sampled_from([g.id for g in world.groups] + [GONE]))
    elif kind is TargetKind.OBJECT:
        target = draw(st.sampled_from([o.full_name for o in world.objects] + [GONE]))
    account = draw(st.sampled_from(world.accounts))
    profile = draw(st.sampled_from(world.profiles))
    return Association(
        id=ident,
        profile=profile.id,
        account_id=account.id,
        account_name=account.name,
        target_kind=kind,
        target=target,
        enforced=draw(st.booleans()),
        # Ordered profiles: one position per account (the service keeps it so), numbered
        # against the account ids so that "first in turn" is not "lowest id".
        position=(100 - account.id) if profile.ordered else None,
    )


@st.composite
def worlds(draw: st.DrawFn) -> World:
    h = ClassHierarchy(CLASSES)
    objects: list[ObjectRecord] = []
    computers = [f"c{i}.corp" for i in range(draw(st.integers(1, 4)))]
    ident = 100
    for name in computers:
        ident += 1
        host = ident
        cls = draw(st.sampled_from([COMPUTER_CLASS, "Win.Computer"]))
        objects.append(ObjectRecord(host, cls, f"{cls}:{name}", (name,), {}, None, name))
        for j in range(draw(st.integers(0, 4))):
            ident += 1
            cls = draw(st.sampled_from(HOSTED))
            props: dict[str, object] = {}
            if draw(st.booleans()):
                props["env"] = draw(st.sampled_from(ENVS))
            if draw(st.booleans()):
                props["port"] = draw(st.sampled_from([1433, 80]))
            key = (name, f"i{j}")
            objects.append(ObjectRecord(ident, cls, f"{cls}:{name};i{j}", key, props, host, name))
    names = [o.full_name for o in objects]
    group_ids = [f"G{i}" for i in range(draw(st.integers(0, 4)))]
    groups = [
        GroupDef(
            id=gid,
            display_name=gid,
            members=tuple(draw(st.lists(st.sampled_from([*names, GONE]), max_size=3))),
            rules=tuple(
                GroupRule(
                    draw(st.sampled_from([c.id for c in CLASSES])),
                    tuple(draw(st.lists(conditions(), max_size=2))),
                )
                for _ in range(draw(st.integers(0, 2)))
            ),
            # any nesting, cycles included: membership cuts them
            includes=tuple(draw(st.lists(st.sampled_from(group_ids), max_size=2, unique=True))),
        )
        for gid in group_ids
    ]
    profiles = [
        ProfileDef(f"P{i}", f"P{i}", fallback=draw(st.booleans()), ordered=draw(st.booleans()))
        for i in range(draw(st.integers(1, 2)))
    ]
    if draw(st.booleans()):
        profiles.append(ProfileDef(DEFAULT_ACTION_PROFILE, "Default Action Account"))
    workflows = [
        WorkflowDef(
            f"W{i}",
            WorkflowKind.MONITOR,
            f"W{i}",
            target=draw(st.sampled_from([c.id for c in CLASSES])),
            profile=draw(st.sampled_from([p.id for p in profiles] + [None])),
        )
        for i in range(draw(st.integers(0, 5)))
    ]
    accounts = []
    for i in range(1, draw(st.integers(1, 4)) + 1):
        less = draw(st.booleans())
        approved = frozenset(() if less else draw(st.lists(st.sampled_from(computers))))
        accounts.append(
            AccountInfo(
                id=i,
                name=f"acc{i}",
                type=AccountType.ACTION,
                identity=f"corp\\u{i}",
                secret_version=i,
                distribution_mode=(
                    DistributionMode.LESS_SECURE if less else DistributionMode.MORE_SECURE
                ),
                approved=approved,
            )
        )
    world = World(h, groups, profiles, workflows, accounts, [], objects)
    world.associations = [
        draw(associations(world, i)) for i in range(1, draw(st.integers(0, 12)) + 1)
    ]
    return world


def expected(world: World, catalog: Catalog, profile_id: str, object_id: int) -> object:
    profile = catalog.profile(profile_id)
    obj = next(o for o in world.objects if o.id == object_id)
    r = resolve_for_profile(profile, obj, catalog)
    return r.outcome, (r.account.id if r.account is not None else None)


def assert_matches_contract(world: World, index: ResolutionIndex) -> None:
    catalog = world.catalog()
    for pid in index.resolved_profiles():
        for oid in index.targeted_objects(pid):
            assert index.outcome(pid, oid) == expected(world, catalog, pid, oid), (pid, oid)


def states(index: ResolutionIndex) -> dict[str, str]:
    return {c: index.computer_state(c).digest for c in index.computers()}


def listing(state: ComputerState) -> tuple[object, ...]:
    """Everything an agent receives, decoded."""
    return (
        state.computer,
        state.action,
        state.accounts,
        state.bindings,
        state.conflicts,
        state.unresolved,
        state.not_distributed,
        state.digest,
    )


def apply_random_change(
    world: World, index: ResolutionIndex, data: st.DataObject, n: int
) -> set[str]:
    """Add or remove a random association, in the index and in the world."""
    if world.associations and data.draw(st.booleans(), label="remove"):
        gone = data.draw(st.sampled_from(world.associations), label="removed")
        world.associations = [a for a in world.associations if a.id != gone.id]
        return index.remove_association(gone.id)
    added = data.draw(associations(world, 1000 + n), label="added")
    world.associations = [*world.associations, added]
    return index.add_association(added)


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(worlds())
def test_every_outcome_is_the_contracts(world: World) -> None:
    assert_matches_contract(world, world.index())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_explain_is_the_contracts_explanation(world: World) -> None:
    index = world.index()
    catalog = world.catalog()
    by_id = {o.id: o for o in world.objects}
    for pid in index.resolved_profiles():
        for oid in index.targeted_objects(pid):
            want = resolve_for_profile(catalog.profile(pid), by_id[oid], catalog)
            assert index.explain(pid, oid).to_dict() == want.to_dict()


@FAST
@given(worlds(), st.data())
def test_an_association_change_equals_a_rebuild(world: World, data: st.DataObject) -> None:
    index = world.index()
    before = states(index)
    epochs = {c: index.epoch(c) for c in index.computers()}
    changed = apply_random_change(world, index, data, 0)

    rebuilt = world.index()
    assert_matches_contract(world, index)
    after = states(index)
    assert after == states(rebuilt)
    assert changed == {c for c in before if before[c] != after[c]}
    for c in index.computers():
        assert index.epoch(c) == epochs[c] + (1 if c in changed else 0)


@FAST
@given(worlds(), st.data())
def test_patched_states_equal_states_built_from_scratch(world: World, data: st.DataObject) -> None:
    """Cached states are patched entry by entry through a series of changes; each one, and
    each state built lazily afterwards, equals the state of an index built from scratch."""
    index = world.index()
    computers = index.computers()
    cached = data.draw(st.lists(st.sampled_from(computers), unique=True), label="materialised")
    held = {c: index.computer_state(c) for c in cached}
    frozen = {c: listing(s) for c, s in held.items()}
    epochs = {c: index.epoch(c) for c in computers}
    moved: set[str] = set()
    for n in range(data.draw(st.integers(1, 4), label="changes")):
        moved |= apply_random_change(world, index, data, n)
        assert index.materialised() == len(cached)  # changes patch, they never build states
    rebuilt = world.index()
    for c in computers:
        patched, fresh = index.computer_state(c), rebuilt.computer_state(c)
        assert patched == fresh, c
        assert listing(patched) == listing(fresh), c
        assert (index.epoch(c) > epochs[c]) == (c in moved)
    # States are snapshots: one held before the changes still says what it said.
    assert {c: listing(s) for c, s in held.items()} == frozen


@FAST
@given(worlds(), st.data())
def test_a_distribution_change_equals_a_rebuild(world: World, data: st.DataObject) -> None:
    index = world.index()
    before = states(index)
    account = data.draw(st.sampled_from(world.accounts), label="account")
    mode = data.draw(st.sampled_from(list(DistributionMode)), label="mode")
    approved = frozenset(data.draw(st.lists(st.sampled_from(index.computers())), label="to"))
    changed = index.set_distribution(account.id, mode, approved)
    world.accounts = [
        replace(a, distribution_mode=mode, approved=approved) if a.id == account.id else a
        for a in world.accounts
    ]
    assert_matches_contract(world, index)
    after = states(index)
    assert after == states(world.index())
    assert changed == {c for c in before if before[c] != after[c]}


def small_world() -> World:
    """A computer hosting two SQL instances whose credentials differ (domain.md §12 ex. 2)."""
    h = ClassHierarchy(CLASSES)
    objects = [
        ObjectRecord(1, COMPUTER_CLASS, "System.Computer:abc", ("abc",), {}, None, "abc"),
        ObjectRecord(2, "App.Sql", "App.Sql:abc;X", ("abc", "X"), {}, 1, "abc"),
        ObjectRecord(3, "App.Sql", "App.Sql:abc;Y", ("abc", "Y"), {}, 1, "abc"),
    ]
    accounts = [
        AccountInfo(i, f"sa{i}", AccountType.SIMPLE, "sa", 1, DistributionMode.MORE_SECURE)
        for i in (1, 2)
    ]
    profile = ProfileDef("Sql", "SQL", fallback=False)
    workflow = WorkflowDef("Sql.Check", WorkflowKind.MONITOR, "check", "App.Sql", "Sql")
    assocs = [
        Association(1, "Sql", 1, "sa1", TargetKind.OBJECT, "App.Sql:abc;X"),
        Association(2, "Sql", 2, "sa2", TargetKind.OBJECT, "App.Sql:abc;Y"),
    ]
    return World(h, [], [profile], [workflow], accounts, assocs, objects)


def test_two_instances_on_one_computer_need_both_accounts_distributed() -> None:
    index = small_world().index()
    assert index.outcome("Sql", 2) == (Outcome.NOT_DISTRIBUTED, 1)
    changed = index.set_distribution(1, DistributionMode.MORE_SECURE, ["abc"])
    assert changed == {"abc"}
    assert index.outcome("Sql", 2) == (Outcome.ACCOUNT, 1)
    state = index.computer_state("abc")
    assert state.accounts == ((1, 1),)
    assert state.bindings == (("Sql", 2, 1),)
    assert state.not_distributed == (("Sql", 3, 2),)


def test_removing_the_only_account_leaves_a_profile_that_cannot_fall_back_unresolved() -> None:
    index = small_world().index()
    digest = index.computer_state("abc").digest
    assert index.remove_association(2) == {"abc"}
    assert index.outcome("Sql", 3) == (Outcome.UNRESOLVED, None)
    assert index.computer_state("abc").digest != digest
    assert index.epoch("abc") == 2


def test_outcome_refuses_an_object_no_workflow_of_the_profile_targets() -> None:
    with pytest.raises(InvalidInput, match="targets"):
        small_world().index().outcome("Sql", 1)


def test_an_enforced_class_association_outranks_object_targets_and_gives_way_when_removed() -> None:
    world = small_world()
    world.accounts = [
        replace(a, distribution_mode=DistributionMode.LESS_SECURE) for a in world.accounts
    ]
    index = world.index()
    enforced = Association(3, "Sql", 2, "sa2", TargetKind.CLASS, "App.Sql", enforced=True)
    assert index.add_association(enforced) == {"abc"}
    assert index.outcome("Sql", 2) == (Outcome.ACCOUNT, 2)
    assert index.remove_association(3) == {"abc"}
    assert index.outcome("Sql", 2) == (Outcome.ACCOUNT, 1)


def test_the_digest_format_is_frozen() -> None:
    """A known answer: digests must not move between runs, processes or releases (agents
    compare them), and a change of the hash behind them must be deliberate (a new prefix)."""
    index = small_world().index()
    index.set_distribution(1, DistributionMode.MORE_SECURE, ["abc"])
    assert index.computer_state("abc").digest == "s1:1c4030ba4bdf03a9"


def test_a_state_is_patched_when_the_action_account_changes() -> None:
    """Pairs that fall back to the action account move with it (conflict, not distributed)."""
    world = small_world()
    world.profiles = [replace(world.profiles[0], fallback=True)]
    world.profiles.append(ProfileDef(DEFAULT_ACTION_PROFILE, "Default Action Account"))
    world.associations = []
    index = world.index()
    before = index.computer_state("abc")
    assert before.bindings == ()
    assert before.conflicts == ()
    daa = [
        Association(7, DEFAULT_ACTION_PROFILE, 1, "sa1", TargetKind.ALL, None),
        Association(8, DEFAULT_ACTION_PROFILE, 2, "sa2", TargetKind.ALL, None),
    ]
    assert index.add_association(daa[0]) == {"abc"}
    state = index.computer_state("abc")
    assert state.action == (Outcome.NOT_DISTRIBUTED, 1)
    assert state.not_distributed == (("Sql", 2, 1), ("Sql", 3, 1))
    assert index.add_association(daa[1]) == {"abc"}
    state = index.computer_state("abc")
    assert state.conflicts == (("Sql", 2), ("Sql", 3))
    assert state.not_distributed == ()
    world.associations = daa
    assert listing(state) == listing(world.index().computer_state("abc"))
