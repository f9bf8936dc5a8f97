"""What the index keeps about one profile: its associations by kind and the resolved *codes*.

A code is the answer of rules 1–3 of domain.md §5 for one (profile, object): an account id
(>= 0), :data:`NO_CANDIDATE` or :data:`CONFLICT`. Rules 4–5 (fallback, distribution) depend on
the computer and are applied by the index.

The ranks split into levels, in order::

    enforced object > enforced group > enforced class/all > object > group > class/all

Whether an *all* or *class* association covers an object depends only on its class, so those
levels are one code per (profile, class): ``static``. Group and object associations decide
per object: ``exceptions``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from runas.domain.model import Association, ProfileDef, TargetKind
from runas.domain.resolution import Outcome, Rank

#: A resolved code: an account id (>= 0), or one of these two.
NO_CANDIDATE = -1
CONFLICT = -2

#: (outcome, account id): what :meth:`ResolutionIndex.outcome` answers.
PairOutcome = tuple[Outcome, int | None]


def stable_salt(text: str) -> int:
    """A 64-bit number for a name, the same in every process (``hash(str)`` is randomised
    per process, and state digests must survive a restart of the server)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class ProfileIndex:
    """Everything the index keeps about one profile."""

    def __init__(
        self, profile: ProfileDef, workflow_classes: frozenset[int], classes: frozenset[int]
    ) -> None:
        self.profile = profile
        self.id = profile.id
        self.fallback = profile.fallback
        #: mixed into the hash of each of the profile's entries in a computer state's digest
        self.salt = stable_salt(profile.id)
        #: classes of the objects the profile's workflows run for (the pairs of computer states)
        self.workflow_classes = workflow_classes
        #: classes resolved: the workflow classes, plus computers for the Default Action Account
        self.classes = classes
        #: class -> this profile's place among the profiles that target the class, i.e. its
        #: slot within each object's run of entries in a computer state
        self.slot: dict[int, int] = {}
        self.static_assocs: dict[int, Association] = {}
        #: class -> (code at the enforced level, code at the normal level) of all/class targets
        self.static: dict[int, tuple[int, int]] = {}
        #: class -> the code of an object no group/object association covers
        self.final_static: dict[int, int] = {}
        #: [normal, enforced]: object position -> account ids of object associations
        self.obj_assocs: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})
        #: [normal, enforced]: account id -> group ids of group associations
        self.grp_groups: tuple[dict[int, list[str]], dict[int, list[str]]] = ({}, {})
        #: [normal, enforced]: account id -> positions covered by its group associations
        self.grp_sets: tuple[dict[int, frozenset[int]], dict[int, frozenset[int]]] = ({}, {})
        #: position -> code, for objects decided by a group or object association
        self.exceptions: dict[int, int] = {}
        #: ordered profiles: account id -> its position (the service keeps one per account)
        self.positions: dict[int, int] = {}

    def pick(self, accounts: set[int]) -> int:
        """The code for the accounts left at the top rank: the account, a conflict, or for an
        ordered profile the account first in turn (as ``resolve_profile`` decides)."""
        if len(accounts) == 1:
            return next(iter(accounts))
        if self.profile.ordered:
            return min(accounts, key=lambda acc: (self.positions.get(acc, 0), acc))
        return CONFLICT

    def code(self, pos: int, cls: int) -> int:
        found = self.exceptions.get(pos)
        if found is not None:
            return found
        return self.final_static.get(cls, NO_CANDIDATE)

    def set_static(self, cls: int, codes: tuple[int, int]) -> None:
        self.static[cls] = codes
        self.final_static[cls] = codes[0] if codes[0] != NO_CANDIDATE else codes[1]

    def attach(self, a: Association, by_name: Mapping[str, int]) -> None:
        level = 1 if a.enforced else 0
        if a.position is not None:
            self.positions[a.account_id] = a.position
        if a.target_kind in (TargetKind.ALL, TargetKind.CLASS):
            self.static_assocs[a.id] = a
        elif a.target_kind is TargetKind.GROUP:
            self.grp_groups[level].setdefault(a.account_id, []).append(a.target or "")
        else:
            pos = by_name.get(a.target or "")
            if pos is not None:
                self.obj_assocs[level].setdefault(pos, []).append(a.account_id)

    def detach(self, a: Association, by_name: Mapping[str, int]) -> None:
        level = 1 if a.enforced else 0
        if a.target_kind in (TargetKind.ALL, TargetKind.CLASS):
            del self.static_assocs[a.id]
        elif a.target_kind is TargetKind.GROUP:
            gids = self.grp_groups[level][a.account_id]
            gids.remove(a.target or "")
            if not gids:
                del self.grp_groups[level][a.account_id]
        else:
            pos = by_name.get(a.target or "")
            if pos is not None:
                accs = self.obj_assocs[level][pos]
                accs.remove(a.account_id)
                if not accs:
                    del self.obj_assocs[level][pos]

    def static_codes(
        self,
        cls: int,
        assocs: Iterable[Association],
        *,
        covers: Callable[[Association], bool],
        rank: Callable[[Association], Rank],
    ) -> tuple[int, int]:
        """Codes at the enforced and the normal level of ``cls`` from the all/class
        associations; ``covers`` says whether one covers the class."""
        best: list[Rank | None] = [None, None]
        accs: list[set[int]] = [set(), set()]
        all_covers: bool | None = None
        for a in assocs:
            if a.target_kind is TargetKind.ALL:
                # Every *all* association of a profile covers the same classes: ask once.
                if all_covers is None:
                    all_covers = covers(a)
                if not all_covers:
                    continue
            elif not covers(a):
                continue
            r = rank(a)
            level = r[0]
            top = best[level]
            if top is None or r > top:
                best[level] = r
                accs[level] = {a.account_id}
            elif r == top:
                accs[level].add(a.account_id)
        s1 = self.pick(accs[1]) if accs[1] else NO_CANDIDATE
        s0 = self.pick(accs[0]) if accs[0] else NO_CANDIDATE
        return s1, s0

    def resolve_exceptions(self, class_of: Sequence[int]) -> None:
        """Every object a group or object association decides, at once (``grp_sets`` and
        ``static`` filled): per level each account's objects, then the objects two accounts
        share (a conflict), all with set and dict operations that run in C."""
        enforced_static = {cls for cls, (s1, _) in self.static.items() if s1 != NO_CANDIDATE}
        merged: list[dict[int, int]] = []
        for level in (0, 1):
            decided: dict[int, int] = {}
            seen: set[int] = set()
            shared: set[int] = set()
            for acc, covered in self.grp_sets[level].items():
                shared |= seen & covered
                seen |= covered
                decided.update(dict.fromkeys(covered, acc))
            if self.profile.ordered:
                for pos in shared:
                    decided[pos] = self.pick(
                        {acc for acc, covered in self.grp_sets[level].items() if pos in covered}
                    )
            else:
                decided.update(dict.fromkeys(shared, CONFLICT))
            for pos, accs in self.obj_assocs[level].items():
                decided[pos] = self.pick(set(accs))
            # Only objects the profile resolves; and at the normal level, an enforced
            # class/all association outranks group and object targets.
            skip = enforced_static if level == 0 else set()
            scope = self.classes
            merged.append(
                {
                    pos: code
                    for pos, code in decided.items()
                    if class_of[pos] in scope and class_of[pos] not in skip
                }
            )
        self.exceptions = merged[0]
        self.exceptions.update(merged[1])

    def decide(self, pos: int, cls: int) -> tuple[int, bool]:
        """The code of ``pos`` from first principles, and whether a group/object association
        decided it (then it belongs in ``exceptions``)."""
        s1, s0 = self.static.get(cls, (NO_CANDIDATE, NO_CANDIDATE))
        for level in (1, 0):
            accs = self.obj_assocs[level].get(pos)
            if accs:
                return self.pick(set(accs)), True
            found = {acc for acc, covered in self.grp_sets[level].items() if pos in covered}
            if found:
                return self.pick(found), True
            if level == 1 and s1 != NO_CANDIDATE:
                return s1, False
        return s0, False

    def refresh(self, pos: int, cls: int) -> None:
        code, dynamic = self.decide(pos, cls)
        if dynamic:
            self.exceptions[pos] = code
        else:
            self.exceptions.pop(pos, None)


__all__ = [
    "CONFLICT",
    "NO_CANDIDATE",
    "PairOutcome",
    "ProfileIndex",
    "stable_salt",
]
