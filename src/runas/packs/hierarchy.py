"""Checks of the classes a pack declares: inheritance, hosting and properties.

The hosting rules exist because an object's full name and the computer that receives its
credentials both come from its hosting chain (domain.md §2, §5): every concrete object must
live, through its hosts, on exactly one computer.
"""

from __future__ import annotations

import difflib

from runas.domain.model import COMPUTER_CLASS, ClassDef
from runas.packs.scope import Scope, find_cycle


def check_classes(scope: Scope) -> None:
    own = scope.pack.classes
    for cls in own:
        if cls.base is not None:
            scope.need("class", cls.base, ("classes", cls.id, "base"))
        if cls.host is not None:
            scope.need("class", cls.host, ("classes", cls.id, "host"))
    _check_inheritance_cycles(scope)
    for cls in own:
        _check_hosting(scope, cls)
    _check_hosting_cycles(scope)
    for cls in own:
        _check_property_names(scope, cls)


def _check_inheritance_cycles(scope: Scope) -> None:
    bases = {c.id: [c.base] if c.base else [] for c in scope.classes.values()}
    for cls in scope.pack.classes:
        cycle = find_cycle(cls.id, bases)
        if cycle is not None and cls.id in cycle:
            scope.fail(("classes", cls.id, "base"), f"inheritance cycle: {' -> '.join(cycle)}")


def effective_host(scope: Scope, class_id: str) -> str | None:
    """The host class of instances of ``class_id``: its own, else the nearest base's."""
    for cls in scope.ancestors(class_id):
        if cls.host is not None:
            return cls.host
    return None


def is_computer(scope: Scope, class_id: str) -> bool:
    return any(c.id == COMPUTER_CLASS for c in scope.ancestors(class_id))


def _check_hosting(scope: Scope, cls: ClassDef) -> None:
    if is_computer(scope, cls.id):
        if cls.host is not None:
            scope.fail(
                ("classes", cls.id, "host"),
                f"class {cls.id} derives from {COMPUTER_CLASS} and cannot have a host "
                "(computers are the roots of hosting)",
            )
        return
    if (
        cls.host is not None
        and not is_computer(scope, cls.host)
        and effective_host(scope, cls.host) is None
    ):
        # the hosting chain must end at a computer, or objects of this class live nowhere
        scope.fail(
            ("classes", cls.id, "host"),
            f"class {cls.id} cannot be hosted by {cls.host}: a host class must derive from "
            f"{COMPUTER_CLASS} or be hosted itself",
        )
    inherited = effective_host(scope, cls.base) if cls.base else None
    # a derived class is still an instance of its base: its host must be one the base's
    # host chain accepts, so it may only narrow the host to a derived class
    if (
        cls.host is not None
        and inherited is not None
        and not any(c.id == inherited for c in scope.ancestors(cls.host))
    ):
        scope.fail(
            ("classes", cls.id, "host"),
            f"class {cls.id} is hosted by {cls.host}, but its base {cls.base} is hosted by "
            f"{inherited}: a derived class may only narrow its host to a class derived "
            f"from {inherited}",
        )
    if not cls.abstract and cls.host is None and inherited is None:
        scope.fail(
            ("classes", cls.id),
            f"concrete class {cls.id} has no host: give it a 'host' (the class of the object it "
            f"lives on) or derive it from {COMPUTER_CLASS}",
        )


def _check_hosting_cycles(scope: Scope) -> None:
    hosts: dict[str, list[str]] = {}
    for class_id in scope.classes:
        host = effective_host(scope, class_id)
        hosts[class_id] = [host] if host is not None else []
    for cls in scope.pack.classes:
        cycle = find_cycle(cls.id, hosts)
        # a cycle is reported at the first of its classes in file order; every hosting cycle
        # goes through a class of this pack, as imported packs were checked without it
        if cycle is not None and cls.id in cycle:
            scope.fail(("classes", cls.id, "host"), f"hosting cycle: {' -> '.join(cycle)}")


def _check_property_names(scope: Scope, cls: ClassDef) -> None:
    inherited: dict[str, str] = {}
    for ancestor in scope.ancestors(cls.id)[1:]:
        for name in (*ancestor.key_properties, *ancestor.properties):
            inherited.setdefault(name, ancestor.id)
    for key, names in (("key_properties", cls.key_properties), ("properties", cls.properties)):
        for index, name in enumerate(names):
            if name in inherited:
                what = "key property" if key == "key_properties" else "property"
                scope.fail(
                    ("classes", cls.id, key, str(index)),
                    f"{what} {name!r} of class {cls.id} is already declared by its ancestor "
                    f"{inherited[name]}",
                )


def properties_of(scope: Scope, class_id: str) -> list[str]:
    """Every property (key or not) of a class, its own and inherited."""
    return [
        name for cls in scope.ancestors(class_id) for name in (*cls.key_properties, *cls.properties)
    ]


def check_property(scope: Scope, class_id: str, name: str, path: tuple[str, ...]) -> None:
    known = properties_of(scope, class_id)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(known) if known else "none"
        scope.fail(
            path, f"class {class_id} has no property {name!r}{hint}; its properties: {listed}"
        )
