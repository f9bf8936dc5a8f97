"""The resolution contract (domain.md §5) on hand-built catalogs: no database."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runas.domain.accounts import AccountType, DistributionMode
from runas.domain.classes import ClassHierarchy
from runas.domain.groups import GroupCatalog
from runas.domain.model import (
    COMPUTER_CLASS,
    DEFAULT_ACTION_PROFILE,
    ENTITY_CLASS,
    Association,
    ClassDef,
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
    CandidateStatus,
    Catalog,
    Outcome,
    ProfileOutcome,
    rank_of,
    resolve_for_profile,
    resolve_profile,
    resolve_workflow,
    targeted_classes_by_profile,
    why_lost,
)
from runas.errors import InvalidInput, NotFound

CLASSES = (
    ClassDef(ENTITY_CLASS, "Entity", None, abstract=True),
    ClassDef(COMPUTER_CLASS, "Computer", ENTITY_CLASS, key_properties=("name",)),
    ClassDef("T.Base", "Base", ENTITY_CLASS, key_properties=("name",), host=COMPUTER_CLASS),
    ClassDef("T.Mid", "Mid", "T.Base"),
    ClassDef("T.Leaf", "Leaf", "T.Mid"),
    ClassDef("T.Other", "Other", ENTITY_CLASS, key_properties=("name",), host=COMPUTER_CLASS),
)
HIERARCHY = ClassHierarchy(CLASSES)
GROUPS = (
    GroupDef("G.Leafs", "Leafs", rules=(GroupRule("T.Leaf"),)),
    GroupDef("G.Outer", "Outer", includes=("G.Leafs",)),
)

P = ProfileDef("P", "Profile P", context_class="T.Base")
P2 = ProfileDef("P2", "Profile P2")
STRICT = ProfileDef("Strict", "No fallback", fallback=False)
DAA = ProfileDef(DEFAULT_ACTION_PROFILE, "Default Action Account", context_class=COMPUTER_CLASS)

WORKFLOWS = (
    WorkflowDef("W.P", WorkflowKind.RULE, "uses P", "T.Base", profile="P"),
    WorkflowDef("W.P2", WorkflowKind.RULE, "uses P2", "T.Leaf", profile="P2"),
    WorkflowDef("W.Strict", WorkflowKind.RULE, "uses Strict", "T.Base", profile="Strict"),
    WorkflowDef("W.None", WorkflowKind.RULE, "no profile", "T.Base"),
)

C1 = ObjectRecord(1, COMPUTER_CLASS, "System.Computer:c1", ("c1",), {}, None, "c1")
C2 = ObjectRecord(2, COMPUTER_CLASS, "System.Computer:c2", ("c2",), {}, None, "c2")
LEAF = ObjectRecord(3, "T.Leaf", "T.Leaf:c1;leaf", ("leaf",), {}, 1, "c1")
MID = ObjectRecord(4, "T.Mid", "T.Mid:c2;mid", ("mid",), {}, 2, "c2")
OTHER = ObjectRecord(5, "T.Other", "T.Other:c1;other", ("other",), {}, 1, "c1")


def account(
    account_id: int,
    *,
    approved: Sequence[str] = ("c1", "c2"),
    mode: DistributionMode = DistributionMode.MORE_SECURE,
    type: AccountType = AccountType.WINDOWS,
) -> AccountInfo:
    return AccountInfo(
        id=account_id,
        name=f"acct{account_id}",
        type=type,
        identity=f"corp.test\\u{account_id}",
        secret_version=1,
        distribution_mode=mode,
        approved=frozenset(approved),
    )


_ids = itertools.count(1)


def assoc(
    account_id: int,
    kind: TargetKind = TargetKind.ALL,
    target: str | None = None,
    *,
    profile: str = "P",
    enforced: bool = False,
    assoc_id: int | None = None,
) -> Association:
    return Association(
        id=assoc_id if assoc_id is not None else next(_ids),
        profile=profile,
        account_id=account_id,
        account_name=f"acct{account_id}",
        target_kind=kind,
        target=target,
        enforced=enforced,
    )


def catalog(
    associations: Sequence[Association],
    accounts: Sequence[AccountInfo] | None = None,
    *,
    computers: Sequence[ObjectRecord] = (C1, C2),
) -> Catalog:
    by_profile: dict[str, list[Association]] = {}
    for a in associations:
        by_profile.setdefault(a.profile, []).append(a)
    if accounts is None:
        accounts = [account(i) for i in {a.account_id for a in associations}]
    return Catalog(
        hierarchy=HIERARCHY,
        groups=GroupCatalog(GROUPS, HIERARCHY),
        profiles={p.id: p for p in (P, P2, STRICT, DAA)},
        accounts={a.id: a for a in accounts},
        associations=by_profile,
        targeted_classes=targeted_classes_by_profile(WORKFLOWS),
        computers={c.computer: c for c in computers},
    )


def workflow(workflow_id: str) -> WorkflowDef:
    return next(w for w in WORKFLOWS if w.id == workflow_id)


# -- rank -------------------------------------------------------------------------------------


def test_rank_orders_enforced_then_kind_then_class_depth() -> None:
    cat = catalog([])
    ranks = {
        "all": rank_of(assoc(1), cat),
        "base": rank_of(assoc(1, TargetKind.CLASS, "T.Base"), cat),
        "leaf": rank_of(assoc(1, TargetKind.CLASS, "T.Leaf"), cat),
        "group": rank_of(assoc(1, TargetKind.GROUP, "G.Leafs"), cat),
        "object": rank_of(assoc(1, TargetKind.OBJECT, LEAF.full_name), cat),
        "enforced all": rank_of(assoc(1, enforced=True), cat),
    }
    assert ranks["all"] == (0, 0, 0)
    assert ranks["base"] == (0, 1, 1)
    assert ranks["leaf"] == (0, 1, 3)
    assert ranks["enforced all"] == (1, 0, 0)
    order = sorted(ranks, key=ranks.__getitem__)
    assert order == ["all", "base", "leaf", "group", "object", "enforced all"]


def test_rank_of_a_class_that_no_longer_exists_has_no_depth() -> None:
    assert rank_of(assoc(1, TargetKind.CLASS, "Gone.Class"), catalog([])) == (0, 1, 0)


# -- why_lost ---------------------------------------------------------------------------------


def _lost_reason(winner: Association, loser: Association) -> str:
    cat = catalog([winner, loser])
    pr = resolve_profile(P, LEAF, cat)
    assert pr.outcome is ProfileOutcome.ACCOUNT
    assert pr.winner == winner
    (lost,) = [c for c in pr.candidates if c.association == loser]
    assert lost.status is CandidateStatus.LOST
    return lost.reason


def test_why_lost_enforced() -> None:
    winner = assoc(1, enforced=True, assoc_id=10)
    loser = assoc(2, TargetKind.OBJECT, LEAF.full_name, assoc_id=11)
    assert _lost_reason(winner, loser) == "not enforced, and association #10 is enforced"


@pytest.mark.parametrize(
    ("winner", "loser", "reason"),
    [
        (
            assoc(1, TargetKind.OBJECT, LEAF.full_name, assoc_id=20),
            assoc(2, TargetKind.GROUP, "G.Leafs", assoc_id=21),
            "an object target (#20) outranks a group target",
        ),
        (
            assoc(1, TargetKind.GROUP, "G.Leafs", assoc_id=22),
            assoc(2, TargetKind.CLASS, "T.Leaf", assoc_id=23),
            "a group target (#22) outranks a class target",
        ),
        (
            assoc(1, TargetKind.CLASS, "T.Base", assoc_id=24),
            assoc(2, TargetKind.ALL, assoc_id=25),
            "a class target (#24) outranks all targeted objects",
        ),
        (
            assoc(1, TargetKind.CLASS, "T.Leaf", assoc_id=26),
            assoc(2, TargetKind.CLASS, "T.Mid", assoc_id=27),
            "class T.Leaf (#26) is more derived than T.Mid",
        ),
    ],
    ids=["object>group", "group>class", "class>all", "derived class"],
)
def test_why_lost_texts(winner: Association, loser: Association, reason: str) -> None:
    assert _lost_reason(winner, loser) == reason


def test_why_lost_is_pure_text() -> None:
    w = assoc(1, TargetKind.GROUP, "G.Leafs", assoc_id=5)
    lo = assoc(2, TargetKind.ALL, assoc_id=6)
    assert why_lost(lo, (0, 0, 0), w, (0, 2, 0)) == (
        "a group target (#5) outranks all targeted objects"
    )


# -- conflict ---------------------------------------------------------------------------------


def test_two_accounts_at_the_top_rank_conflict() -> None:
    a = assoc(1, TargetKind.CLASS, "T.Mid")
    b = assoc(2, TargetKind.CLASS, "T.Mid")
    low = assoc(3)
    res = resolve_for_profile(P, LEAF, catalog([low, a, b]))
    assert res.outcome is Outcome.CONFLICT
    assert not res.runs
    assert res.account is None
    assert set(res.conflicting) == {a, b}
    status = {c.association: c.status for c in res.candidates}
    assert status == {a: CandidateStatus.CONFLICT, b: CandidateStatus.CONFLICT,
                      low: CandidateStatus.LOST}  # fmt: skip
    assert any("does not guess" in s for s in res.steps)


def test_same_account_at_the_top_rank_is_tied_not_conflict() -> None:
    a = assoc(1, TargetKind.GROUP, "G.Leafs")
    b = assoc(1, TargetKind.GROUP, "G.Outer")
    res = resolve_for_profile(P, LEAF, catalog([a, b]))
    assert res.outcome is Outcome.ACCOUNT
    assert res.account is not None
    assert res.account.id == 1
    status = {c.association: c.status for c in res.candidates}
    assert status == {a: CandidateStatus.WINNER, b: CandidateStatus.TIED}


def test_different_accounts_at_different_ranks_do_not_conflict() -> None:
    res = resolve_for_profile(
        P,
        LEAF,
        catalog([assoc(1, TargetKind.CLASS, "T.Base"), assoc(2, TargetKind.CLASS, "T.Mid")]),
    )
    assert res.outcome is Outcome.ACCOUNT
    assert res.account is not None
    assert res.account.id == 2


KINDS = st.sampled_from(
    [
        (TargetKind.ALL, None),
        (TargetKind.CLASS, "T.Base"),
        (TargetKind.CLASS, "T.Mid"),
        (TargetKind.CLASS, "T.Leaf"),
        (TargetKind.CLASS, "T.Other"),
        (TargetKind.GROUP, "G.Leafs"),
        (TargetKind.OBJECT, LEAF.full_name),
        (TargetKind.OBJECT, MID.full_name),
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(st.tuples(st.integers(1, 3), KINDS, st.booleans()), max_size=6),
    data=st.data(),
)
def test_outcome_matches_a_reference_and_ignores_order(
    specs: list[tuple[int, tuple[TargetKind, str | None], bool]], data: st.DataObject
) -> None:
    assocs = [
        assoc(acc, kind, target, enforced=enf, assoc_id=i)
        for i, (acc, (kind, target), enf) in enumerate(specs, 1)
    ]
    # Reference: the covering associations of LEAF, and the accounts at the greatest rank.
    depth = {"T.Base": 1, "T.Mid": 2, "T.Leaf": 3}
    kind_rank = {TargetKind.ALL: 0, TargetKind.CLASS: 1, TargetKind.GROUP: 2, TargetKind.OBJECT: 3}
    covering = [
        a
        for a in assocs
        if a.target_kind in (TargetKind.ALL, TargetKind.GROUP)
        or (a.target_kind is TargetKind.CLASS and a.target in depth)
        or a.target == LEAF.full_name
    ]
    shuffled = data.draw(st.permutations(assocs))
    res = resolve_for_profile(P, LEAF, catalog(shuffled))
    if not covering:
        assert res.outcome is Outcome.ACTION_ACCOUNT
        assert res.fallback
        return

    def ref_rank(a: Association) -> tuple[int, int, int]:
        return (int(a.enforced), kind_rank[a.target_kind], depth.get(a.target or "", 0))

    best = max(ref_rank(a) for a in covering)
    top_accounts = {a.account_id for a in covering if ref_rank(a) == best}
    if len(top_accounts) > 1:
        assert res.outcome is Outcome.CONFLICT
        assert {a.account_id for a in res.conflicting} == top_accounts
    else:
        assert res.outcome is Outcome.ACCOUNT
        assert res.account is not None
        assert {res.account.id} == top_accounts
    assert len(res.candidates) == len(assocs)
    assert sum(c.covers for c in res.candidates) == len(covering)


# -- coverage ---------------------------------------------------------------------------------


def test_all_targeted_objects_follows_the_profiles_workflows() -> None:
    cat = catalog([assoc(1, profile="P2")])
    # P2's only workflow targets T.Leaf.
    assert resolve_for_profile(P2, LEAF, cat).outcome is Outcome.ACCOUNT
    res = resolve_for_profile(P2, MID, cat)
    assert res.outcome is Outcome.ACTION_ACCOUNT
    assert res.candidates[0].coverage == "no workflow of this profile targets this object's class"


def test_all_targeted_objects_of_a_profile_no_workflow_uses_is_its_context_class() -> None:
    hand_made = ProfileDef("Hand", "by hand", context_class="T.Mid")
    cat = catalog([assoc(1, profile="Hand")])
    assert resolve_for_profile(hand_made, LEAF, cat).outcome is Outcome.ACCOUNT
    res = resolve_for_profile(hand_made, OTHER, cat)
    assert res.outcome is Outcome.ACTION_ACCOUNT
    assert res.candidates[0].coverage == "not an instance of the profile's context class T.Mid"


def test_stale_class_and_group_targets_cover_nothing() -> None:
    cat = catalog(
        [assoc(1, TargetKind.CLASS, "Gone.Class"), assoc(2, TargetKind.GROUP, "Gone.Group")]
    )
    res = resolve_for_profile(P, LEAF, cat)
    assert res.outcome is Outcome.ACTION_ACCOUNT
    assert sorted(c.coverage for c in res.candidates) == [
        "class Gone.Class no longer exists",
        "group Gone.Group no longer exists",
    ]


def test_group_coverage_names_the_nesting() -> None:
    res = resolve_for_profile(P, LEAF, catalog([assoc(1, TargetKind.GROUP, "G.Outer")]))
    assert res.candidates[0].coverage == (
        "member of G.Outer through nested G.Leafs (rule 1: instances of T.Leaf)"
    )


def test_profiles_are_not_cumulative() -> None:
    cat = catalog([assoc(1, enforced=True, profile="P")])
    res = resolve_workflow(workflow("W.P2"), LEAF, cat)
    assert res.outcome is Outcome.ACTION_ACCOUNT
    assert res.candidates == ()


# -- fallback, no fallback, distribution -------------------------------------------------------


def test_no_candidate_falls_back_to_the_agent_identity() -> None:
    res = resolve_workflow(workflow("W.P"), LEAF, catalog([]))
    assert res.outcome is Outcome.ACTION_ACCOUNT
    assert res.fallback
    assert res.runs
    assert res.account is None


def test_fallback_uses_the_action_account_associated_for_the_computer() -> None:
    act = assoc(9, TargetKind.OBJECT, C1.full_name, profile=DEFAULT_ACTION_PROFILE)
    accounts = [account(9, approved=["c1"], type=AccountType.ACTION)]
    cat = catalog([act], accounts)
    for wf, fallback in (("W.P", True), ("W.None", False)):
        res = resolve_workflow(workflow(wf), LEAF, cat)
        assert res.outcome is Outcome.ACTION_ACCOUNT
        assert res.fallback is fallback
        assert res.account is not None
        assert res.account.id == 9
        assert res.via_action_account
    # Another computer keeps the agent's identity.
    res = resolve_workflow(workflow("W.None"), MID, cat)
    assert res.outcome is Outcome.ACTION_ACCOUNT
    assert res.account is None


def test_action_account_must_itself_be_distributed() -> None:
    act = assoc(9, TargetKind.ALL, profile=DEFAULT_ACTION_PROFILE)
    cat = catalog([act], [account(9, approved=["c2"], type=AccountType.ACTION)])
    res = resolve_workflow(workflow("W.None"), LEAF, cat)
    assert res.outcome is Outcome.NOT_DISTRIBUTED
    assert not res.runs
    assert res.account is not None
    assert res.account.id == 9
    assert any(f"Run As profile {DEFAULT_ACTION_PROFILE}" in s for s in res.steps)
    assert resolve_workflow(workflow("W.None"), MID, cat).outcome is Outcome.ACTION_ACCOUNT


def test_conflict_in_the_action_account_profile_stops_the_workflow() -> None:
    a = assoc(8, profile=DEFAULT_ACTION_PROFILE)
    b = assoc(9, profile=DEFAULT_ACTION_PROFILE)
    acts = [account(i, type=AccountType.ACTION) for i in (8, 9)]
    res = resolve_workflow(workflow("W.None"), LEAF, catalog([a, b], acts))
    assert res.outcome is Outcome.CONFLICT
    assert set(res.conflicting) == {a, b}


def test_default_action_profile_targets_computers_only() -> None:
    cat = catalog([assoc(9, profile=DEFAULT_ACTION_PROFILE)], [account(9)])
    assert resolve_for_profile(DAA, C1, cat).outcome is Outcome.ACCOUNT
    res = resolve_for_profile(DAA, LEAF, cat)
    assert res.candidates[0].covers is False
    assert res.candidates[0].coverage == "the default action account profile targets computers only"


def test_unknown_computer_falls_back_to_the_agent_identity() -> None:
    res = resolve_workflow(workflow("W.None"), LEAF, catalog([], computers=()))
    assert res.outcome is Outcome.ACTION_ACCOUNT
    assert res.account is None
    assert "computer c1 is not known: the agent's own identity" in res.steps


def test_profile_without_fallback_is_unresolved() -> None:
    res = resolve_workflow(workflow("W.Strict"), LEAF, catalog([assoc(1, profile="P")]))
    assert res.outcome is Outcome.UNRESOLVED
    assert not res.runs
    assert res.account is None


def test_winner_not_distributed_is_reported_with_the_fix() -> None:
    cat = catalog([assoc(1, TargetKind.CLASS, "T.Base")], [account(1, approved=["c2"])])
    res = resolve_workflow(workflow("W.P"), LEAF, cat)
    assert res.outcome is Outcome.NOT_DISTRIBUTED
    assert not res.runs
    assert res.account is not None
    assert res.account.id == 1
    assert res.to_dict()["distributed"] is False
    assert any("--more-secure --add c1" in s for s in res.steps)
    assert resolve_workflow(workflow("W.P"), MID, cat).outcome is Outcome.ACCOUNT


def test_less_secure_is_distributed_everywhere() -> None:
    acc = account(1, approved=(), mode=DistributionMode.LESS_SECURE)
    assert acc.distributed_to("c1")
    assert acc.distributed_to("anything")
    cat = catalog([assoc(1)], [acc])
    assert resolve_workflow(workflow("W.P"), LEAF, cat).outcome is Outcome.ACCOUNT


def test_elevation_is_shown() -> None:
    acc = AccountInfo(
        1, "unix", AccountType.UNIX_MAINTENANCE, "root", 2, DistributionMode.LESS_SECURE,
        elevation="sudo",
    )  # fmt: skip
    res = resolve_workflow(workflow("W.P"), LEAF, catalog([assoc(1)], [acc]))
    assert res.outcome is Outcome.ACCOUNT
    assert "elevation: sudo" in res.steps


# -- contract edges ---------------------------------------------------------------------------


def test_workflow_for_an_object_of_another_class_is_refused() -> None:
    with pytest.raises(InvalidInput, match="never runs for it"):
        resolve_workflow(workflow("W.P2"), MID, catalog([]))


def test_unknown_profile_is_not_found() -> None:
    bad = WorkflowDef("W.Bad", WorkflowKind.RULE, "bad", "T.Base", profile="Nope")
    with pytest.raises(NotFound, match="unknown profile 'Nope'"):
        resolve_workflow(bad, LEAF, catalog([]))


def test_targeted_classes_by_profile() -> None:
    assert targeted_classes_by_profile(WORKFLOWS) == {
        "P": frozenset({"T.Base"}),
        "P2": frozenset({"T.Leaf"}),
        "Strict": frozenset({"T.Base"}),
    }


def test_to_dict_never_carries_more_than_the_account_reference() -> None:
    res = resolve_workflow(workflow("W.P"), LEAF, catalog([assoc(1)]))
    doc = res.to_dict()
    assert doc["outcome"] == "account"
    assert doc["account"] == {
        "id": 1,
        "name": "acct1",
        "type": "windows",
        "identity": "corp.test\\u1",
        "secret_version": 1,
        "distribution": "more-secure",
        "elevation": None,
    }


def test_ordered_profile_lists_accounts_in_turn_instead_of_a_conflict() -> None:
    """Site accounts such as client push are tried in turn: several accounts at the top rank
    of an ordered profile are its order (by position), not a conflict."""
    first = Association(10, "P", 2, "acct2", TargetKind.ALL, None, position=1)
    second = Association(5, "P", 1, "acct1", TargetKind.ALL, None, position=2)
    cat = catalog([second, first])
    ordered = replace(P, ordered=True)
    pr = resolve_profile(ordered, LEAF, cat)
    assert pr.outcome is ProfileOutcome.ACCOUNT
    assert pr.winner == first
    tied = [c for c in pr.candidates if c.status is CandidateStatus.TIED]
    assert [c.association for c in tied] == [second]
    assert "tried in turn after #10" in tied[0].reason

    assert resolve_profile(P, LEAF, cat).outcome is ProfileOutcome.CONFLICT
