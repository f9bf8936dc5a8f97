"""Tasks (domain.md §7, docs/tasks.md): start a task on objects or groups, with the predefined
Run As account or credentials supplied for this run only; what agents pick up and report.

The rules are pure (:mod:`runas.domain.tasks`); this module reads what they need, writes what
they decide, and audits it. Everything about a run is in the database (``task_runs``,
``task_targets``): a server restart loses nothing, and an agent that was away picks its
pending targets up when it returns, unless their deadline passed.

Supplied credentials: the password is sealed at start, per target, to the public key of the
agent that runs it (``crypto.sealing.seal_once``, purpose ``task-credentials``, bound to the run
and the target); only that agent can open it. The clear password is never written anywhere —
no row, no audit record, no log — and the sealed copy is dropped as soon as the agent takes the
target or the target ends.

Starting a task changes nothing agents receive in their configuration (the accounts of tasks
are in their bundles already, see ``services/agent_config.build``), so it does not bump the
resolution epoch; nor does the Tasks Execution setting, which is read by this server only.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from runas.crypto.sealing import seal_once
from runas.domain import tasks as rules
from runas.domain.classes import ClassHierarchy
from runas.domain.model import WorkflowDef, WorkflowKind
from runas.domain.resolution import Outcome, resolve_workflow
from runas.domain.roles import Permission, Role
from runas.domain.tasks import CredentialMode, TargetStatus
from runas.errors import Forbidden, InvalidInput, NotFound
from runas.packs.elements import DEFAULT_TIMEOUT_SECONDS
from runas.runtime import UnitOfWork
from runas.services import audit, convert, explain, lookup
from runas.services import catalog as catalog_loader
from runas.services import objects as object_service
from runas.services.audit import AuditAction
from runas.services.monitoring import AuthFailureIn, Message, State
from runas.services.user_store import Principal
from runas.storage.tables import (
    NAME_LENGTH,
    AccountRow,
    AgentRow,
    ObjectRow,
    TaskRunRow,
    TaskTargetRow,
    WorkflowRow,
)

#: ``mg_settings`` key of the Tasks Execution setting (absent = enabled)
SETTING_KEY = "tasks_execution"
#: ``mg_settings`` key of the management group's name (``services/setup.py``)
GROUP_NAME_KEY = "management_group"
#: the purpose label supplied credentials are sealed under
PURPOSE = "task-credentials"
#: a run names at most this many targets, and fans out to at most this many objects
MAX_TARGETS = 1000
MAX_HISTORY = 1000
#: roles that see every run (others see the runs they requested)
_SEE_ALL = frozenset({Role.ADMINISTRATOR, Role.READ_ONLY_ADMINISTRATOR})


# -- models ------------------------------------------------------------------------------------


class SuppliedCredentials(BaseModel):
    """Credentials typed in for one run (*Other* in the console). ``repr`` hides the
    password; it is sealed to the executing agents and never stored."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=NAME_LENGTH)
    domain: str | None = Field(default=None, max_length=NAME_LENGTH)
    password: SecretStr

    @field_validator("user", "domain")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if any(ord(c) < 32 or c == "\\" for c in value):
            raise ValueError("must be a plain name (no backslash or control character)")
        return value or None

    @field_validator("password")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value


class TaskStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=NAME_LENGTH)
    targets: list[str] = Field(min_length=1, max_length=MAX_TARGETS)
    overrides: dict[str, str] = Field(default_factory=dict)
    credentials: SuppliedCredentials | None = None
    #: ``"MG1:alice"``: a start forwarded by the connected group MG1 for its user alice
    #: (docs/tasks.md). Only an administrator (the connection account) may say so.
    on_behalf_of: str | None = Field(default=None, max_length=2 * NAME_LENGTH)


class TaskParameterView(BaseModel):
    name: str
    default: str | int | float | bool | None
    overridable: bool
    description: str = ""


class TaskView(BaseModel):
    id: str
    display_name: str
    target_class: str
    profile: str | None
    probe_type: str
    timeout_seconds: int
    parameters: list[TaskParameterView]


class TaskTargetView(BaseModel):
    id: int
    object: str
    computer: str
    status: str
    state: str | None
    message: str
    exit_code: int | None
    #: the predefined Run As account (None: the action account, or supplied credentials)
    account: str | None
    started_at: datetime | None
    finished_at: datetime | None
    #: only filled by ``show(..., with_output=True)``
    output: str | None = None


class TaskRunView(BaseModel):
    id: str
    task: str
    requested_by: str
    requested_at: datetime
    management_group: str
    credential_mode: str
    supplied_user: str | None
    overrides: dict[str, str]
    #: pending | running | done | failed (domain/tasks.run_status)
    status: str
    targets: list[TaskTargetView]


class TaskResultIn(BaseModel):
    """What an agent reports for one target (already scrubbed)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    state: State
    message: Message = ""
    exit_code: int | None = None
    timed_out: bool = False
    #: scrubbed stdout + stderr; past 64 KiB it is cut
    output: str = Field(default="", max_length=4 * rules.MAX_OUTPUT_BYTES)
    started_at: AwareDatetime
    duration_s: float = Field(ge=0)
    auth_failure: AuthFailureIn | None = None
    #: how many secrets the agent replaced in the texts (a count, never a value)
    scrubbed: int = Field(default=0, ge=0)


# -- helpers -------------------------------------------------------------------------------------


def _sees_everything(principal: Principal | None) -> bool:
    return principal is None or any(g.role in _SEE_ALL for g in principal.roles)


def _administrator(principal: Principal | None) -> bool:
    """The local backend (no principal: a command on the server host) is an administrator."""
    return principal is None or any(g.role is Role.ADMINISTRATOR for g in principal.roles)


def group_name(session: Session) -> str:
    return str(lookup.setting(session, GROUP_NAME_KEY) or "management group")


def _task_view(w: WorkflowDef) -> TaskView:
    return TaskView(
        id=w.id,
        display_name=w.display_name,
        target_class=w.target,
        profile=w.profile,
        probe_type=w.probe_type,
        timeout_seconds=w.timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
        parameters=[
            TaskParameterView(
                name=p.name, default=p.default, overridable=p.overridable, description=p.description
            )
            for p in w.parameters
        ],
    )


def _find_task(session: Session, task_id: str) -> WorkflowDef:
    row = session.get(WorkflowRow, task_id)
    if row is None or row.kind != WorkflowKind.TASK.value:
        raise NotFound(f"no task {task_id!r}")
    return convert.workflow_def(row)


def _group_members(
    session: Session, h: ClassHierarchy, group_id: str, class_id: str | None
) -> list[ObjectRow] | None:
    """The members of ``group_id`` (of ``class_id`` or a derived class, when given), or None
    when there is no such group."""
    groups = catalog_loader.group_catalog(session, h, [group_id])
    if group_id not in groups:
        return None
    wanted = h.descendants(class_id) if class_id is not None else None
    classes: set[str] = set()
    names: set[str] = set()
    for gid in groups.closure(group_id):
        g = groups.get(gid)
        names.update(g.members)
        for rule in g.rules:
            classes |= h.descendants(rule.class_id)
    if wanted is not None:
        classes &= wanted
    stmt = (
        select(ObjectRow)
        .where(or_(ObjectRow.class_id.in_(sorted(classes)), ObjectRow.full_name.in_(sorted(names))))
        .order_by(ObjectRow.full_name)
    )
    return [
        r
        for r in session.scalars(stmt)
        if (wanted is None or r.class_id in wanted)
        and groups.membership(group_id, convert.object_record(r)) is not None
    ]


def _outside(ref: str) -> Forbidden:
    # The same answer for a target that does not exist and one outside the caller's scope.
    return Forbidden(f"{ref} is not within your scope (your roles' groups)")


def _targets(
    session: Session, task: WorkflowDef, refs: list[str], principal: Principal | None
) -> list[ObjectRow]:
    """The objects a start names: objects by full name (or id), groups fanned out to their
    members of the task's class. Each must be within the caller's object scope."""
    h = catalog_loader.hierarchy(session)
    scope = principal.object_scope() if principal is not None else None
    visible = object_service.visibility(session, scope)
    found: dict[int, ObjectRow] = {}
    for raw in refs:
        ref = raw.strip()
        if not ref:
            raise InvalidInput("a target is empty (give an object's full name or a group id)")
        if ":" in ref or ref.isdecimal():
            try:
                row = lookup.obj(session, ref)
            except NotFound:
                if visible is not None:
                    raise _outside(ref) from None
                raise
            record = convert.object_record(row)
            if visible is not None and not visible(record):
                raise _outside(ref)
            if not h.is_a(row.class_id, task.target):
                raise InvalidInput(
                    f"task {task.id} targets {task.target}; {row.full_name} is a {row.class_id}"
                )
            found.setdefault(row.id, row)
            continue
        members = _group_members(session, h, ref, task.target)
        if members is None:
            if visible is not None:
                raise _outside(ref)
            raise NotFound(f"no group {ref!r}")
        if visible is not None and any(not visible(convert.object_record(m)) for m in members):
            raise _outside(f"group {ref}")
        if not members:
            raise InvalidInput(
                f"group {ref} has no member of class {task.target} (the class task {task.id} "
                "targets)"
            )
        for m in members:
            found.setdefault(m.id, m)
    if len(found) > MAX_TARGETS:
        raise InvalidInput(f"a run may have at most {MAX_TARGETS} targets (got {len(found)})")
    return sorted(found.values(), key=lambda r: r.full_name)


def _split_user(display: str) -> tuple[str, str | None]:
    domain, sep, user = display.partition("\\")
    return (user, domain) if sep else (display, None)


# -- settings --------------------------------------------------------------------------------------


def tasks_execution(session: Session) -> bool:
    """The Tasks Execution setting of this management group (absent: enabled)."""
    value = lookup.setting(session, SETTING_KEY)
    return True if value is None else bool(value)


def set_tasks_execution(uow: UnitOfWork, enabled: bool, *, principal: Principal | None) -> bool:
    if principal is not None:
        principal.require(Permission.SETTINGS_WRITE)
    previous = tasks_execution(uow.session)
    lookup.set_setting(uow.session, SETTING_KEY, bool(enabled))
    audit.record(
        uow,
        AuditAction.SETTINGS_TASKS_EXECUTION,
        "tasks-execution",
        {
            "tasks_execution": "enabled" if enabled else "disabled",
            "previous": "enabled" if previous else "disabled",
        },
    )
    return bool(enabled)


# -- listing -------------------------------------------------------------------------------------


def list_tasks(
    session: Session, *, target: str | None, principal: Principal | None
) -> list[TaskView]:
    """The enabled tasks, those of the caller's task scope when their roles run tasks; with
    ``target`` (an object or a group), those that apply to it."""
    rows = session.scalars(
        select(WorkflowRow)
        .where(WorkflowRow.kind == WorkflowKind.TASK.value, WorkflowRow.enabled.is_(True))
        .order_by(WorkflowRow.id)
    )
    found = [convert.workflow_def(r) for r in rows]
    if principal is not None and principal.has(Permission.TASKS_RUN):
        scope = rules.task_scope(principal.roles)
        found = [w for w in found if rules.task_in_scope(w.id, scope)]
    if target is not None:
        h = catalog_loader.hierarchy(session)
        scope_groups = principal.object_scope() if principal is not None else None
        visible = object_service.visibility(session, scope_groups)
        classes: set[str]
        if ":" in target or target.isdecimal():
            row = lookup.obj(session, target)
            if visible is not None and not visible(convert.object_record(row)):
                raise NotFound(f"no object named {target!r}")
            classes = {row.class_id}
        else:
            members = _group_members(session, h, target, None)
            if members is None or (scope_groups is not None and target not in scope_groups):
                raise NotFound(f"no group {target!r}")
            classes = {m.class_id for m in members}
        found = [w for w in found if any(h.is_a(c, w.target) for c in classes)]
    return [_task_view(w) for w in found]


# -- starting ------------------------------------------------------------------------------------


def _origin(req: TaskStart, principal: Principal | None, session: Session) -> tuple[str, str]:
    """(requested by, management group) of a start."""
    if req.on_behalf_of is None:
        return (principal.name if principal is not None else "local"), group_name(session)
    group, sep, user = req.on_behalf_of.partition(":")
    if not sep or not group.strip() or not user.strip():
        raise InvalidInput("on_behalf_of must be GROUP:USER, e.g. MG1:alice")
    if not _administrator(principal):
        raise Forbidden("only a connection account (an administrator) may start on behalf of")
    return req.on_behalf_of, group.strip()


def start(uow: UnitOfWork, req: TaskStart, *, principal: Principal | None) -> TaskRunView:
    """Start ``req.task`` on its targets. Checks, in order: the caller may run tasks and this
    one (task scope); the overrides; the Tasks Execution setting of this management group;
    the targets (existence, class, object scope). Each target then runs on its computer's
    agent, or is stored ``refused`` with the reason (no approved agent, no account that runs
    it). Nothing is written when a check fails."""
    s = uow.session
    if principal is not None:
        principal.require(Permission.TASKS_RUN)
        if not rules.task_in_scope(req.task, rules.task_scope(principal.roles)):
            raise Forbidden(f"task {req.task} is not within your task scope")
    task = _find_task(s, req.task)
    if not task.enabled:
        raise InvalidInput(f"task {task.id} is disabled in its pack")
    rules.effective_parameters(task.id, task.parameters, req.overrides)
    refusal = rules.credentials_refusal(
        tasks_execution=tasks_execution(s),
        administrator=_administrator(principal),
        supplied=req.credentials is not None,
        management_group=group_name(s),
    )
    if refusal is not None:
        raise Forbidden(refusal)
    requested_by, management_group = _origin(req, principal, s)
    objects = _targets(s, task, req.targets, principal)
    expire_overdue(uow)

    supplied = req.credentials
    computers = sorted({o.computer_name for o in objects})
    agents = {
        a.id: a
        for a in s.scalars(
            select(AgentRow).where(AgentRow.id.in_(computers), AgentRow.status == "approved")
        )
    }
    cat = None
    if supplied is None:
        cat = catalog_loader.load(s, [task.profile] if task.profile else [], computers=computers)
    timeout = task.timeout_seconds or DEFAULT_TIMEOUT_SECONDS
    run = TaskRunRow(
        id=str(uuid.uuid4()),
        task_id=task.id,
        requested_by=requested_by,
        requested_at=uow.now,
        management_group=management_group,
        credential_mode=(CredentialMode.SUPPLIED if supplied else CredentialMode.PREDEFINED).value,
        supplied_user=rules.display_user(supplied.user, supplied.domain) if supplied else None,
        overrides=dict(req.overrides),
        timeout_seconds=timeout,
    )
    s.add(run)
    deadline = uow.now + timedelta(seconds=timeout)
    refused: list[dict[str, str]] = []
    for o in objects:
        target = TaskTargetRow(
            object_name=o.full_name,
            object_id=o.id,
            computer=o.computer_name,
            status=TargetStatus.PENDING.value,
            deadline=deadline,
            message="",
        )
        if o.computer_name not in agents:
            target.status = TargetStatus.REFUSED.value
            target.message = f"no approved agent runs on {o.computer_name}"
        elif cat is not None:
            res = resolve_workflow(task, convert.object_record(o), cat)
            if not res.runs:
                target.status = TargetStatus.REFUSED.value
                target.message = explain.describe_outcome(res)
            elif res.outcome is Outcome.ACCOUNT and res.account is not None:
                target.account_id = res.account.id
                target.secret_version = res.account.secret_version
        if target.status == TargetStatus.REFUSED.value:
            target.finished_at = uow.now
            refused.append({"object": o.full_name, "reason": target.message})
        run.targets.append(target)
    s.flush()
    if supplied is not None:
        password = supplied.password.get_secret_value()
        for target in run.targets:
            if target.status == TargetStatus.PENDING.value:
                target.sealed_credentials = seal_once(
                    agents[target.computer].hpke_public_key,
                    agent_id=target.computer,
                    purpose=PURPOSE,
                    run_id=f"{run.id}:{target.id}",
                    fields={"password": password},
                )
    details: dict[str, Any] = {
        "task": task.id,
        "management_group": management_group,
        "credential_mode": run.credential_mode,
        "supplied_user": run.supplied_user,
        "overrides": sorted(req.overrides),
        "targets": audit.capped(o.full_name for o in objects),
        "target_count": len(objects),
        "refused_count": len(refused),
    }
    if req.on_behalf_of is not None:
        details["on_behalf_of"] = req.on_behalf_of
    audit.record(uow, AuditAction.TASK_START, run.id, details)
    if refused:
        audit.record(
            uow,
            AuditAction.TASK_REFUSED,
            run.id,
            {
                "task": task.id,
                "targets": refused[: audit.MAX_LISTED],
                "more": max(0, len(refused) - audit.MAX_LISTED),
            },
        )
    return _run_view(s, run, now=uow.now, with_output=False)


# -- reading ---------------------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _effective(t: TaskTargetRow, timeout: int, now: datetime) -> tuple[str, str]:
    """A target's status and message as of ``now``: a timeout is seen as soon as it is due,
    whether or not it was written yet (lazily, by :func:`expire_overdue` and the agent
    routes)."""
    late = rules.expiry(t.status, t.deadline, timeout, now)
    return (late.status.value, late.message) if late is not None else (t.status, t.message)


def _run_views(
    session: Session, runs: Iterable[TaskRunRow], *, now: datetime, with_output: bool
) -> list[TaskRunView]:
    runs = list(runs)
    ids = {t.account_id for r in runs for t in r.targets if t.account_id is not None}
    names: dict[int, str] = {}
    if ids:
        stmt = select(AccountRow.id, AccountRow.name).where(AccountRow.id.in_(ids))
        names = {account_id: name for account_id, name in session.execute(stmt)}
    out = []
    for run in runs:
        targets = []
        for t in run.targets:
            status, message = _effective(t, run.timeout_seconds, now)
            targets.append(
                TaskTargetView(
                    id=t.id,
                    object=t.object_name,
                    computer=t.computer,
                    status=status,
                    state=t.state,
                    message=message,
                    exit_code=t.exit_code,
                    account=names.get(t.account_id) if t.account_id is not None else None,
                    started_at=t.started_at,
                    finished_at=t.finished_at,
                    output=(t.output or "") if with_output else None,
                )
            )
        out.append(
            TaskRunView(
                id=run.id,
                task=run.task_id,
                requested_by=run.requested_by,
                requested_at=run.requested_at,
                management_group=run.management_group,
                credential_mode=run.credential_mode,
                supplied_user=run.supplied_user,
                overrides=dict(run.overrides),
                status=rules.run_status(t.status for t in targets),
                targets=targets,
            )
        )
    return out


def _run_view(
    session: Session, run: TaskRunRow, *, now: datetime, with_output: bool
) -> TaskRunView:
    return _run_views(session, [run], now=now, with_output=with_output)[0]


def show(
    session: Session,
    run_id: str,
    *,
    principal: Principal | None,
    with_output: bool = False,
    now: datetime | None = None,
) -> TaskRunView:
    """A run with its targets (and their output with ``with_output``). A caller sees the runs
    they requested; administrators see every run. Another's run reads as a missing one."""
    run = session.get(TaskRunRow, run_id.strip()) if len(run_id) <= 64 else None
    mine = principal is None or (run is not None and run.requested_by == principal.name)
    if run is None or not (mine or _sees_everything(principal)):
        raise NotFound(f"no task run {run_id!r}")
    return _run_view(session, run, now=_now(now), with_output=with_output)


def history(
    session: Session,
    *,
    principal: Principal | None,
    limit: int = 50,
    now: datetime | None = None,
) -> list[TaskRunView]:
    """The newest runs first: the caller's own, or every run for administrators."""
    if limit < 1 or limit > MAX_HISTORY:
        raise InvalidInput(f"--limit must be between 1 and {MAX_HISTORY}")
    stmt = (
        select(TaskRunRow)
        .options(selectinload(TaskRunRow.targets))
        .order_by(TaskRunRow.requested_at.desc(), TaskRunRow.id)
        .limit(limit)
    )
    if not _sees_everything(principal):
        assert principal is not None
        stmt = stmt.where(TaskRunRow.requested_by == principal.name)
    return _run_views(session, session.scalars(stmt), now=_now(now), with_output=False)


def expire_overdue(uow: UnitOfWork) -> int:
    """Write the timeouts that are due (and drop their sealed credentials). Reads show them as
    soon as they are due anyway; this makes them stored. Returns how many targets changed."""
    s = uow.session
    rows = s.scalars(
        select(TaskTargetRow)
        .options(selectinload(TaskTargetRow.run))
        .where(
            TaskTargetRow.status.in_([TargetStatus.PENDING.value, TargetStatus.DELIVERED.value]),
            TaskTargetRow.deadline <= uow.now,
        )
    )
    changed = 0
    for t in rows:
        late = rules.expiry(t.status, t.deadline, t.run.timeout_seconds, uow.now)
        if late is not None:
            _end(t, late.status, late.message, uow.now)
            changed += 1
    return changed


def _end(t: TaskTargetRow, status: TargetStatus, message: str, now: datetime) -> None:
    t.status = status.value
    t.message = message
    t.sealed_credentials = None
    t.finished_at = t.finished_at or now


# -- the agent's side --------------------------------------------------------------------------


def has_pending(session: Session, agent_id: str) -> bool:
    """Whether ``agent_id`` has a target waiting (one indexed query)."""
    found = session.scalars(
        select(TaskTargetRow.id)
        .where(
            TaskTargetRow.computer == agent_id,
            TaskTargetRow.status == TargetStatus.PENDING.value,
        )
        .limit(1)
    ).first()
    return found is not None


def pending_for_agent(
    uow: UnitOfWork, agent_id: str, *, verify: Callable[[], object] | None = None
) -> list[dict[str, Any]]:
    """The task documents of ``agent_id``'s pending targets (docs/tasks.md), marked delivered:
    a delivered document is not served again. Nothing pending costs one indexed query;
    ``verify`` (the agent is still approved) runs only when something is pending."""
    s = uow.session
    rows = list(
        s.scalars(
            select(TaskTargetRow)
            .where(
                TaskTargetRow.computer == agent_id,
                TaskTargetRow.status == TargetStatus.PENDING.value,
            )
            .order_by(TaskTargetRow.id)
            .with_for_update()
        )
    )
    if not rows:
        return []
    if verify is not None:
        verify()
    h = catalog_loader.hierarchy(s)
    docs: list[dict[str, Any]] = []
    for t in rows:
        run = t.run
        late = rules.expiry(t.status, t.deadline, run.timeout_seconds, uow.now)
        if late is not None:
            _end(t, late.status, late.message, uow.now)
            continue
        try:
            doc = _document(s, h, run, t)
        except (InvalidInput, NotFound) as exc:
            _end(t, TargetStatus.REFUSED, exc.message, uow.now)
            continue
        t.status = TargetStatus.DELIVERED.value
        t.delivered_at = uow.now
        t.sealed_credentials = None
        docs.append(doc)
    return docs


def _document(s: Session, h: ClassHierarchy, run: TaskRunRow, t: TaskTargetRow) -> dict[str, Any]:
    row = s.get(WorkflowRow, run.task_id)
    if row is None or row.kind != WorkflowKind.TASK.value:
        raise NotFound(f"task {run.task_id} is no longer in the management group")
    task = convert.workflow_def(row)
    obj = s.get(ObjectRow, t.object_id) if t.object_id is not None else None
    if obj is None or obj.full_name != t.object_name:
        raise NotFound(f"{t.object_name} is no longer discovered")
    parameters = rules.effective_parameters(task.id, task.parameters, run.overrides)
    keys = dict(zip(h.key_properties(obj.class_id), obj.key_values, strict=False))
    account = None
    if t.account_id is not None:
        a = s.get(AccountRow, t.account_id)
        if a is None:
            raise NotFound("its Run As account was removed")
        t.secret_version = a.current_version
        account = {
            "id": a.id,
            "name": a.name,
            "type": a.type,
            "secret_version": a.current_version,
            "public": dict(a.public_fields),
        }
    credentials = None
    if run.credential_mode == CredentialMode.SUPPLIED.value:
        if t.sealed_credentials is None or run.supplied_user is None:
            raise NotFound("its supplied credentials are gone")
        user, domain = _split_user(run.supplied_user)
        credentials = {
            "type": rules.credential_type(domain),
            "user": user,
            "domain": domain,
            "sealed": base64.b64encode(t.sealed_credentials).decode("ascii"),
        }
    return {
        "run": run.id,
        "target": t.id,
        "task": task.id,
        "object": obj.full_name,
        "properties": {**dict(obj.properties or {}), **keys},
        "parameters": parameters,
        "probe": {"type": task.probe_type, "config": dict(task.probe_config or {})},
        "timeout_s": run.timeout_seconds,
        "deadline": t.deadline.isoformat(),
        "account": account,
        "credentials": credentials,
    }


def record_result(uow: UnitOfWork, agent_id: str, target_id: int, result: TaskResultIn) -> bool:
    """Store an agent's result for one of its targets. False (and nothing stored) for a
    target that is not awaiting a result: already reported, timed out, never delivered."""
    s = uow.session
    t = s.scalars(
        select(TaskTargetRow).where(TaskTargetRow.id == target_id).with_for_update()
    ).one_or_none()
    if t is None or t.computer != agent_id:
        raise NotFound(f"no task target {target_id}")
    if t.status != TargetStatus.DELIVERED.value:
        return False
    late = rules.expiry(t.status, t.deadline, t.run.timeout_seconds, uow.now)
    if late is not None:
        _end(t, late.status, late.message, uow.now)
        return False
    message = result.message
    if not message and result.auth_failure is not None:
        message = f"{result.auth_failure.kind}: {result.auth_failure.message}".rstrip(": ")
    if not message and result.timed_out:
        message = "the probe timed out"
    t.status = rules.status_of_result(result.state).value
    t.state = result.state
    t.message = message
    t.exit_code = result.exit_code
    t.output = rules.cut_output(result.output)
    t.started_at = result.started_at
    t.finished_at = result.started_at + timedelta(seconds=result.duration_s)
    t.sealed_credentials = None
    if result.scrubbed:
        audit.record(
            uow,
            AuditAction.AGENT_OUTPUT_SCRUBBED,
            agent_id,
            {"task_run": t.run_id, "target": t.id, "total": result.scrubbed},
        )
    return True


__all__ = [
    "PURPOSE",
    "SETTING_KEY",
    "SuppliedCredentials",
    "TaskParameterView",
    "TaskResultIn",
    "TaskRunView",
    "TaskStart",
    "TaskTargetView",
    "TaskView",
    "expire_overdue",
    "has_pending",
    "history",
    "list_tasks",
    "pending_for_agent",
    "record_result",
    "set_tasks_execution",
    "show",
    "start",
    "tasks_execution",
]
