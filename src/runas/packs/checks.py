"""Semantic checks of a loaded pack against the packs already imported.

:func:`check_pack` is the gate of import and upgrade: a pack that passes can be stored without
leaving a dangling name, a cycle or a collision behind. Each refusal is a :class:`PackError`
located at the offending line of the pack's file. The order of the checks is deliberate:
references first (they decide what the pack can see), then ids, then the classes (groups,
profiles and workflows are about classes), then the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

from runas.domain.model import DEFAULT_ACTION_PROFILE, SYSTEM_PACK, Accessibility, PackDef
from runas.domain.names import parse_full_name
from runas.domain.probes import PROBE_ACCOUNT_TYPES, probe_types, unusable_types
from runas.packs.hierarchy import check_classes, check_property
from runas.packs.loader import SECTIONS, LoadedPack
from runas.packs.scope import Scope, find_cycle
from runas.packs.versions import compare_versions

#: ids in this namespace belong to the built-in pack, so later built-ins cannot collide
RESERVED_PREFIX = "System."


def check_pack(loaded: LoadedPack, available: Mapping[str, PackDef]) -> None:
    """Refuse ``loaded`` unless it fits with ``available`` (pack id -> pack, with runas.system;
    without the old version of this pack when upgrading). Raises :class:`PackError`."""
    scope = Scope(loaded, available)
    _check_references(scope)
    _check_ids(scope)
    check_classes(scope)
    _check_groups(scope)
    _check_profiles(scope)
    _check_workflows(scope)


def _check_references(scope: Scope) -> None:
    pack = scope.pack
    graph = {p.id: [r.id for r in p.references] for p in scope.others.values()}
    graph[pack.id] = [r.id for r in pack.references]
    for ref in pack.references:
        path = ("pack", "references", ref.id)
        if ref.id == pack.id:
            scope.fail(path, f"pack {pack.id} cannot reference itself")
        target = scope.others.get(ref.id)
        if target is None:
            scope.fail(path, f"referenced pack {ref.id} is not imported (import it first)")
        if ref.min_version is not None and compare_versions(target.version, ref.min_version) < 0:
            scope.fail(
                (*path, "min_version"),
                f"pack {ref.id} {target.version} is imported, but this pack needs version "
                f"{ref.min_version} or later",
            )
        # a pack that (through others) references this one would make the two inseparable:
        # neither could be removed, and their contents could form cycles across packs
        cycle = find_cycle(ref.id, graph)
        if cycle is not None and pack.id in cycle:
            start = cycle.index(pack.id)
            loop = [*cycle[start:-1], *cycle[:start], pack.id]
            scope.fail(path, f"reference cycle: {' -> '.join(loop)}")


def _check_ids(scope: Scope) -> None:
    pack = scope.pack
    owners: dict[str, dict[str, str]] = {section: {} for section in SECTIONS}
    for other in scope.others.values():
        for section, items in _sections(other).items():
            owners[section].update((i, other.id) for i in items)
    for section, items in _sections(pack).items():
        kind = SECTIONS[section]
        for item_id in items:
            path = (section, item_id, "id")
            if pack.id != SYSTEM_PACK and item_id.startswith(RESERVED_PREFIX):
                scope.fail(
                    path,
                    f"{kind} id {item_id}: ids starting with {RESERVED_PREFIX!r} are "
                    f"reserved for the built-in pack {SYSTEM_PACK}",
                )
            owner = owners[section].get(item_id)
            if owner is not None:
                scope.fail(path, f"{kind} {item_id} is already defined by pack {owner}")


def _sections(pack: PackDef) -> dict[str, list[str]]:
    return {
        "classes": [c.id for c in pack.classes],
        "groups": [g.id for g in pack.groups],
        "profiles": [p.id for p in pack.profiles],
        "workflows": [w.id for w in pack.workflows],
    }


def _check_groups(scope: Scope) -> None:
    for group in scope.pack.groups:
        base: tuple[str, ...] = ("groups", group.id)
        for index, member in enumerate(group.members):
            class_id, _ = parse_full_name(member)  # syntax already checked by the loader
            path: tuple[str, ...] = (*base, "members", str(index))
            scope.need("class", class_id, path)
            if scope.classes[class_id].abstract:
                scope.fail(
                    path,
                    f"explicit member {member} names the abstract class {class_id}: an object "
                    "is always of a concrete class",
                )
        for r, rule in enumerate(group.rules):
            rule_path = (*base, "rules", str(r))
            scope.need("class", rule.class_id, (*rule_path, "class"))
            for c, cond in enumerate(rule.conditions):
                path = (*rule_path, "where", str(c), "property")
                check_property(scope, rule.class_id, cond.property, path)
        for index, included in enumerate(group.includes):
            scope.need("group", included, (*base, "include", str(index)))
    includes = {g.id: list(g.includes) for g in scope.groups.values()}
    for group in scope.pack.groups:
        cycle = find_cycle(group.id, includes)
        if cycle is not None and group.id in cycle:
            step = group.includes.index(cycle[1])
            path = ("groups", group.id, "include", str(step))
            scope.fail(path, f"group cycle: {' -> '.join(cycle)}")


def _check_profiles(scope: Scope) -> None:
    for profile in scope.pack.profiles:
        scope.need("class", profile.context_class, ("profiles", profile.id, "context_class"))


def _check_workflows(scope: Scope) -> None:
    for workflow in scope.pack.workflows:
        base = ("workflows", workflow.id)
        scope.need("class", workflow.target, (*base, "target"))
        for class_id in workflow.discovers:
            scope.need("class", class_id, (*base, "discovers"))
        if workflow.probe_type not in PROBE_ACCOUNT_TYPES:
            scope.fail(
                (*base, "probe", "type"),
                f"workflow {workflow.id} uses probe type {workflow.probe_type!r}, which no agent "
                f"runs (probe types: {', '.join(probe_types())})",
            )
        if workflow.profile is None:
            continue
        path = (*base, "profile")
        if workflow.profile == DEFAULT_ACTION_PROFILE:
            scope.fail(
                path,
                f"workflow {workflow.id} names {DEFAULT_ACTION_PROFILE}: omit 'profile' to run "
                "as the default action account",
            )
        scope.need("profile", workflow.profile, path)
        profile = scope.profiles[workflow.profile]
        if profile.accessibility is Accessibility.INTERNAL and profile.pack != scope.pack.id:
            scope.fail(
                path,
                f"profile {profile.id} is internal to pack {profile.pack}: only its own "
                "workflows may use it",
            )
        unusable = unusable_types(workflow.probe_type, profile.allowed_types)
        if unusable:
            allows = (
                "every account type"
                if not profile.allowed_types
                else ", ".join(t.value for t in profile.allowed_types)
            )
            scope.fail(
                path,
                f"workflow {workflow.id} uses the {workflow.probe_type} probe, which cannot use "
                f"{', '.join(t.value for t in unusable)} accounts, but its profile {profile.id} "
                f"allows {allows}: restrict the profile's allowed_account_types",
            )
