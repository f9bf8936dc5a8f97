"""What one computer's agent must hold, kept compact and patched in place of rebuilt.

A computer hosts about ten objects and each is targeted by dozens of profiles: at full scale
a state has ~490 (profile, object) entries and there are 100,000 computers. As tuples of
tuples that is several GiB, and rebuilding every affected state after a change costs
~0.5 ms per computer. So a state is:

* a :class:`StateLayout` fixed per computer (its objects, and the profiles targeting each
  object's class, whose tuples are shared by every object of the class);
* one machine integer per entry (:func:`entry_of`), in layout order;
* a digest that is a *sum* of per-entry hashes, so that changing one entry costs two hashes
  and the digest of a patched state equals that of a state built from scratch, whatever the
  order of the changes.

States are immutable snapshots: :meth:`ComputerState.patched` copies the entry array (a
memcpy) and returns a new state, so a caller holding the old one never sees it move.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runas.domain.bulk.profile_index import PairOutcome, stable_salt
from runas.domain.resolution import AccountInfo, Outcome

#: The digest format: ``s1:`` + 16 hex digits, the sum modulo 2**64 of the hashes of the
#: computer name, the action, every listed entry and every account (id, secret version).
#: Entry hashes are ``hash()`` of tuples of ints, which CPython does not randomise (only
#: str/bytes hashes are), so digests survive a restart; a new CPython tuple hash (or a 32-bit
#: build) would change every digest once, which a frozen known-answer test catches. The
#: digest detects change for agents; it is not a MAC (whoever can forge a state can already
#: change associations).
DIGEST_PREFIX = "s1:"
_MASK = (1 << 64) - 1
_ACCOUNT_TAG = -101
_ACTION_TAG = -102

# Entries. Accounts carry a kind in their two low bits; the four negative values carry none.
#: runs as the computer's default action account: not listed
ACTION = -1
#: no account, and the profile cannot fall back
UNRESOLVED = -2
#: the profile's candidates conflict
CONFLICT = -3
#: no candidate, and the computer's default action account is itself in conflict. Distinct
#: from CONFLICT so that a change of the action account finds the entries it moves.
ACTION_CONFLICT = -4
_BINDING = 0
_NOT_DISTRIBUTED = 1
#: no candidate, and the action account is not distributed to the computer
_ACTION_NOT_DISTRIBUTED = 2


def entry_of(pair: PairOutcome, *, via_action: bool = False) -> int:
    """The entry of a pair's outcome. ``via_action``: the pair fell back to the action
    account (its NOT_DISTRIBUTED/CONFLICT then names the action account's problem)."""
    outcome, account = pair
    if outcome is Outcome.ACCOUNT:
        assert account is not None
        return account << 2 | _BINDING
    if outcome is Outcome.NOT_DISTRIBUTED:
        assert account is not None
        return account << 2 | (_ACTION_NOT_DISTRIBUTED if via_action else _NOT_DISTRIBUTED)
    if outcome is Outcome.CONFLICT:
        return ACTION_CONFLICT if via_action else CONFLICT
    if outcome is Outcome.UNRESOLVED:
        return UNRESOLVED
    return ACTION


def fallback_entry(action: PairOutcome) -> int:
    """The entry of a pair that falls back to a computer whose action is ``action``."""
    return entry_of(action, via_action=True)


@dataclass(frozen=True, slots=True)
class StateLayout:
    """Which (profile, object) each entry of a computer's state stands for."""

    object_ids: tuple[int, ...]
    #: per object: (profile id, profile salt) of the profiles targeting its class, in the
    #: order of the entries (one tuple per class, shared)
    profiles: tuple[tuple[tuple[str, int], ...], ...]


#: entries fit in 32 bits as long as account ids stay below 2**29 (they are database serials)
_SMALL_MIN, _SMALL_MAX = -(2**31), 2**31 - 1


def _compact(entries: array[int]) -> array[int]:
    """4 bytes per entry when every entry fits (~200 MB saved at full scale), else 8."""
    if entries and (min(entries) < _SMALL_MIN or max(entries) > _SMALL_MAX):
        return array("q", entries)
    return array("i", entries)


def _entry_hash(salt: int, object_id: int, entry: int) -> int:
    return hash((salt, object_id, entry))


def _account_hash(account_id: int, version: int) -> int:
    return hash((_ACCOUNT_TAG, account_id, version))


def _head_hash(computer: str, action: PairOutcome) -> int:
    outcome, account = action
    # -1 for "no account": hash(None) is the object's address before CPython 3.12.
    account_id = -1 if account is None else account
    return hash((_ACTION_TAG, stable_salt(computer), stable_salt(outcome.value), account_id))


class ComputerState:
    """What one computer's agent must hold, as resolution decides it.

    ``bindings`` name the account each (profile, object) pair runs as; pairs that run as the
    computer's action account are not listed (``action`` says what that is). Any change of a
    pair's outcome, or of the action account, changes the state and so its ``digest``. The
    listings are decoded from the compact entries on each access.
    """

    __slots__ = (
        "_account_ids",
        "_entries",
        "_layout",
        "_sum",
        "_uses",
        "_versions",
        "action",
        "computer",
    )

    def __init__(
        self,
        computer: str,
        action: PairOutcome,
        layout: StateLayout,
        entries: array[int],
        accounts: tuple[array[int], array[int], array[int]],
        total: int,
    ) -> None:
        self.computer = computer
        #: the computer's default action account: (outcome, account id or None)
        self.action = action
        self._layout = layout
        self._entries = entries
        # The accounts the agent must hold, as three parallel arrays sorted by id: a tuple of
        # tuples and a dict of counts cost ~10 KB per computer, ~1 GiB at full scale.
        #: account ids, sorted
        self._account_ids = accounts[0]
        #: their secret versions (when the account was listed)
        self._versions = accounts[1]
        #: how many bindings (and the action account) use each: 0 drops it from the list
        self._uses = accounts[2]
        self._sum = total

    @classmethod
    def build(
        cls,
        computer: str,
        action: PairOutcome,
        layout: StateLayout,
        entries: array[int],
        accounts: Mapping[int, AccountInfo],
    ) -> ComputerState:
        total = _head_hash(computer, action)
        uses: dict[int, int] = {}
        i = 0
        for oid, profiles in zip(layout.object_ids, layout.profiles, strict=True):
            for _, salt in profiles:
                e = entries[i]
                i += 1
                if e != ACTION:
                    total += _entry_hash(salt, oid, e)
                    if e >= 0 and e & 3 == _BINDING:
                        uses[e >> 2] = uses.get(e >> 2, 0) + 1
        if action[0] is Outcome.ACTION_ACCOUNT and action[1] is not None:
            uses[action[1]] = uses.get(action[1], 0) + 1
        ids = sorted(uses)
        versions = [accounts[a].secret_version for a in ids]
        total += sum(_account_hash(a, v) for a, v in zip(ids, versions, strict=True))
        listed = (array("q", ids), array("q", versions), array("i", (uses[a] for a in ids)))
        return cls(computer, action, layout, _compact(entries), listed, total & _MASK)

    @property
    def digest(self) -> str:
        return f"{DIGEST_PREFIX}{self._sum:016x}"

    @property
    def accounts(self) -> tuple[tuple[int, int], ...]:
        """(account id, secret version) of every account whose secret the agent must receive."""
        return tuple(zip(self._account_ids, self._versions, strict=True))

    def __len__(self) -> int:
        """Entries (listed or not)."""
        return len(self._entries)

    def patched(
        self,
        changes: Iterable[tuple[int, int, int, int]],
        accounts: Mapping[int, AccountInfo],
        *,
        action: PairOutcome | None = None,
    ) -> ComputerState:
        """A new state with ``changes`` applied: (entry position, profile salt, object id, new
        entry). With ``action``, the computer's action account changed too: the entries that
        fell back to the old one move to the new one. Costs O(changed entries), plus a scan of
        the entries (in C) when the action changes."""
        entries = array(self._entries.typecode, self._entries)
        ids = array("q", self._account_ids)
        versions = array("q", self._versions)
        uses = array("i", self._uses)
        total = self._sum

        def use(account: int, delta: int) -> None:
            nonlocal total
            at = bisect.bisect_left(ids, account)
            if at < len(ids) and ids[at] == account:
                uses[at] += delta
                if uses[at] == 0:
                    total -= _account_hash(account, versions[at])
                    del ids[at], versions[at], uses[at]
                return
            version = accounts[account].secret_version
            total += _account_hash(account, version)
            ids.insert(at, account)
            versions.insert(at, version)
            uses.insert(at, delta)

        moves: list[tuple[int, int, int, int]] = []
        new_action = self.action
        if action is not None and action != self.action:
            new_action = action
            total += _head_hash(self.computer, action) - _head_hash(self.computer, self.action)
            old_fb, new_fb = fallback_entry(self.action), fallback_entry(action)
            if old_fb != new_fb:
                locate = _Locator(self._layout)
                start = 0
                for _ in range(entries.count(old_fb)):
                    at = entries.index(old_fb, start)
                    moves.append((at, *locate(at), new_fb))
                    start = at + 1
        moves.extend(changes)
        for at, salt, oid, new in moves:
            old = entries[at]
            if old == new:
                continue
            if old != ACTION:
                total -= _entry_hash(salt, oid, old)
                if old >= 0 and old & 3 == _BINDING:
                    use(old >> 2, -1)
            if new != ACTION:
                total += _entry_hash(salt, oid, new)
                if new >= 0 and new & 3 == _BINDING:
                    use(new >> 2, 1)
            if entries.typecode == "i" and not _SMALL_MIN <= new <= _SMALL_MAX:
                entries = array("q", entries)
            entries[at] = new
        # Counted after the entries, so that an account moving from the bindings to the action
        # (or back) is never dropped and listed again on the way.
        if new_action is not self.action:
            for pair, delta in ((action, 1), (self.action, -1)):
                if pair is not None and pair[0] is Outcome.ACTION_ACCOUNT and pair[1] is not None:
                    use(pair[1], delta)
        return ComputerState(
            self.computer, new_action, self._layout, entries, (ids, versions, uses), total & _MASK
        )

    # -- the listings ----------------------------------------------------------------------

    def _decoded(self) -> Iterable[tuple[str, int, int]]:
        entries = self._entries
        i = 0
        for oid, profiles in zip(self._layout.object_ids, self._layout.profiles, strict=True):
            for pid, _ in profiles:
                e = entries[i]
                i += 1
                if e != ACTION:
                    yield pid, oid, e

    @property
    def bindings(self) -> tuple[tuple[str, int, int], ...]:
        """(profile, object id, account id) for pairs that run as a profile's account."""
        return tuple(
            sorted((p, o, e >> 2) for p, o, e in self._decoded() if e >= 0 and e & 3 == _BINDING)
        )

    @property
    def conflicts(self) -> tuple[tuple[str, int], ...]:
        """(profile, object id): the workflow does not run, a Run As conflict alert is raised."""
        return tuple(
            sorted((p, o) for p, o, e in self._decoded() if e in (CONFLICT, ACTION_CONFLICT))
        )

    @property
    def unresolved(self) -> tuple[tuple[str, int], ...]:
        """(profile, object id): no account and the profile cannot fall back."""
        return tuple(sorted((p, o) for p, o, e in self._decoded() if e == UNRESOLVED))

    @property
    def not_distributed(self) -> tuple[tuple[str, int, int], ...]:
        """(profile, object id, account id): "credentials not found" on this computer."""
        return tuple(
            sorted((p, o, e >> 2) for p, o, e in self._decoded() if e >= 0 and e & 3 != _BINDING)
        )

    def listed(self) -> int:
        """How many entries are listed (every pair that does not run as the action account)."""
        return len(self._entries) - self._entries.count(ACTION)

    def outcome_counts(self) -> dict[Outcome, int]:
        """Entries by outcome (the action account's own problems counted as the pair's)."""
        counts = dict.fromkeys(Outcome, 0)
        for e in self._entries:
            if e == ACTION:
                counts[Outcome.ACTION_ACCOUNT] += 1
            elif e in (CONFLICT, ACTION_CONFLICT):
                counts[Outcome.CONFLICT] += 1
            elif e == UNRESOLVED:
                counts[Outcome.UNRESOLVED] += 1
            elif e & 3 == _BINDING:
                counts[Outcome.ACCOUNT] += 1
            else:
                counts[Outcome.NOT_DISTRIBUTED] += 1
        return counts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ComputerState):
            return NotImplemented
        return (
            self.computer == other.computer
            and self.action == other.action
            and self.accounts == other.accounts
            and self._uses == other._uses
            and self._layout == other._layout
            and self._entries == other._entries
        )

    def __hash__(self) -> int:
        return hash((self.computer, self._sum))

    def __repr__(self) -> str:
        return f"ComputerState({self.computer!r}, {len(self)} entries, {self.digest})"


class _Locator:
    """Entry position -> (profile salt, object id), for the few entries a patch touches."""

    def __init__(self, layout: StateLayout) -> None:
        self._starts: list[int] = []
        total = 0
        for profiles in layout.profiles:
            self._starts.append(total)
            total += len(profiles)
        self._layout = layout

    def __call__(self, at: int) -> tuple[int, int]:
        starts = self._starts
        k = len(starts) - 1
        while starts[k] > at:
            k -= 1
        return self._layout.profiles[k][at - starts[k]][1], self._layout.object_ids[k]


__all__ = [
    "ACTION",
    "ACTION_CONFLICT",
    "CONFLICT",
    "DIGEST_PREFIX",
    "UNRESOLVED",
    "ComputerState",
    "StateLayout",
    "entry_of",
    "fallback_entry",
]
