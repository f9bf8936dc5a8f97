"""Objects as columns: a million of them in a fraction of the memory of ``ObjectRecord``s."""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from runas.domain.model import ObjectRecord


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


__all__ = ["ObjectTable"]
