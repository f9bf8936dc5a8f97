"""Group membership: conditions, explicit members, rules, nesting and cycles; and the bulk
evaluation over a population agreeing with the per-object answer."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runas.domain.classes import ClassHierarchy
from runas.domain.groups import (
    GroupCatalog,
    Population,
    condition_holds,
    describe_rule,
    rule_matches,
)
from runas.domain.model import (
    COMPUTER_CLASS,
    ENTITY_CLASS,
    ClassDef,
    Condition,
    ConditionOp,
    GroupDef,
    GroupRule,
    ObjectRecord,
)
from runas.errors import NotFound

H = ClassHierarchy(
    (
        ClassDef(ENTITY_CLASS, "Entity", None, abstract=True),
        ClassDef(COMPUTER_CLASS, "Computer", ENTITY_CLASS, key_properties=("name",)),
        ClassDef("T.Base", "Base", ENTITY_CLASS, key_properties=("name",), host=COMPUTER_CLASS),
        ClassDef("T.Mid", "Mid", "T.Base"),
        ClassDef("T.Leaf", "Leaf", "T.Mid"),
        ClassDef("T.Other", "Other", ENTITY_CLASS, key_properties=("name",), host=COMPUTER_CLASS),
    )
)

EQ, NE = ConditionOp.EQUALS, ConditionOp.NOT_EQUALS


def holds(op: ConditionOp, value: Any, props: dict[str, Any], prop: str = "p") -> bool:
    return condition_holds(Condition(prop, op, value), props)


def obj(oid: int, class_id: str, name: str, **props: Any) -> ObjectRecord:
    return ObjectRecord(oid, class_id, f"{class_id}:c1;{name}", (name,), props, 1, "c1")


# -- conditions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "props", "expected"),
    [
        # equals compares as text: a YAML int matches a discovered string and the reverse
        (EQ, 1433, {"p": "1433"}, True),
        (EQ, "1433", {"p": 1433}, True),
        (EQ, 1433, {"p": 1434}, False),
        (EQ, True, {"p": "true"}, True),
        (EQ, "prod", {"p": "Prod"}, False),  # case matters
        (EQ, "prod", {}, False),
        (EQ, "prod", {"p": None}, False),
        # not_equals: a missing property is "not equal" (the non-production group holds it)
        (NE, "prod", {}, True),
        (NE, "prod", {"p": None}, True),
        (NE, "prod", {"p": "prod"}, False),
        (NE, 5, {"p": "5"}, False),
        (NE, "prod", {"p": "test"}, True),
        (ConditionOp.CONTAINS, "sql", {"p": "mssql-01"}, True),
        (ConditionOp.CONTAINS, "sql", {"p": "oracle"}, False),
        (ConditionOp.CONTAINS, "sql", {}, False),
        (ConditionOp.STARTS_WITH, "10.0", {"p": "10.0.0.1"}, True),
        (ConditionOp.STARTS_WITH, "10.0", {"p": "110.0.0.1"}, False),
        (ConditionOp.ENDS_WITH, ".contoso.com", {"p": "a.contoso.com"}, True),
        (ConditionOp.ENDS_WITH, ".contoso.com", {"p": "a.contoso.com.evil"}, False),
        # matches must match the whole value, not a part of it
        (ConditionOp.MATCHES, "ab", {"p": "ab"}, True),
        (ConditionOp.MATCHES, "ab", {"p": "abc"}, False),
        (ConditionOp.MATCHES, "ab", {"p": "xab"}, False),
        (ConditionOp.MATCHES, "sql[0-9]+", {"p": "sql42"}, True),
        (ConditionOp.MATCHES, "a|b", {"p": "ab"}, False),
        (ConditionOp.MATCHES, ".*", {}, False),
        (ConditionOp.IN, ("prod", "test"), {"p": "test"}, True),
        (ConditionOp.IN, ("prod", "test"), {"p": "dev"}, False),
        (ConditionOp.IN, (1433, 1434), {"p": "1434"}, True),
        (ConditionOp.IN, ("prod",), {}, False),
        (ConditionOp.EXISTS, None, {"p": ""}, True),
        (ConditionOp.EXISTS, None, {"p": 0}, True),
        (ConditionOp.EXISTS, None, {"p": None}, False),
        (ConditionOp.EXISTS, None, {"q": "x"}, False),
    ],
)
def test_condition_operators(
    op: ConditionOp, value: Any, props: dict[str, Any], expected: bool
) -> None:
    assert holds(op, value, props) is expected


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20))
def test_matches_is_a_full_match_of_the_escaped_literal(pattern: str, actual: str) -> None:
    assert holds(ConditionOp.MATCHES, re.escape(pattern), {"p": actual}) is (pattern == actual)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.integers(), st.text(max_size=10), st.booleans()), st.text(max_size=10))
def test_equals_and_not_equals_are_complements_on_present_values(value: Any, actual: str) -> None:
    props = {"p": actual}
    assert holds(EQ, value, props) is not holds(NE, value, props)


def test_rule_matches_derived_classes_and_all_conditions() -> None:
    rule = GroupRule("T.Mid", (Condition("env", EQ, "prod"), Condition("port", EQ, 1433)))
    assert rule_matches(rule, "T.Leaf", {"env": "prod", "port": "1433"}, H)
    assert rule_matches(rule, "T.Mid", {"env": "prod", "port": 1433}, H)
    assert not rule_matches(rule, "T.Leaf", {"env": "prod", "port": 1434}, H)
    assert not rule_matches(rule, "T.Base", {"env": "prod", "port": 1433}, H)  # base of Mid
    assert not rule_matches(rule, "T.Other", {"env": "prod", "port": 1433}, H)
    assert describe_rule(rule) == "instances of T.Mid where env equals 'prod' and port equals 1433"
    assert describe_rule(GroupRule("T.Base", (Condition("x", ConditionOp.EXISTS),))) == (
        "instances of T.Base where x exists"
    )


# -- membership -------------------------------------------------------------------------------

LEAF = obj(10, "T.Leaf", "leaf", env="prod")
MID = obj(11, "T.Mid", "mid", env="test")
BASE = obj(12, "T.Base", "base")
OTHER = obj(13, "T.Other", "other", env="prod")

GROUPS = GroupCatalog(
    (
        GroupDef("G.Explicit", "explicit", members=(MID.full_name, "T.Base:c9;not-yet")),
        GroupDef("G.Prod", "prod", rules=(GroupRule("T.Base", (Condition("env", EQ, "prod"),)),)),
        GroupDef("G.Mid", "nested once", includes=("G.Explicit",)),
        GroupDef("G.Top", "nested twice", includes=("G.Mid", "G.Prod")),
        # a cycle: A includes B includes A; B also lists BASE
        GroupDef("G.A", "cycle a", includes=("G.B",)),
        GroupDef("G.B", "cycle b", members=(BASE.full_name,), includes=("G.A",)),
        GroupDef("G.Self", "includes itself", includes=("G.Self",)),
    ),
    H,
)


def test_membership_by_explicit_member() -> None:
    m = GROUPS.membership("G.Explicit", MID)
    assert m is not None
    assert m.describe() == "member of G.Explicit (explicit member)"
    assert GROUPS.membership("G.Explicit", LEAF) is None


def test_membership_by_rule_includes_derived_classes() -> None:
    m = GROUPS.membership("G.Prod", LEAF)
    assert m is not None
    assert m.describe() == "member of G.Prod (rule 1: instances of T.Base where env equals 'prod')"
    assert GROUPS.membership("G.Prod", MID) is None  # env test
    assert GROUPS.membership("G.Prod", BASE) is None  # no env at all
    assert GROUPS.membership("G.Prod", OTHER) is None  # right env, wrong class


def test_membership_through_two_levels_of_nesting() -> None:
    m = GROUPS.membership("G.Top", MID)
    assert m is not None
    assert m.chain == ("G.Top", "G.Mid", "G.Explicit")
    assert m.describe() == "member of G.Top through nested G.Mid > G.Explicit (explicit member)"
    m = GROUPS.membership("G.Top", LEAF)
    assert m is not None
    assert m.chain == ("G.Top", "G.Prod")
    assert GROUPS.membership("G.Top", BASE) is None


def test_nested_cycles_are_cut() -> None:
    m = GROUPS.membership("G.A", BASE)
    assert m is not None
    assert m.chain == ("G.A", "G.B")
    assert GROUPS.membership("G.A", LEAF) is None
    assert GROUPS.membership("G.Self", LEAF) is None
    assert GROUPS.closure("G.A") == ["G.A", "G.B"]
    assert GROUPS.closure("G.Self") == ["G.Self"]
    assert GROUPS.closure("G.Top") == ["G.Top", "G.Mid", "G.Explicit", "G.Prod"]


def test_unknown_group_is_not_found() -> None:
    assert "G.Nope" not in GROUPS
    with pytest.raises(NotFound, match=r"unknown group 'G\.Nope'"):
        GROUPS.membership("G.Nope", LEAF)


# -- bulk evaluation agrees with membership ---------------------------------------------------


def _population(objects: list[ObjectRecord]) -> Population:
    by_id = {o.id: o for o in objects}
    return Population(
        {o.id: o.class_id for o in objects},
        lambda oid: by_id[oid].properties,
        {o.full_name: o.id for o in objects},
    )


def test_members_over_a_population() -> None:
    objects = [LEAF, MID, BASE, OTHER]
    pop = _population(objects)
    cache: dict[str, frozenset[int]] = {}
    assert GROUPS.members("G.Top", pop, cache) == {LEAF.id, MID.id}
    assert GROUPS.members("G.A", pop, cache) == {BASE.id}
    assert GROUPS.members("G.Self", pop, cache) == frozenset()
    # An explicit member that is not discovered is simply absent.
    assert GROUPS.members("G.Explicit", pop, cache) == {MID.id}


CLASS_IDS = st.sampled_from(["T.Base", "T.Mid", "T.Leaf", "T.Other"])
VALUES = st.sampled_from(["prod", "test", "1433", 1433, True, "true"])
CONDITIONS = st.one_of(
    st.builds(Condition, st.sampled_from(["env", "port"]), st.sampled_from([EQ, NE]), VALUES),
    st.builds(
        Condition,
        st.sampled_from(["env", "port"]),
        st.just(ConditionOp.IN),
        st.lists(VALUES, min_size=1, max_size=3).map(tuple),
    ),
    st.builds(Condition, st.sampled_from(["env", "port"]), st.just(ConditionOp.EXISTS)),
)
PROPS = st.dictionaries(st.sampled_from(["env", "port"]), VALUES, max_size=2)


@settings(max_examples=80, deadline=None)
@given(
    objects=st.lists(st.tuples(CLASS_IDS, PROPS), max_size=8),
    rules=st.lists(
        st.builds(GroupRule, CLASS_IDS, st.lists(CONDITIONS, max_size=2).map(tuple)), max_size=3
    ),
    explicit=st.lists(st.integers(0, 9), max_size=3),
    nest=st.booleans(),
)
def test_bulk_members_equal_per_object_membership(
    objects: list[tuple[str, dict[str, Any]]],
    rules: list[GroupRule],
    explicit: list[int],
    nest: bool,
) -> None:
    records = [obj(i, cid, f"o{i}", **props) for i, (cid, props) in enumerate(objects)]
    members = tuple(f"T.Base:c1;o{i}" for i in explicit) + tuple(
        r.full_name for r in records if r.id in explicit
    )
    inner = GroupDef("G.In", "in", members=members, rules=tuple(rules), includes=("G.Out",))
    outer = GroupDef("G.Out", "out", includes=("G.In",) if nest else ())
    groups = GroupCatalog((inner, outer), H)
    pop = _population(records)
    for gid in ("G.In", "G.Out"):
        expected = {r.id for r in records if groups.membership(gid, r) is not None}
        assert groups.members(gid, pop, {}) == expected
