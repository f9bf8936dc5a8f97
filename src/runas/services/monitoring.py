"""What agents report (docs/agents.md, ``POST /agent/v1/reports``), stored; and monitor state.

:func:`record_report` is the one entry point of a report: the agent API authenticates the
agent and calls it in the request's unit of work. A report is stored once, whatever how often
it arrives (``report_id``). Each result updates the latest state of one workflow for one
object (``monitor_states``), adds its events, and, when it ran with a Run As account, becomes
the latest credential check of that account on the agent's computer (``run_as_health``), which
Run As health (:mod:`runas.services.run_as_health`) turns into alerts.

An agent may only speak about its own computer: a result about an object hosted elsewhere (or
an unknown object or workflow) is skipped and counted, not stored; a discovery snapshot that
lists anything outside the agent's computer is refused as a whole (the results of the same
report are still stored: the agent drops a refused report, and its results are good).

    object_state(session, ref, scope=…) -> ObjectStateView   ``runas state show``
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from runas.domain.health import DEFAULT_GRACE
from runas.errors import InvalidInput, NotFound
from runas.runtime import UnitOfWork
from runas.services import audit, discovery, lookup, ssh_hosts
from runas.services import objects as object_service
from runas.services.audit import AuditAction
from runas.services.discovery import MAX_OBJECTS, DiscoveredObject, DiscoveryPayload
from runas.storage.tables import (
    FULL_NAME_LENGTH,
    NAME_LENGTH,
    AccountRow,
    AgentEventRow,
    AgentReportRow,
    MonitorStateRow,
    ObjectRow,
    RunAsHealthRow,
    WorkflowRow,
)

_log = logging.getLogger("runas.services.monitoring")

#: limits of one report (docs/agents.md)
MAX_RESULTS = 1000
MAX_MESSAGE_BYTES = 4 * 1024
MAX_PERF = 64
MAX_EVENTS = 32
REPORT_ID_LENGTH = 64
#: how long a report id is remembered (an agent retries a report for minutes, not days)
REPORT_RETENTION = timedelta(days=1)


def _at_most_4k(value: str) -> str:
    if len(value.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise ValueError(f"must be at most {MAX_MESSAGE_BYTES} bytes (UTF-8)")
    return value


Message = Annotated[str, AfterValidator(_at_most_4k)]
State = Literal["healthy", "warning", "critical", "unknown"]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    severity: Literal["information", "warning", "error"]
    message: Message


class AuthFailureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["logon-failed", "elevation-failed"]
    message: Message = ""


class HostKeyIn(BaseModel):
    """An SSH host key (public data) a probe was offered and could not verify."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    #: OpenSSH public key format: "<type> <base64>"
    key: str = Field(min_length=1, max_length=16384)


class ResultIn(BaseModel):
    """One run of one workflow for one object, as the agent reports it (already scrubbed)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    workflow: str = Field(min_length=1, max_length=NAME_LENGTH)
    object: str = Field(min_length=1, max_length=FULL_NAME_LENGTH)
    started_at: AwareDatetime
    duration_s: float = Field(ge=0)
    state: State
    message: Message = ""
    exit_code: int | None = None
    timed_out: bool = False
    perf: dict[Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)], float] = Field(
        default_factory=dict, max_length=MAX_PERF
    )
    events: list[EventIn] = Field(default_factory=list, max_length=MAX_EVENTS)
    account_id: int | None = Field(default=None, ge=1)
    secret_version: int | None = Field(default=None, ge=0)
    auth_failure: AuthFailureIn | None = None
    #: how many secrets the agent replaced in this result's texts (a count, never a value)
    scrubbed: int = Field(default=0, ge=0)
    #: what a discovery workflow found (submitted as a snapshot: source = the workflow,
    #: scope = the agent's computer); None for other workflows
    discovery: list[DiscoveredObject] | None = Field(default=None, max_length=MAX_OBJECTS)
    #: an SSH host key the target offered that the management group does not trust yet
    host_key: HostKeyIn | None = None


class AgentReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report_id: str = Field(min_length=1, max_length=REPORT_ID_LENGTH)
    epoch: int = Field(ge=0)
    results: list[ResultIn] = Field(default_factory=list, max_length=MAX_RESULTS)
    discovery: DiscoveryPayload | None = None


# -- recording -------------------------------------------------------------------------------


@dataclass
class _Outcome:
    stored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    scrubbed: dict[str, int] = field(default_factory=dict)
    #: Run As health inputs changed: evaluate the computer now rather than at the next sweep
    health_changed: bool = False

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def _credential_check(r: ResultIn) -> tuple[str | None, str] | None:
    """What a result says about the credential it ran with: ``(failure kind or None, message)``;
    None when it proves nothing (no account, timed out, or unknown without an auth failure).
    The same rule as the agent's ``ProbeResult.credential_report``."""
    if r.account_id is None:
        return None
    if r.auth_failure is not None:
        return r.auth_failure.kind, r.auth_failure.message
    if r.timed_out or r.state == "unknown":
        return None
    return None, ""


def _store_credential_checks(
    uow: UnitOfWork, agent_id: str, results: Sequence[ResultIn], out: _Outcome
) -> None:
    latest: dict[int, ResultIn] = {}
    for r in results:
        if _credential_check(r) is None:
            continue
        assert r.account_id is not None
        best = latest.get(r.account_id)
        if best is None or r.started_at >= best.started_at:
            latest[r.account_id] = r
    if not latest:
        return
    s = uow.session
    known = set(s.scalars(select(AccountRow.id).where(AccountRow.id.in_(sorted(latest)))))
    for account_id, r in sorted(latest.items()):
        if account_id not in known:
            out.skip("unknown account")
            continue
        check = _credential_check(r)
        assert check is not None
        failure, message = check
        row = s.get(RunAsHealthRow, (account_id, agent_id))
        if row is None:
            row = RunAsHealthRow(
                account_id=account_id,
                computer=agent_id,
                state="ok",
                message="",
                since=uow.now,
                missing_since=None,
                report_message="",
            )
            s.add(row)
            out.health_changed = True
        elif row.report_at is not None and row.report_at > r.started_at:
            continue  # an older run arriving late (another server, a retried report)
        if row.report_failure != failure or row.report_secret_version != r.secret_version:
            out.health_changed = True
        row.report_failure = failure
        row.report_message = message
        row.report_at = r.started_at
        row.report_secret_version = r.secret_version


def _store_results(
    uow: UnitOfWork, agent_id: str, results: Sequence[ResultIn], out: _Outcome
) -> None:
    s = uow.session
    names = sorted({r.object for r in results})
    objects: dict[str, ObjectRow] = {}
    for start in range(0, len(names), 500):
        for row in s.scalars(
            select(ObjectRow).where(ObjectRow.full_name.in_(names[start : start + 500]))
        ):
            objects[row.full_name] = row
    workflow_ids = sorted({r.workflow for r in results})
    workflows = set(s.scalars(select(WorkflowRow.id).where(WorkflowRow.id.in_(workflow_ids))))

    accepted: list[tuple[ResultIn, ObjectRow]] = []
    for r in results:
        obj = objects.get(r.object)
        if obj is None:
            out.skip("unknown object")
        elif obj.computer_name != agent_id:
            out.skip("object of another computer")
        elif r.workflow not in workflows:
            out.skip("unknown workflow")
        else:
            accepted.append((r, obj))

    object_ids = sorted({obj.id for _, obj in accepted})
    states: dict[tuple[int, str], MonitorStateRow] = {}
    for start in range(0, len(object_ids), 500):
        for st in s.scalars(
            select(MonitorStateRow).where(
                MonitorStateRow.object_id.in_(object_ids[start : start + 500])
            )
        ):
            states[(st.object_id, st.workflow_id)] = st

    for r, obj in accepted:
        out.stored += 1
        if r.scrubbed:
            out.scrubbed[r.workflow] = out.scrubbed.get(r.workflow, 0) + r.scrubbed
        key = (obj.id, r.workflow)
        state = states.get(key)
        if state is None:
            state = MonitorStateRow(object_id=obj.id, workflow_id=r.workflow)
            s.add(state)
            states[key] = state
        elif state.ran_at > r.started_at:
            state = None  # a newer run is already stored (a late or retried report)
        if state is not None:
            state.agent_id = agent_id
            state.state = r.state
            state.message = r.message
            state.exit_code = r.exit_code
            state.timed_out = r.timed_out
            state.perf = dict(r.perf)
            state.account_id = r.account_id
            state.secret_version = r.secret_version
            state.ran_at = r.started_at
            state.duration_s = r.duration_s
            state.updated_at = uow.now
        for e in r.events:
            s.add(
                AgentEventRow(
                    at=r.started_at,
                    agent_id=agent_id,
                    object_name=obj.full_name,
                    workflow_id=r.workflow,
                    severity=e.severity,
                    message=e.message,
                )
            )
    _store_credential_checks(uow, agent_id, [r for r, _ in accepted], out)


def _submit_discovery(
    uow: UnitOfWork,
    agent_id: str,
    payload: DiscoveryPayload,
    *,
    scope: str | None = None,
    remote_classes: tuple[str, ...] = (),
) -> bool:
    """Discovery from an agent, in a savepoint: refused as a whole (logged and audited as
    denied) if it names anything outside the agent's computer (beyond ``remote_classes``) or is
    invalid. Returns whether it changed any object."""
    try:
        with uow.session.begin_nested():
            result = discovery.submit(
                uow,
                payload,
                only_computer=agent_id,
                scope=scope,
                remote_classes=remote_classes,
            )
    except InvalidInput as err:
        _log.warning(
            "agent.discovery_refused",
            extra={"fields": {"agent": agent_id, "source": payload.source, "error": str(err)}},
        )
        audit.record(
            uow,
            AuditAction.AGENT_DISCOVERY_REFUSED,
            agent_id,
            {"source": payload.source, "objects": len(payload.objects), "reason": str(err)},
            outcome="denied",
        )
        return False
    return bool(result.added or result.updated or result.removed)


def _submit_workflow_discoveries(
    uow: UnitOfWork, agent_id: str, results: Sequence[ResultIn], out: _Outcome
) -> None:
    """What the agent's discovery workflows found: each result with ``discovery`` is a snapshot
    from source = the workflow, scoped to the object it ran for (so the findings of one target
    never erase another's). Only a discovery workflow, run for an object on the agent's own
    computer, may submit; objects off that computer only of the classes it ``discovers``."""
    s = uow.session
    for r in results:
        if r.discovery is None:
            continue
        workflow = s.get(WorkflowRow, r.workflow)
        if workflow is None or workflow.kind != "discovery":
            out.skip("discovery from a workflow that is not a discovery")
            continue
        target = s.scalars(select(ObjectRow).where(ObjectRow.full_name == r.object)).one_or_none()
        if target is None or target.computer_name != agent_id:
            out.skip("discovery for an object of another computer")
            continue
        payload = DiscoveryPayload(source=r.workflow, computer=agent_id, objects=r.discovery)
        if _submit_discovery(
            uow, agent_id, payload, scope=r.object, remote_classes=tuple(workflow.discovers)
        ):
            out.health_changed = True


def _record_host_keys(uow: UnitOfWork, agent_id: str, results: Sequence[ResultIn]) -> None:
    """Each SSH host key a probe was offered and could not verify becomes a pending key
    (once per distinct key; ``services/ssh_hosts.py``), whatever became of its result."""
    seen: set[tuple[str, int, str]] = set()
    for r in results:
        offer = r.host_key
        if offer is None or (offer.host, offer.port, offer.key) in seen:
            continue
        seen.add((offer.host, offer.port, offer.key))
        ssh_hosts.record_offer(uow, agent_id, offer.host, offer.port, offer.key)


def record_report(
    uow: UnitOfWork, agent_id: str, report: AgentReport, *, grace: timedelta = DEFAULT_GRACE
) -> int:
    """Store one report of agent ``agent_id`` (already authenticated); returns how many
    results were stored. A report whose ``report_id`` was seen before returns 0 and changes
    nothing. ``grace``: the credentials-not-found grace for the Run As health evaluation that
    follows a report whose credential checks changed something."""
    from runas.services import run_as_health  # run_as_health builds on this module

    s = uow.session
    if s.get(AgentReportRow, report.report_id) is not None:
        return 0
    s.add(AgentReportRow(report_id=report.report_id, agent_id=agent_id, received_at=uow.now))
    s.flush()

    out = _Outcome()
    # Discovery first: results may be about objects it adds.
    if report.discovery is not None and _submit_discovery(uow, agent_id, report.discovery):
        out.health_changed = True
    _submit_workflow_discoveries(uow, agent_id, report.results, out)
    _store_results(uow, agent_id, report.results, out)
    _record_host_keys(uow, agent_id, report.results)

    if out.skipped:
        _log.warning(
            "agent.results_skipped",
            extra={"fields": {"agent": agent_id, "report": report.report_id, **out.skipped}},
        )
    if out.scrubbed:
        per_workflow = [
            {"workflow": w, "count": n} for w, n in sorted(out.scrubbed.items())[: audit.MAX_LISTED]
        ]
        audit.record(
            uow,
            AuditAction.AGENT_OUTPUT_SCRUBBED,
            agent_id,
            {
                "report": report.report_id,
                "total": sum(out.scrubbed.values()),
                "workflows": per_workflow,
                "more_workflows": max(0, len(out.scrubbed) - audit.MAX_LISTED),
            },
        )
    if out.health_changed:
        run_as_health.evaluate_computer(uow, agent_id, grace=grace)
    return out.stored


def prune_reports(session: Session, now: datetime, keep: timedelta = REPORT_RETENTION) -> int:
    """Forget report ids older than ``keep`` (the Run As health sweep calls this)."""
    result = session.execute(delete(AgentReportRow).where(AgentReportRow.received_at < now - keep))
    return int(getattr(result, "rowcount", 0) or 0)


#: how long agents' events are kept (SCOM grooms event data after 7 days by default)
DEFAULT_EVENT_RETENTION = timedelta(days=7)


def prune_events(session: Session, now: datetime, keep: timedelta = DEFAULT_EVENT_RETENTION) -> int:
    """Delete agents' events older than ``keep`` (the full Run As health sweep calls this):
    events arrive with every report, and a table nobody grooms grows without bound."""
    result = session.execute(delete(AgentEventRow).where(AgentEventRow.at < now - keep))
    return int(getattr(result, "rowcount", 0) or 0)


# -- reading ---------------------------------------------------------------------------------


class WorkflowStateView(BaseModel):
    workflow: str
    kind: str | None
    state: str
    message: str
    exit_code: int | None
    timed_out: bool
    perf: dict[str, float]
    ran_at: datetime
    duration_s: float
    #: the Run As account the run used (None: the default action account)
    account: str | None
    secret_version: int | None
    agent: str


class ObjectStateView(BaseModel):
    object: str
    object_id: int
    class_id: str
    computer: str
    workflows: list[WorkflowStateView]


def object_state(
    session: Session, ref: str, *, scope: frozenset[str] | None = None
) -> ObjectStateView:
    """The latest reported state of each workflow for one object. With a ``scope`` (a caller's
    role scope), an object outside it reads exactly like one that does not exist."""
    row = lookup.obj(session, ref)
    if scope is not None and not object_service.visible_to(session, scope, row):
        # the same answer as ``objects.show`` for an object out of scope
        raise NotFound(
            f"no object with id {ref}" if ref.isdecimal() else f"no object named {ref!r}"
        )
    states = list(
        session.scalars(
            select(MonitorStateRow)
            .where(MonitorStateRow.object_id == row.id)
            .order_by(MonitorStateRow.workflow_id)
        )
    )
    kinds = {
        w: k
        for w, k in session.execute(
            select(WorkflowRow.id, WorkflowRow.kind).where(
                WorkflowRow.id.in_([st.workflow_id for st in states])
            )
        )
    }
    account_ids = sorted({st.account_id for st in states if st.account_id is not None})
    names = {
        i: n
        for i, n in session.execute(
            select(AccountRow.id, AccountRow.name).where(AccountRow.id.in_(account_ids))
        )
    }
    return ObjectStateView(
        object=row.full_name,
        object_id=row.id,
        class_id=row.class_id,
        computer=row.computer_name,
        workflows=[
            WorkflowStateView(
                workflow=st.workflow_id,
                kind=kinds.get(st.workflow_id),
                state=st.state,
                message=st.message,
                exit_code=st.exit_code,
                timed_out=st.timed_out,
                perf={k: float(v) for k, v in st.perf.items()},
                ran_at=st.ran_at,
                duration_s=st.duration_s,
                account=_account_name(names, st.account_id),
                secret_version=st.secret_version,
                agent=st.agent_id,
            )
            for st in states
        ],
    )


def _account_name(names: dict[int, str], account_id: int | None) -> str | None:
    if account_id is None:
        return None
    # an account removed since the run: still say which one it was
    return names.get(account_id, f"#{account_id} (removed)")


__all__ = [
    "MAX_RESULTS",
    "AgentReport",
    "AuthFailureIn",
    "EventIn",
    "ObjectStateView",
    "ResultIn",
    "WorkflowStateView",
    "object_state",
    "prune_reports",
    "record_report",
]
