"""Explain one resolution, and show what a computer's agent will receive."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from runas.domain.accounts import DistributionMode
from runas.domain.classes import ClassHierarchy
from runas.domain.model import WorkflowDef
from runas.domain.resolution import (
    Outcome,
    Resolution,
    resolve_for_profile,
    resolve_workflow,
)
from runas.errors import InvalidInput
from runas.services import catalog as catalog_loader
from runas.services import convert, lookup
from runas.storage.tables import AccountRow, DistributionRow, ObjectRow, WorkflowRow


class AccountRefView(BaseModel):
    id: int
    name: str
    type: str
    identity: str
    secret_version: int
    distribution: str
    elevation: str | None


class CandidateView(BaseModel):
    association: int
    account: str
    target_kind: str
    target: str | None
    enforced: bool
    covers: bool
    coverage: str
    status: str
    reason: str


class ConflictView(BaseModel):
    association: int
    account: str
    target: str


class ExplainView(BaseModel):
    workflow: str | None
    profile: str | None
    object: str
    object_id: int
    computer: str
    outcome: str
    runs: bool
    fallback: bool
    account: AccountRefView | None
    distributed: bool | None
    candidates: list[CandidateView]
    conflicting: list[ConflictView]
    action_account_candidates: list[CandidateView]
    steps: list[str]


def to_view(res: Resolution) -> ExplainView:
    return ExplainView.model_validate(res.to_dict())


def explain(
    session: Session,
    *,
    obj_ref: str,
    workflow: str | None = None,
    profile: str | None = None,
    catalogs: catalog_loader.CatalogCache | None = None,
) -> ExplainView:
    if (workflow is None) == (profile is None):
        raise InvalidInput("explain needs exactly one of --workflow or --profile")
    obj = convert.object_record(lookup.obj(session, obj_ref))
    if workflow is not None:
        w = convert.workflow_def(lookup.workflow(session, workflow))
        cat = catalog_loader.load(
            session, [w.profile] if w.profile else [], computers=[obj.computer], cache=catalogs
        )
        return to_view(resolve_workflow(w, obj, cat))
    assert profile is not None
    p = convert.profile_def(lookup.profile(session, profile))
    cat = catalog_loader.load(session, [p.id], computers=[obj.computer], cache=catalogs)
    return to_view(resolve_for_profile(p, obj, cat))


# ---------------------------------------------------------------------------------------------
# computer configuration


class ConfigEntry(BaseModel):
    workflow: str
    kind: str
    object: str
    object_id: int
    profile: str | None
    outcome: str
    runs: bool
    account_id: int | None
    account: str | None
    secret_version: int | None
    detail: str


class DistributedAccount(BaseModel):
    id: int
    name: str
    type: str
    secret_version: int
    distribution: str
    #: used by at least one of this computer's workflows: its secret is in the agent's bundle
    receives_secret: bool


class ComputerConfigView(BaseModel):
    computer: str
    epoch: int
    entries: list[ConfigEntry]
    accounts: list[DistributedAccount]
    problems: list[ConfigEntry]


def applicable(workflows: list[WorkflowDef], h: ClassHierarchy, class_id: str) -> list[WorkflowDef]:
    ancestors = set(h.ancestors(class_id))
    return [w for w in workflows if w.enabled and w.target in ancestors]


def describe_outcome(res: Resolution) -> str:
    if res.outcome is Outcome.CONFLICT:
        return "conflict: " + ", ".join(f"#{a.id} {a.account_name}" for a in res.conflicting)
    if res.outcome is Outcome.UNRESOLVED:
        return "no account associated and the profile cannot fall back"
    if res.outcome is Outcome.NOT_DISTRIBUTED:
        assert res.account is not None
        return f"credentials not found: {res.account.name} is not distributed to {res.computer}"
    if res.outcome is Outcome.ACTION_ACCOUNT:
        who = res.account.name if res.account else "the agent's own identity"
        return ("fallback to " if res.fallback else "") + f"default action account ({who})"
    assert res.account is not None
    return f"{res.account.name} ({res.account.identity})"


def computer_config(
    session: Session, computer: str, *, catalogs: catalog_loader.CatalogCache | None = None
) -> ComputerConfigView:
    lookup.computer(session, computer)
    objects = [
        convert.object_record(r)
        for r in session.scalars(
            select(ObjectRow).where(ObjectRow.computer_name == computer).order_by(ObjectRow.id)
        )
    ]
    workflows = [convert.workflow_def(r) for r in session.scalars(select(WorkflowRow))]
    cat = catalog_loader.load(
        session, {w.profile for w in workflows if w.profile}, computers=[computer], cache=catalogs
    )
    entries: list[ConfigEntry] = []
    used: set[int] = set()
    for obj in objects:
        for w in sorted(applicable(workflows, cat.hierarchy, obj.class_id), key=lambda w: w.id):
            res = resolve_workflow(w, obj, cat)
            if res.runs and res.account is not None:
                used.add(res.account.id)
            entries.append(
                ConfigEntry(
                    workflow=w.id,
                    kind=w.kind.value,
                    object=obj.full_name,
                    object_id=obj.id,
                    profile=w.profile,
                    outcome=res.outcome.value,
                    runs=res.runs,
                    account_id=res.account.id if res.account else None,
                    account=res.account.name if res.account else None,
                    secret_version=res.account.secret_version if res.account else None,
                    detail=describe_outcome(res),
                )
            )
    distributed = session.scalars(
        select(AccountRow)
        .where(
            or_(
                AccountRow.distribution_mode == DistributionMode.LESS_SECURE.value,
                AccountRow.id.in_(
                    select(DistributionRow.account_id).where(
                        DistributionRow.computer_name == computer
                    )
                ),
            )
        )
        .order_by(AccountRow.name)
    )
    accounts = [
        DistributedAccount(
            id=a.id,
            name=a.name,
            type=a.type,
            secret_version=a.current_version,
            distribution=a.distribution_mode,
            receives_secret=a.id in used,
        )
        for a in distributed
    ]
    return ComputerConfigView(
        computer=computer,
        epoch=int(lookup.setting(session, lookup.EPOCH_KEY, 0)),
        entries=entries,
        accounts=accounts,
        problems=[e for e in entries if not e.runs],
    )
