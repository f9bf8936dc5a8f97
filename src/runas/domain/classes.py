"""The class hierarchy: single inheritance, hosting, key properties. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property

from runas.domain.model import COMPUTER_CLASS, ClassDef
from runas.errors import InvalidInput, NotFound


class ClassHierarchy:
    """Index over class definitions; answers is-a, depth, host and key questions.

    Built from every imported class (a few hundred at most), so it is cheap to build and
    every answer is memoised.
    """

    def __init__(self, classes: Iterable[ClassDef]) -> None:
        self._classes: dict[str, ClassDef] = {c.id: c for c in classes}
        self._ancestors: dict[str, tuple[str, ...]] = {}

    def __contains__(self, class_id: object) -> bool:
        return class_id in self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def ids(self) -> list[str]:
        return sorted(self._classes)

    def get(self, class_id: str) -> ClassDef:
        try:
            return self._classes[class_id]
        except KeyError:
            raise NotFound(f"unknown class {class_id!r}") from None

    def ancestors(self, class_id: str) -> tuple[str, ...]:
        """The class itself first, then its base, up to the root."""
        cached = self._ancestors.get(class_id)
        if cached is not None:
            return cached
        chain: list[str] = []
        current: str | None = class_id
        while current is not None:
            if current in chain:
                raise InvalidInput(f"class inheritance cycle: {' -> '.join([*chain, current])}")
            chain.append(current)
            current = self.get(current).base
        result = tuple(chain)
        self._ancestors[class_id] = result
        return result

    def is_a(self, class_id: str, ancestor: str) -> bool:
        return ancestor in self.ancestors(class_id)

    def depth(self, class_id: str) -> int:
        """0 for the root class; a more derived class has a greater depth."""
        return len(self.ancestors(class_id)) - 1

    @cached_property
    def _children(self) -> dict[str, list[str]]:
        children: dict[str, list[str]] = {}
        for c in self._classes.values():
            if c.base is not None:
                children.setdefault(c.base, []).append(c.id)
        return children

    def descendants(self, class_id: str) -> set[str]:
        """The class and every class derived from it, directly or not."""
        out = {class_id}
        stack = [class_id]
        while stack:
            for child in self._children.get(stack.pop(), ()):
                if child not in out:
                    out.add(child)
                    stack.append(child)
        return out

    def host_class(self, class_id: str) -> str | None:
        """The class that hosts instances of ``class_id`` (declared or inherited)."""
        for cid in self.ancestors(class_id):
            host = self._classes[cid].host
            if host is not None:
                return host
        return None

    def is_computer(self, class_id: str) -> bool:
        return self.is_a(class_id, COMPUTER_CLASS)

    def key_properties(self, class_id: str) -> tuple[str, ...]:
        """Key properties, the root class's first."""
        keys: list[str] = []
        for cid in reversed(self.ancestors(class_id)):
            keys.extend(self._classes[cid].key_properties)
        return tuple(keys)

    def properties(self, class_id: str) -> tuple[str, ...]:
        """Every property an instance may carry (keys included), the root class's first."""
        props: list[str] = []
        for cid in reversed(self.ancestors(class_id)):
            c = self._classes[cid]
            for p in (*c.key_properties, *c.properties):
                if p not in props:
                    props.append(p)
        return tuple(props)
