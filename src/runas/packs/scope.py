"""What a pack can see while it is checked: its own definitions, ``runas.system``, the packs it
references; and, for better messages, every other imported pack.

Packs are a unit of trust and of removal: a pack may only use what it declares it depends on,
otherwise removing a pack it silently relied on would break it. So a name that exists in an
imported but unreferenced pack is an error that names the missing reference.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Literal, NoReturn

from runas.domain.model import SYSTEM_PACK, ClassDef, GroupDef, PackDef, ProfileDef
from runas.errors import PackError
from runas.packs.loader import LoadedPack

Kind = Literal["class", "group", "profile", "workflow"]


class Scope:
    def __init__(self, loaded: LoadedPack, available: Mapping[str, PackDef]) -> None:
        self.loaded = loaded
        self.pack = loaded.pack
        # the caller passes the packs without the old version of this one when upgrading; be
        # robust if it does not, or the pack would collide with its own previous version
        self.others = {pid: p for pid, p in available.items() if pid != self.pack.id}
        self.visible = {self.pack.id, SYSTEM_PACK} | {r.id for r in self.pack.references}
        # every definition of every imported pack, this pack's own last so they win
        self.classes: dict[str, ClassDef] = {}
        self.groups: dict[str, GroupDef] = {}
        self.profiles: dict[str, ProfileDef] = {}
        for pack in (*self.others.values(), self.pack):
            self.classes.update((c.id, c) for c in pack.classes)
            self.groups.update((g.id, g) for g in pack.groups)
            self.profiles.update((p.id, p) for p in pack.profiles)

    def fail(self, path: Sequence[str], message: str) -> NoReturn:
        raise PackError(message, source=self.loaded.source, line=self.loaded.line_of(*path))

    def _table(self, kind: Kind) -> Mapping[str, ClassDef | GroupDef | ProfileDef]:
        if kind == "class":
            return self.classes
        if kind == "group":
            return self.groups
        if kind == "profile":
            return self.profiles
        raise ValueError(f"no lookup of {kind}s")  # workflows are never referenced by others

    def _owner(self, kind: Kind, item_id: str) -> str | None:
        found = self._table(kind).get(item_id)
        return None if found is None else found.pack

    def need(self, kind: Kind, item_id: str, path: Sequence[str]) -> None:
        """Refuse ``item_id`` unless it is defined in a pack this pack can see."""
        owner = self._owner(kind, item_id)
        if owner in self.visible:
            return
        if owner is not None:
            self.fail(
                path,
                f"{kind} {item_id} is defined in pack {owner}, which this pack does not "
                f"reference (add it under 'references')",
            )
        close = difflib.get_close_matches(item_id, self.visible_ids(kind), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        self.fail(path, f"unknown {kind} {item_id}{hint}")

    def visible_ids(self, kind: Kind) -> list[str]:
        return [i for i, d in self._table(kind).items() if d.pack in self.visible]

    def ancestors(self, class_id: str) -> list[ClassDef]:
        """The class and its bases, most derived first; stops at a missing class or a cycle."""
        out: list[ClassDef] = []
        seen: set[str] = set()
        current: str | None = class_id
        while current is not None and current not in seen and current in self.classes:
            seen.add(current)
            out.append(self.classes[current])
            current = self.classes[current].base
        return out


def find_cycle(start: str, successors: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle reachable from ``start`` as ``[a, b, …, a]``, or None. Depth-first, iterative
    over an explicit stack so a long chain cannot exhaust Python's recursion limit."""
    path: list[str] = [start]
    on_path = {start}
    stack = [iter(successors.get(start, ()))]
    done: set[str] = set()
    while stack:
        nxt = next(stack[-1], None)
        if nxt is None:
            stack.pop()
            finished = path.pop()
            on_path.discard(finished)
            done.add(finished)
            continue
        if nxt in on_path:
            return [*path[path.index(nxt) :], nxt]
        if nxt in done:
            continue
        path.append(nxt)
        on_path.add(nxt)
        stack.append(iter(successors.get(nxt, ())))
    return None
