"""Schema of groups, profiles and workflows (classes and the header are in :mod:`loader`).

Each reader gets the element's :class:`Fields` with its id already read and its keys checked,
and returns the domain value. Every refusal names the element and points at the offending line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, TypeVar

import yaml

from runas.domain.accounts import AccountType
from runas.domain.model import (
    ENTITY_CLASS,
    Accessibility,
    Condition,
    ConditionOp,
    GroupDef,
    GroupRule,
    ParameterValue,
    ProfileDef,
    Schedule,
    TaskParameter,
    WorkflowDef,
    WorkflowKind,
)
from runas.domain.names import parse_full_name
from runas.errors import InvalidInput
from runas.packs.nodes import ID_PATTERN, Fields, Reader, describe, is_null

GROUP_KEYS = ("id", "display_name", "description", "members", "rules", "include")
RULE_KEYS = ("class", "where")
CONDITION_KEYS = ("property", "op", "value")
PROFILE_KEYS = (
    "id",
    "display_name",
    "description",
    "context_class",
    "accessibility",
    "allowed_account_types",
    "fallback",
    "ordered",
    "max_accounts",
)
WORKFLOW_KEYS = (
    "id",
    "kind",
    "display_name",
    "description",
    "target",
    "profile",
    "schedule",
    "probe",
    "enabled",
    "discovers",
    "parameters",
    "timeout",
)
SCHEDULE_KEYS = ("interval", "spread", "timeout")
PROBE_KEYS = ("type", "config")
PARAMETER_KEYS = ("default", "overridable", "description")

#: the timeout of a schedule that does not give one, capped at the interval; also a task's
DEFAULT_TIMEOUT_SECONDS = 300
#: a task waits at most this long for its agent (then as long again for its result)
MAX_TASK_TIMEOUT_SECONDS = 86400
_DURATION = re.compile(r"^([0-9]+)\s*([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: probe configuration keys that look like a credential: a pack is content shared with authors
#: and operators, so a secret in it would leak; credentials come from Run As profiles
_SECRET_KEY = re.compile(
    r"password|passwd|passphrase|secret|credential|api_?key|private_?key|community"
    r"|(^|[_.-])(pass|pwd|token)($|[_.-])",
    re.IGNORECASE,
)

E = TypeVar("E", bound=StrEnum)


def _enum(reader: Reader, node: yaml.Node, enum: type[E], what: str) -> E:
    value = reader.text(node, what).strip()
    try:
        return enum(value)
    except ValueError:
        known = [member.value for member in enum]
        close = difflib.get_close_matches(value, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        reader.fail(node, f"unknown {what} {value!r} ({hint}known: {', '.join(known)})")


# -- groups -----------------------------------------------------------------------------------


def read_group(reader: Reader, fields: Fields, group_id: str, pack_id: str) -> GroupDef:
    members: tuple[str, ...] = ()
    node = fields.get("members")
    if node is not None:
        what = f"'members' of group {group_id}"
        members = tuple(
            _member(reader, value, item)
            for value, item in reader.unique_list(node, what, fields.sub("members"))
        )
    rules: list[GroupRule] = []
    node = fields.get("rules")
    if node is not None:
        for index, item in enumerate(reader.items(node, f"'rules' of group {group_id}")):
            rules.append(_rule(reader, item, f"{fields.sub('rules')}/{index}", group_id, index))
    includes: tuple[str, ...] = ()
    node = fields.get("include")
    if node is not None:
        what = f"'include' of group {group_id}"
        includes = tuple(
            v for v, _ in reader.unique_list(node, what, fields.sub("include"), "ident")
        )
    return GroupDef(
        id=group_id,
        display_name=fields.text("display_name") or group_id,
        members=members,
        rules=tuple(rules),
        includes=includes,
        description=fields.text("description"),
        pack=pack_id,
    )


def _member(reader: Reader, value: str, node: yaml.Node) -> str:
    try:
        class_id, segments = parse_full_name(value)
    except InvalidInput as exc:
        reader.fail(node, f"explicit member {exc.message}")
    if not ID_PATTERN.match(class_id) or not all(segments):
        reader.fail(
            node,
            f"explicit member {value!r} is not an object name (expected Class:host;key with a "
            "class id and no empty part, e.g. Contoso.SQL.Instance:abc.contoso.com;X)",
        )
    return value


def _rule(reader: Reader, node: yaml.Node, path: str, group_id: str, index: int) -> GroupRule:
    what = f"rule {index + 1} of group {group_id}"
    fields = reader.mapping(node, what, path, RULE_KEYS)
    reader.record(path, node)
    fields.check_keys()
    class_id = reader.ident(fields.require("class"), f"class of {what}")
    conditions: list[Condition] = []
    where = fields.get("where")
    if where is not None:
        for j, item in enumerate(reader.items(where, f"'where' of {what}")):
            conditions.append(_condition(reader, item, f"{path}/where/{j}", f"{what}"))
    return GroupRule(class_id=class_id, conditions=tuple(conditions))


def _condition(reader: Reader, node: yaml.Node, path: str, rule: str) -> Condition:
    fields = reader.mapping(node, f"a condition of {rule}", path, CONDITION_KEYS)
    reader.record(path, node)
    fields.check_keys()
    prop = reader.name(fields.require("property"), f"property in a condition of {rule}")
    fields.what = f"condition on {prop!r} in {rule}"
    op = _enum(reader, fields.require("op"), ConditionOp, "condition op")
    value_node = fields.get("value")
    if op is ConditionOp.EXISTS:
        # refused rather than ignored: `{op: exists, value: false}` reads as "does not exist"
        if value_node is not None:
            reader.fail(value_node, f"op 'exists' takes no value ({fields.what})")
        return Condition(property=prop, op=op)
    if value_node is None:
        value_node = fields.require("value")
    value: Any = reader.construct(value_node)
    if op is ConditionOp.IN:
        if not isinstance(value_node, yaml.SequenceNode):
            reader.fail(value_node, f"op 'in' needs a list value (got {describe(value_node)})")
        if any(not isinstance(v, yaml.ScalarNode) for v in value_node.value):
            reader.fail(value_node, f"op 'in' needs a list of plain values ({fields.what})")
        return Condition(property=prop, op=op, value=tuple(value))
    if not isinstance(value_node, yaml.ScalarNode):
        reader.fail(
            value_node, f"op {op.value!r} needs a single value (got {describe(value_node)})"
        )
    if op in (ConditionOp.EQUALS, ConditionOp.NOT_EQUALS):
        return Condition(property=prop, op=op, value=value)
    # text ops compare text: take the value as written (`starts_with: 10.0` stays "10.0")
    text = str(value_node.value)
    if op is ConditionOp.MATCHES:
        try:
            re.compile(text)
        except re.error as exc:
            reader.fail(value_node, f"op 'matches' needs a valid regular expression: {exc}")
    return Condition(property=prop, op=op, value=text)


# -- profiles ---------------------------------------------------------------------------------


def read_profile(reader: Reader, fields: Fields, profile_id: str, pack_id: str) -> ProfileDef:
    node = fields.get("context_class")
    context = (
        ENTITY_CLASS if node is None else reader.ident(node, f"context_class of {fields.what}")
    )
    node = fields.get("accessibility")
    access = (
        Accessibility.PUBLIC
        if node is None
        else _enum(reader, node, Accessibility, "accessibility")
    )
    types: tuple[AccountType, ...] = ()
    node = fields.get("allowed_account_types")
    if node is not None:
        what = f"'allowed_account_types' of {fields.what}"
        items = list(reader.unique_list(node, what, fields.sub("allowed_account_types")))
        if not items:
            # an empty list would read as "no type allowed" but mean "every type": refuse it
            reader.fail(node, f"{what} is empty (omit it to allow every account type)")
        types = tuple(_enum(reader, item, AccountType, "account type") for _, item in items)
    max_accounts = None
    node = fields.get("max_accounts")
    if node is not None:
        max_accounts = reader.integer(node, f"'max_accounts' of {fields.what}")
        if max_accounts < 1:
            reader.fail(node, f"'max_accounts' of {fields.what} must be at least 1")
    return ProfileDef(
        id=profile_id,
        display_name=fields.required_text("display_name"),
        description=fields.text("description"),
        context_class=context,
        accessibility=access,
        allowed_types=types,
        fallback=fields.boolean("fallback", True),
        ordered=fields.boolean("ordered", False),
        max_accounts=max_accounts,
        pack=pack_id,
    )


# -- workflows --------------------------------------------------------------------------------


def read_workflow(reader: Reader, fields: Fields, workflow_id: str, pack_id: str) -> WorkflowDef:
    kind = _enum(reader, fields.require("kind"), WorkflowKind, "workflow kind")
    fields.what = f"{kind.value} {workflow_id}"
    target = reader.ident(fields.require("target"), f"target of {fields.what}")
    node = fields.get("profile")
    profile = None if node is None else reader.ident(node, f"profile of {fields.what}")
    node = fields.get("schedule")
    schedule = None
    if kind is WorkflowKind.TASK:
        if node is not None:
            reader.fail(node, f"task {workflow_id} cannot have a schedule (tasks run on demand)")
    elif node is None:
        reader.fail(
            fields.node, f"missing required key 'schedule' in {fields.what} (only tasks have none)"
        )
    else:
        schedule = _schedule(reader, node, fields.sub("schedule"), fields.what)
    probe = reader.mapping(
        fields.require("probe"), f"probe of {fields.what}", fields.sub("probe"), PROBE_KEYS
    )
    probe.check_keys()
    probe_type = reader.ident(probe.require("type"), f"probe type of {fields.what}")
    config: dict[str, Any] = {}
    node = probe.get("config")
    if node is not None:
        if not isinstance(node, yaml.MappingNode):
            reader.fail(
                node, f"probe config of {fields.what} must be a mapping (got {describe(node)})"
            )
        _refuse_secrets(reader, node, fields.what)
        config = reader.construct(node)
    discovers: tuple[str, ...] = ()
    node = fields.get("discovers")
    if node is not None:
        if kind is not WorkflowKind.DISCOVERY:
            reader.fail(
                node, f"{fields.what} is not a discovery: only discoveries have 'discovers'"
            )
        what = f"'discovers' of {fields.what}"
        items = list(reader.unique_list(node, what, fields.sub("discovers"), read="ident"))
        discovers = tuple(value for value, _ in items)
    parameters: tuple[TaskParameter, ...] = ()
    timeout: int | None = None
    if kind is WorkflowKind.TASK:
        node = fields.get("parameters")
        if node is not None:
            parameters = _parameters(reader, node, fields.sub("parameters"), fields.what)
        timeout = DEFAULT_TIMEOUT_SECONDS
        node = fields.get("timeout")
        if node is not None:
            timeout = duration(reader, node, f"timeout of {fields.what}")
            if timeout == 0 or timeout > MAX_TASK_TIMEOUT_SECONDS:
                reader.fail(node, f"timeout of {fields.what} must be between 1s and 1d")
    else:
        for key in ("parameters", "timeout"):
            node = fields.get(key)
            if node is not None:
                where = " (in its schedule)" if key == "timeout" else ""
                reader.fail(node, f"{fields.what} is not a task: only tasks have {key!r}{where}")
    return WorkflowDef(
        id=workflow_id,
        kind=kind,
        display_name=fields.text("display_name") or workflow_id,
        target=target,
        profile=profile,
        schedule=schedule,
        probe_type=probe_type,
        probe_config=config,
        enabled=fields.boolean("enabled", True),
        description=fields.text("description"),
        pack=pack_id,
        discovers=discovers,
        parameters=parameters,
        timeout_seconds=timeout,
    )


def _parameters(reader: Reader, node: yaml.Node, path: str, task: str) -> tuple[TaskParameter, ...]:
    """``parameters`` of a task: name -> {default, overridable, description}."""
    if not isinstance(node, yaml.MappingNode):
        reader.fail(node, f"'parameters' of {task} must be a mapping (got {describe(node)})")
    out: list[TaskParameter] = []
    seen: set[str] = set()
    for key_node, value_node in node.value:
        name = reader.name(key_node, f"a parameter name of {task}")
        if name in seen:
            reader.fail(key_node, f"parameter {name!r} of {task} is declared twice")
        seen.add(name)
        if _SECRET_KEY.search(name):
            # a parameter's value is shown, stored and audited: a credential never goes there
            reader.fail(
                key_node,
                f"parameter {name!r} of {task} looks like a credential: credentials never go "
                "in a pack or a parameter (use a Run As profile, or supply credentials when "
                "starting the task)",
            )
        what = f"parameter {name!r} of {task}"
        sub = f"{path}/{name}"
        reader.record(sub, key_node)
        if is_null(value_node):
            out.append(TaskParameter(name=name))
            continue
        fields = reader.mapping(value_node, what, sub, PARAMETER_KEYS)
        fields.check_keys()
        default: ParameterValue | None = None
        default_node = fields.get("default")
        if default_node is not None:
            if not isinstance(default_node, yaml.ScalarNode):
                reader.fail(
                    default_node,
                    f"default of {what} must be text, a number or true/false "
                    f"(got {describe(default_node)})",
                )
            value = reader.construct(default_node)
            if not isinstance(value, str | int | float | bool):
                # dates and the like: keep them as written
                value = str(default_node.value)
            default = value
        out.append(
            TaskParameter(
                name=name,
                default=default,
                overridable=fields.boolean("overridable", False),
                description=fields.text("description"),
            )
        )
    return tuple(out)


def _schedule(reader: Reader, node: yaml.Node, path: str, workflow: str) -> Schedule:
    fields = reader.mapping(node, f"schedule of {workflow}", path, SCHEDULE_KEYS)
    fields.check_keys()
    interval_node = fields.require("interval")
    interval = duration(reader, interval_node, f"interval of {workflow}")
    if interval == 0:
        reader.fail(interval_node, f"interval of {workflow} must be longer than 0s")
    spread, timeout = 0, min(DEFAULT_TIMEOUT_SECONDS, interval)
    spread_node = fields.get("spread")
    if spread_node is not None:
        spread = duration(reader, spread_node, f"spread of {workflow}")
        if spread >= interval:
            # the spread delays each first run by up to this much; past the interval, runs pile up
            reader.fail(spread_node, f"spread of {workflow} must be shorter than its interval")
    timeout_node = fields.get("timeout")
    if timeout_node is not None:
        timeout = duration(reader, timeout_node, f"timeout of {workflow}")
        if timeout == 0 or timeout > interval:
            # a run that may outlast its interval overlaps the next one
            reader.fail(timeout_node, f"timeout of {workflow} must be between 1s and its interval")
    return Schedule(interval_seconds=interval, spread_seconds=spread, timeout_seconds=timeout)


def duration(reader: Reader, node: yaml.Node, what: str) -> int:
    """Seconds from a whole number of seconds or ``30s``, ``5m``, ``1h``, ``1d``."""
    value = reader.text(node, what).strip() if isinstance(node, yaml.ScalarNode) else None
    match = _DURATION.match(value) if value is not None else None
    if match is None:
        shown = value if value is not None else describe(node)
        reader.fail(
            node,
            f"{what} {shown!r} is not a duration (seconds, or a number with s, m, h or d: "
            "30s, 5m, 1h)",
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _refuse_secrets(reader: Reader, node: yaml.MappingNode, workflow: str) -> None:
    for key_node, _ in _mapping_keys(node, set()):
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
        if _SECRET_KEY.search(key):
            reader.fail(
                key_node,
                f"probe config of {workflow} has a key {key!r}: credentials never go in a pack "
                "(use a Run As profile; the agent hands the account to the probe)",
            )


def _mapping_keys(node: yaml.Node, seen: set[int]) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    """Every key/value of nested mappings and lists (aliases visited once)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key, value
            yield from _mapping_keys(value, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _mapping_keys(item, seen)
