"""Views that let the per-object contract (``resolution.resolve_*``) read the index: explain
runs the contract itself, on the index's data, so it cannot disagree with it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from runas.domain.classes import ClassHierarchy
from runas.domain.groups import GroupCatalog, Membership
from runas.domain.model import ObjectRecord

if TYPE_CHECKING:
    from runas.domain.bulk.index import ResolutionIndex


class IndexedGroups(GroupCatalog):
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


class ComputerRecords(Mapping[str, ObjectRecord]):
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


__all__ = ["ComputerRecords", "IndexedGroups"]
