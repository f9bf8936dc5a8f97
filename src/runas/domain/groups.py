"""Group membership: explicit members, dynamic rules, nested groups. Pure.

Two ways in: :meth:`GroupCatalog.membership` answers "is O a member of G, and how?" for one
object (explain, per-object resolution); :meth:`GroupCatalog.members` evaluates a group over
a whole population (bulk resolution), using a property index so that equality rules do not
scan every object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from runas.domain.classes import ClassHierarchy
from runas.domain.model import Condition, ConditionOp, GroupDef, GroupRule, ObjectRecord
from runas.errors import InvalidInput, NotFound


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def condition_holds(cond: Condition, properties: Mapping[str, Any]) -> bool:
    """Evaluate one condition. Values compare as text, so ``1433`` equals ``"1433"``."""
    if cond.op is ConditionOp.EXISTS:
        return cond.property in properties and properties[cond.property] is not None
    if cond.property not in properties or properties[cond.property] is None:
        # A missing property matches nothing but "not_equals": an object without an
        # environment is not in the production group, and is in the non-production one.
        return cond.op is ConditionOp.NOT_EQUALS
    actual = _text(properties[cond.property])
    op = cond.op
    if op is ConditionOp.EQUALS:
        return actual == _text(cond.value)
    if op is ConditionOp.NOT_EQUALS:
        return actual != _text(cond.value)
    if op is ConditionOp.CONTAINS:
        return _text(cond.value) in actual
    if op is ConditionOp.STARTS_WITH:
        return actual.startswith(_text(cond.value))
    if op is ConditionOp.ENDS_WITH:
        return actual.endswith(_text(cond.value))
    if op is ConditionOp.MATCHES:
        return _regex(_text(cond.value)).fullmatch(actual) is not None
    if op is ConditionOp.IN:
        return actual in {_text(v) for v in cond.value}
    raise InvalidInput(f"unknown condition operator {op!r}")  # pragma: no cover - enum is closed


def describe_condition(cond: Condition) -> str:
    if cond.op is ConditionOp.EXISTS:
        return f"{cond.property} exists"
    return f"{cond.property} {cond.op.value} {cond.value!r}"


def describe_rule(rule: GroupRule) -> str:
    where = " and ".join(describe_condition(c) for c in rule.conditions)
    return f"instances of {rule.class_id}" + (f" where {where}" if where else "")


def rule_matches(
    rule: GroupRule, class_id: str, properties: Mapping[str, Any], hierarchy: ClassHierarchy
) -> bool:
    return hierarchy.is_a(class_id, rule.class_id) and all(
        condition_holds(c, properties) for c in rule.conditions
    )


@dataclass(frozen=True)
class Membership:
    """How an object is a member of a group: the chain of groups from the asked group down
    to the one whose explicit list or rule holds it, and that reason."""

    chain: tuple[str, ...]
    reason: str

    def describe(self) -> str:
        via = ""
        if len(self.chain) > 1:
            via = " through nested " + " > ".join(self.chain[1:])
        return f"member of {self.chain[0]}{via} ({self.reason})"


class GroupCatalog:
    def __init__(self, groups: Iterable[GroupDef], hierarchy: ClassHierarchy) -> None:
        self._groups = {g.id: g for g in groups}
        self._hierarchy = hierarchy
        self._explicit = {g.id: frozenset(g.members) for g in self._groups.values()}

    def __contains__(self, group_id: object) -> bool:
        return group_id in self._groups

    def get(self, group_id: str) -> GroupDef:
        try:
            return self._groups[group_id]
        except KeyError:
            raise NotFound(f"unknown group {group_id!r}") from None

    def ids(self) -> list[str]:
        return sorted(self._groups)

    def closure(self, group_id: str) -> list[str]:
        """The group and every group nested in it, each once (cycles are cut, not followed)."""
        seen: list[str] = []
        stack = [group_id]
        while stack:
            gid = stack.pop()
            if gid in seen:
                continue
            seen.append(gid)
            stack.extend(reversed(self.get(gid).includes))
        return seen

    def membership(self, group_id: str, obj: ObjectRecord) -> Membership | None:
        """How ``obj`` is a member of ``group_id``, or None. Depth-first, cycle-safe."""
        return self._membership(group_id, obj, ())

    def _membership(
        self, group_id: str, obj: ObjectRecord, path: tuple[str, ...]
    ) -> Membership | None:
        if group_id in path:
            return None
        group = self.get(group_id)
        chain = (*path, group_id)
        if obj.full_name in self._explicit[group_id]:
            return Membership(chain, "explicit member")
        for i, rule in enumerate(group.rules, 1):
            if rule_matches(rule, obj.class_id, obj.properties, self._hierarchy):
                return Membership(chain, f"rule {i}: {describe_rule(rule)}")
        for nested in group.includes:
            found = self._membership(nested, obj, chain)
            if found is not None:
                return found
        return None

    def members(
        self, group_id: str, population: Population, cache: dict[str, frozenset[int]]
    ) -> frozenset[int]:
        """Ids of every member object of ``group_id`` over a whole population."""
        if group_id in cache:
            return cache[group_id]
        result: set[int] = set()
        for gid in self.closure(group_id):
            if gid in cache:
                result |= cache[gid]
                continue
            group = self.get(gid)
            for name in group.members:
                oid = population.id_by_name(name)
                if oid is not None:
                    result.add(oid)
            for rule in group.rules:
                result |= population.matching(rule, self._hierarchy)
        frozen = frozenset(result)
        cache[group_id] = frozen
        return frozen


class Population:
    """Objects indexed for bulk rule evaluation: by class and by (property, value)."""

    def __init__(
        self,
        class_of: Mapping[int, str],
        properties_of: Callable[[int], Mapping[str, Any]],
        by_name: Mapping[str, int],
    ) -> None:
        self._class_of = class_of
        self._properties_of = properties_of
        self._by_name = by_name
        self._by_class: dict[str, list[int]] = {}
        for oid, cid in class_of.items():
            self._by_class.setdefault(cid, []).append(oid)
        self._eq_index: dict[tuple[str, str], dict[str, list[int]]] = {}

    def id_by_name(self, name: str) -> int | None:
        return self._by_name.get(name)

    def of_classes(self, class_ids: Iterable[str]) -> list[int]:
        out: list[int] = []
        for cid in class_ids:
            out.extend(self._by_class.get(cid, ()))
        return out

    def _equality_index(self, class_id: str, prop: str) -> dict[str, list[int]]:
        key = (class_id, prop)
        index = self._eq_index.get(key)
        if index is None:
            index = {}
            for oid in self._by_class.get(class_id, ()):
                value = self._properties_of(oid).get(prop)
                if value is not None:
                    index.setdefault(_text(value), []).append(oid)
            self._eq_index[key] = index
        return index

    def matching(self, rule: GroupRule, hierarchy: ClassHierarchy) -> set[int]:
        classes = hierarchy.descendants(rule.class_id)
        eq = next((c for c in rule.conditions if c.op is ConditionOp.EQUALS), None)
        if eq is not None:
            candidates: list[int] = []
            for cid in classes:
                candidates.extend(self._equality_index(cid, eq.property).get(_text(eq.value), ()))
            rest = tuple(c for c in rule.conditions if c is not eq)
        else:
            candidates = self.of_classes(classes)
            rest = rule.conditions
        if not rest:
            return set(candidates)
        return {
            oid
            for oid in candidates
            if all(condition_holds(c, self._properties_of(oid)) for c in rest)
        }
