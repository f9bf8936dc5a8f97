"""Rows to domain values and back: the only place that knows both shapes."""

from __future__ import annotations

from typing import Any

from runas.domain.accounts import (
    AccountType,
    DistributionMode,
    display_identity,
    elevation_of,
)
from runas.domain.model import (
    Accessibility,
    Association,
    ClassDef,
    Condition,
    ConditionOp,
    GroupDef,
    GroupRule,
    ObjectRecord,
    ProfileDef,
    Schedule,
    TargetKind,
    TaskParameter,
    WorkflowDef,
    WorkflowKind,
)
from runas.domain.resolution import AccountInfo
from runas.storage.tables import (
    AccountRow,
    AssociationRow,
    ClassRow,
    GroupRow,
    ObjectRow,
    ProfileRow,
    WorkflowRow,
)


def class_def(row: ClassRow) -> ClassDef:
    return ClassDef(
        id=row.id,
        display_name=row.display_name,
        base=row.base_id,
        abstract=row.abstract,
        key_properties=tuple(row.key_properties),
        properties=tuple(row.properties),
        host=row.host_class_id,
        description=row.description,
        pack=row.pack_id,
    )


def class_row(c: ClassDef, pack_id: str) -> ClassRow:
    return ClassRow(
        id=c.id,
        pack_id=pack_id,
        display_name=c.display_name,
        base_id=c.base,
        abstract=c.abstract,
        host_class_id=c.host,
        key_properties=list(c.key_properties),
        properties=list(c.properties),
        description=c.description,
    )


def rules_to_json(rules: tuple[GroupRule, ...]) -> list[dict[str, Any]]:
    return [
        {
            "class_id": r.class_id,
            "conditions": [
                {"property": c.property, "op": c.op.value, "value": c.value} for c in r.conditions
            ],
        }
        for r in rules
    ]


def group_def(row: GroupRow) -> GroupDef:
    rules = tuple(
        GroupRule(
            class_id=r["class_id"],
            conditions=tuple(
                Condition(
                    property=c["property"],
                    op=ConditionOp(c["op"]),
                    value=tuple(c["value"]) if isinstance(c.get("value"), list) else c.get("value"),
                )
                for c in r.get("conditions", [])
            ),
        )
        for r in row.rules
    )
    return GroupDef(
        id=row.id,
        display_name=row.display_name,
        members=tuple(row.members),
        rules=rules,
        includes=tuple(row.includes),
        description=row.description,
        pack=row.pack_id,
    )


def group_row(g: GroupDef, pack_id: str) -> GroupRow:
    return GroupRow(
        id=g.id,
        pack_id=pack_id,
        display_name=g.display_name,
        description=g.description,
        members=list(g.members),
        rules=_jsonable(rules_to_json(g.rules)),
        includes=list(g.includes),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def profile_def(row: ProfileRow) -> ProfileDef:
    return ProfileDef(
        id=row.id,
        display_name=row.display_name,
        description=row.description,
        context_class=row.context_class,
        accessibility=Accessibility(row.accessibility),
        allowed_types=tuple(AccountType(t) for t in row.allowed_types),
        fallback=row.fallback,
        ordered=row.ordered,
        max_accounts=row.max_accounts,
        pack=row.pack_id or "",
    )


def profile_row(p: ProfileDef, pack_id: str | None) -> ProfileRow:
    return ProfileRow(
        id=p.id,
        pack_id=pack_id,
        display_name=p.display_name,
        description=p.description,
        context_class=p.context_class,
        accessibility=p.accessibility.value,
        allowed_types=[t.value for t in p.allowed_types],
        fallback=p.fallback,
        ordered=p.ordered,
        max_accounts=p.max_accounts,
    )


def update_profile_row(row: ProfileRow, p: ProfileDef) -> None:
    row.display_name = p.display_name
    row.description = p.description
    row.context_class = p.context_class
    row.accessibility = p.accessibility.value
    row.allowed_types = [t.value for t in p.allowed_types]
    row.fallback = p.fallback
    row.ordered = p.ordered
    row.max_accounts = p.max_accounts


def workflow_def(row: WorkflowRow) -> WorkflowDef:
    sched = row.schedule
    return WorkflowDef(
        id=row.id,
        kind=WorkflowKind(row.kind),
        display_name=row.display_name,
        target=row.target_class,
        profile=row.profile_id,
        schedule=(
            Schedule(
                interval_seconds=sched["interval_seconds"],
                spread_seconds=sched.get("spread_seconds", 0),
                timeout_seconds=sched.get("timeout_seconds", 300),
            )
            if sched
            else None
        ),
        probe_type=row.probe_type,
        probe_config=dict(row.probe_config),
        enabled=row.enabled,
        description=row.description,
        pack=row.pack_id,
        discovers=tuple(row.discovers or ()),
        parameters=parameters_of(row.parameters),
        timeout_seconds=row.timeout_seconds,
    )


def parameters_of(raw: dict[str, Any] | None) -> tuple[TaskParameter, ...]:
    """``workflows.parameters`` (name -> {default, overridable, description, position}) in
    the pack's order (JSON objects do not keep it on PostgreSQL: ``position`` does)."""
    items = sorted((raw or {}).items(), key=lambda kv: (kv[1].get("position", 0), kv[0]))
    return tuple(
        TaskParameter(
            name=name,
            default=spec.get("default"),
            overridable=bool(spec.get("overridable", False)),
            description=str(spec.get("description", "")),
        )
        for name, spec in items
    )


def parameters_json(parameters: tuple[TaskParameter, ...]) -> dict[str, Any]:
    return {
        p.name: {
            "default": p.default,
            "overridable": p.overridable,
            "description": p.description,
            "position": i,
        }
        for i, p in enumerate(parameters)
    }


def workflow_row(w: WorkflowDef, pack_id: str) -> WorkflowRow:
    return WorkflowRow(
        id=w.id,
        pack_id=pack_id,
        kind=w.kind.value,
        display_name=w.display_name,
        description=w.description,
        target_class=w.target,
        profile_id=w.profile,
        schedule=(
            {
                "interval_seconds": w.schedule.interval_seconds,
                "spread_seconds": w.schedule.spread_seconds,
                "timeout_seconds": w.schedule.timeout_seconds,
            }
            if w.schedule
            else None
        ),
        probe_type=w.probe_type,
        probe_config=_jsonable(dict(w.probe_config)),
        enabled=w.enabled,
        discovers=list(w.discovers),
        parameters=parameters_json(w.parameters),
        timeout_seconds=w.timeout_seconds,
    )


def object_record(row: ObjectRow) -> ObjectRecord:
    return ObjectRecord(
        id=row.id,
        class_id=row.class_id,
        full_name=row.full_name,
        key=tuple(row.key_values),
        properties=dict(row.properties),
        host_id=row.host_id,
        computer=row.computer_name,
    )


def association(row: AssociationRow, account_name: str) -> Association:
    kind = TargetKind(row.target_kind)
    return Association(
        id=row.id,
        profile=row.profile_id,
        account_id=row.account_id,
        account_name=account_name,
        target_kind=kind,
        target=None if kind is TargetKind.ALL else row.target,
        enforced=row.enforced,
        position=row.position,
    )


def account_info(row: AccountRow, approved: frozenset[str]) -> AccountInfo:
    account_type = AccountType(row.type)
    return AccountInfo(
        id=row.id,
        name=row.name,
        type=account_type,
        identity=display_identity(account_type, row.public_fields),
        secret_version=row.current_version,
        distribution_mode=DistributionMode(row.distribution_mode),
        approved=approved,
        elevation=elevation_of(account_type, row.public_fields),
    )
