"""The class hierarchy: ancestors, depth, descendants, hosting, keys, and cycles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runas.domain.classes import ClassHierarchy
from runas.domain.model import COMPUTER_CLASS, ENTITY_CLASS, ClassDef
from runas.errors import InvalidInput, NotFound

CLASSES = (
    ClassDef(ENTITY_CLASS, "Entity", None, abstract=True),
    ClassDef(COMPUTER_CLASS, "Computer", ENTITY_CLASS, key_properties=("name",),
             properties=("domain", "os")),
    ClassDef("T.Server", "Server", COMPUTER_CLASS, properties=("os", "role")),
    ClassDef("T.Base", "Base", ENTITY_CLASS, key_properties=("instance",),
             properties=("env",), host=COMPUTER_CLASS),
    ClassDef("T.Mid", "Mid", "T.Base", properties=("env", "port")),
    ClassDef("T.Leaf", "Leaf", "T.Mid", key_properties=("db",)),
    ClassDef("T.Hosted", "Hosted by a Mid", ENTITY_CLASS, key_properties=("x",), host="T.Mid"),
    ClassDef("T.Sibling", "Sibling", "T.Base"),
)  # fmt: skip
H = ClassHierarchy(CLASSES)


def test_ancestors_start_with_the_class_and_end_at_the_root() -> None:
    assert H.ancestors("T.Leaf") == ("T.Leaf", "T.Mid", "T.Base", ENTITY_CLASS)
    assert H.ancestors(ENTITY_CLASS) == (ENTITY_CLASS,)
    assert H.is_a("T.Leaf", "T.Base")
    assert H.is_a("T.Leaf", "T.Leaf")
    assert not H.is_a("T.Base", "T.Leaf")
    assert not H.is_a("T.Sibling", "T.Mid")


def test_depth_grows_with_derivation() -> None:
    assert [H.depth(c) for c in (ENTITY_CLASS, "T.Base", "T.Mid", "T.Leaf")] == [0, 1, 2, 3]
    assert H.depth("T.Sibling") == H.depth("T.Mid")


def test_descendants_include_the_class_itself() -> None:
    assert H.descendants("T.Base") == {"T.Base", "T.Mid", "T.Leaf", "T.Sibling"}
    assert H.descendants("T.Leaf") == {"T.Leaf"}
    assert H.descendants(COMPUTER_CLASS) == {COMPUTER_CLASS, "T.Server"}
    assert H.descendants(ENTITY_CLASS) == {c.id for c in CLASSES}


def test_host_is_inherited_unless_redeclared() -> None:
    assert H.host_class("T.Base") == COMPUTER_CLASS
    assert H.host_class("T.Leaf") == COMPUTER_CLASS
    assert H.host_class("T.Hosted") == "T.Mid"
    assert H.host_class(COMPUTER_CLASS) is None
    assert H.host_class(ENTITY_CLASS) is None


def test_derived_computer_classes_are_computers() -> None:
    assert H.is_computer("T.Server")
    assert H.is_computer(COMPUTER_CLASS)
    assert not H.is_computer("T.Leaf")


def test_keys_and_properties_root_first_without_duplicates() -> None:
    assert H.key_properties("T.Leaf") == ("instance", "db")
    assert H.key_properties("T.Server") == ("name",)
    assert H.properties("T.Leaf") == ("instance", "env", "port", "db")
    assert H.properties("T.Server") == ("name", "domain", "os", "role")


def test_unknown_class_is_not_found() -> None:
    assert "T.Nope" not in H
    with pytest.raises(NotFound, match=r"unknown class 'T\.Nope'"):
        H.ancestors("T.Nope")
    # an unknown base is reported as such when the chain reaches it
    broken = ClassHierarchy((ClassDef("T.Orphan", "Orphan", "T.Missing"),))
    with pytest.raises(NotFound, match=r"T\.Missing"):
        broken.depth("T.Orphan")


def test_inheritance_cycle_is_an_error_not_a_hang() -> None:
    cyclic = ClassHierarchy(
        (
            ClassDef(ENTITY_CLASS, "Entity", None),
            ClassDef("T.A", "A", "T.B"),
            ClassDef("T.B", "B", "T.C"),
            ClassDef("T.C", "C", "T.A"),
        )
    )
    with pytest.raises(
        InvalidInput, match=r"class inheritance cycle: T\.A -> T\.B -> T\.C -> T\.A"
    ):
        cyclic.ancestors("T.A")
    with pytest.raises(InvalidInput, match="cycle"):
        cyclic.is_a("T.B", ENTITY_CLASS)
    # descendants walks downwards and stops on classes it has seen
    assert cyclic.descendants("T.A") == {"T.A", "T.B", "T.C"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0), min_size=1, max_size=12))
def test_random_trees_agree_on_ancestors_depth_and_descendants(parents: list[int]) -> None:
    # class i+1 derives from some class <= i: always a tree rooted at C0
    classes = [ClassDef("C0", "root", None)]
    classes += [
        ClassDef(f"C{i + 1}", f"c{i + 1}", f"C{p % (i + 1)}") for i, p in enumerate(parents)
    ]
    h = ClassHierarchy(classes)
    for c in classes:
        assert h.depth(c.id) == len(h.ancestors(c.id)) - 1
        for anc in h.ancestors(c.id):
            assert c.id in h.descendants(anc)
        for desc in h.descendants(c.id):
            assert h.is_a(desc, c.id)
