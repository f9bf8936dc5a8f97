"""Run As health (domain.md §9), stored per (account, computer), and the alerts it raises.

The rules are pure (:mod:`runas.domain.health`); this module gathers their inputs from the
database and keeps the result:

* which accounts a computer needs, and how: :func:`runas.services.explain.computer_config`
  resolves every workflow for every object of the computer — a workflow that runs with an
  account needs it, ``not-distributed`` needs it but cannot have it, ``conflict`` names the
  accounts left at the same rank (read from ``explain`` for that workflow and object);
* the accounts distributed to the computer by name (more-secure distribution) are evaluated
  too, so an expiring secret shows where it is sent even before a workflow uses it (the pairs
  domain/health.py names);
* the latest credential check an agent reported (``run_as_health.report_*``, written by
  :func:`runas.services.monitoring.record_report`), each account's ``expires_at`` and current
  secret version, and ``missing_since`` (kept with :func:`~runas.domain.health.track_missing`).

:func:`evaluate_computer` writes one ``run_as_health`` row per relevant pair (deleting the rows
of pairs that no longer are) and applies :func:`~runas.domain.health.alert_transitions` to the
``alerts`` table: key ``runas-health:<account id>:<computer>``, at most one open alert per key.
Opening and closing an alert is audited (``alert:open``, ``alert:close``, actor ``system``).

:class:`HealthSweeper` re-evaluates every computer periodically (expiry and the not-distributed
grace period move with time, not with changes), one transaction per computer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from runas.domain.accounts import DistributionMode
from runas.domain.health import (
    DEFAULT_GRACE,
    SEVERITY,
    AlertAction,
    AlertChange,
    AuthFailureKind,
    Health,
    HealthInputs,
    HealthKey,
    HealthState,
    ProbeReport,
    alert_transitions,
    evaluate,
    track_missing,
)
from runas.domain.resolution import Outcome
from runas.errors import NotFound
from runas.runtime import Runtime, UnitOfWork
from runas.services import audit, explain, lookup, monitoring
from runas.services.audit import AuditAction
from runas.services.catalog import CatalogCache
from runas.storage.tables import (
    AccountRow,
    AgentRow,
    AlertRow,
    DistributionRow,
    RunAsHealthRow,
)

_log = logging.getLogger("runas.services.run_as_health")

SOURCE = "runas-health"
#: who opens and closes alerts (the audit trail's actor)
SYSTEM_ACTOR = "system"


def alert_key(account_id: int, computer: str) -> str:
    return f"{SOURCE}:{account_id}:{computer}"


# -- gathering the inputs --------------------------------------------------------------------


@dataclasses.dataclass
class _Need:
    outcomes: set[Outcome] = dataclasses.field(default_factory=set)
    profiles: set[str] = dataclasses.field(default_factory=set)
    conflict_with: set[str] = dataclasses.field(default_factory=set)


def _needs(
    session: Session, computer: str, catalogs: CatalogCache | None = None
) -> dict[int, _Need]:
    """Per account id: what the computer's workflows need of it."""
    try:
        config = explain.computer_config(session, computer, catalogs=catalogs)
    except NotFound:  # the computer is gone: nothing there needs anything
        return {}
    needs: dict[int, _Need] = {}
    for e in config.entries:
        outcome = Outcome(e.outcome)
        if outcome is Outcome.CONFLICT:
            why = explain.explain(session, obj_ref=str(e.object_id), workflow=e.workflow)
            names = {c.account for c in why.conflicting}
            ids = {
                n: i
                for n, i in session.execute(
                    select(AccountRow.name, AccountRow.id).where(AccountRow.name.in_(names))
                )
            }
            for name, account_id in ids.items():
                need = needs.setdefault(account_id, _Need())
                need.outcomes.add(Outcome.CONFLICT)
                need.conflict_with |= names - {name}
        elif e.account_id is not None and (e.runs or outcome is Outcome.NOT_DISTRIBUTED):
            need = needs.setdefault(e.account_id, _Need())
            if outcome is Outcome.NOT_DISTRIBUTED:
                need.outcomes.add(outcome)
                if e.profile:
                    need.profiles.add(e.profile)
    return needs


def _distributed(session: Session, computer: str) -> set[int]:
    """Accounts distributed to the computer by name (more-secure distribution)."""
    return set(
        session.scalars(
            select(DistributionRow.account_id)
            .join(AccountRow, AccountRow.id == DistributionRow.account_id)
            .where(
                DistributionRow.computer_name == computer,
                AccountRow.distribution_mode == DistributionMode.MORE_SECURE.value,
            )
        )
    )


def _report(row: RunAsHealthRow | None) -> ProbeReport | None:
    if row is None or row.report_at is None:
        return None
    failure = AuthFailureKind(row.report_failure) if row.report_failure else None
    return ProbeReport(row.report_at, failure, row.report_message, row.report_secret_version)


def _lock(session: Session, computer: str) -> None:
    """Serialise evaluations of one computer across servers (PostgreSQL; SQLite writers are
    serialised already), so two of them never open the same alert twice."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"{SOURCE}:{computer}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


# -- evaluation --------------------------------------------------------------------------------


@dataclasses.dataclass
class _Assessment:
    """Everything an evaluation of one computer decides, before anything is written."""

    computer: str
    rows: dict[int, RunAsHealthRow]
    accounts: dict[int, AccountRow]
    previous: dict[HealthKey, Health]
    current: dict[HealthKey, Health]
    #: account id -> missing_since to keep
    missing: dict[int, datetime | None]
    gone: list[int]
    changes: list[AlertChange[HealthKey]]

    def changes_anything(self, session: Session) -> bool:
        """Whether writing it would change any row: a new, changed or deleted health row, an
        alert to open, update or close."""
        if self.gone or self.changes:
            return True
        for key, health in self.current.items():
            row = self.rows.get(key.account_id)
            if (
                row is None
                or row.state != health.state.value
                or row.message != health.message
                or row.missing_since != self.missing[key.account_id]
            ):
                return True
        unhealthy = {
            alert_key(k.account_id, self.computer) for k, h in self.current.items() if not h.ok
        }
        open_keys = set(
            session.scalars(
                select(AlertRow.key).where(
                    AlertRow.source == SOURCE,
                    AlertRow.computer == self.computer,
                    AlertRow.closed_at.is_(None),
                )
            )
        )
        return bool(open_keys - unhealthy)


def _assess(
    s: Session,
    computer: str,
    now: datetime,
    grace: timedelta,
    catalogs: CatalogCache | None = None,
) -> _Assessment:
    needs = _needs(s, computer, catalogs)
    wanted = set(needs) | _distributed(s, computer)
    rows = {
        r.account_id: r
        for r in s.scalars(select(RunAsHealthRow).where(RunAsHealthRow.computer == computer))
    }
    accounts = {
        a.id: a
        for a in s.scalars(select(AccountRow).where(AccountRow.id.in_(sorted(wanted | set(rows)))))
    }

    previous: dict[HealthKey, Health] = {}
    for account_id, stored in rows.items():
        name = accounts[account_id].name if account_id in accounts else f"#{account_id}"
        previous[HealthKey(account_id, computer)] = Health(
            name, computer, HealthState(stored.state), stored.message
        )

    current: dict[HealthKey, Health] = {}
    missing: dict[int, datetime | None] = {}
    for account_id in sorted(wanted):
        account = accounts.get(account_id)
        if account is None:
            continue
        need = needs.get(account_id, _Need())
        row = rows.get(account_id)
        is_missing = Outcome.NOT_DISTRIBUTED in need.outcomes
        missing_since = track_missing(row.missing_since if row else None, is_missing, now)
        current[HealthKey(account_id, computer)] = evaluate(
            HealthInputs(
                account=account.name,
                computer=computer,
                outcomes=frozenset(need.outcomes),
                missing_since=missing_since,
                profiles=frozenset(need.profiles),
                conflict_with=frozenset(need.conflict_with),
                report=_report(row),
                secret_version=account.current_version,
                expires_at=account.expires_at,
            ),
            now,
            grace,
        )
        missing[account_id] = missing_since
    gone = sorted(set(rows) - {k.account_id for k in current})
    return _Assessment(
        computer,
        rows,
        accounts,
        previous,
        current,
        missing,
        gone,
        alert_transitions(previous, current),
    )


def evaluate_computer(
    uow: UnitOfWork,
    computer: str,
    *,
    grace: timedelta = DEFAULT_GRACE,
    catalogs: CatalogCache | None = None,
) -> list[AlertChange[HealthKey]]:
    """Evaluate Run As health on ``computer`` now, store it, and open, update or close its
    alerts. Returns the alert changes made. ``catalogs``: content kept per epoch (a sweep
    of many computers reads it once)."""
    s = uow.session
    now = uow.now
    _lock(s, computer)
    found = _assess(s, computer, now, grace, catalogs)
    rows = found.rows
    for key, health in found.current.items():
        account_id = key.account_id
        missing_since = found.missing[account_id]
        row = rows.get(account_id)
        if row is None:
            row = RunAsHealthRow(
                account_id=account_id,
                computer=computer,
                state=health.state.value,
                message=health.message,
                since=now,
                report_message="",
            )
            s.add(row)
        elif row.state != health.state.value:
            row.state = health.state.value
            row.since = now
        row.message = health.message
        row.missing_since = missing_since

    if found.gone:
        s.execute(
            delete(RunAsHealthRow).where(
                RunAsHealthRow.computer == computer, RunAsHealthRow.account_id.in_(found.gone)
            )
        )
    _apply(uow, computer, found.changes, found.current, found.accounts)
    s.flush()
    return found.changes


def would_change(
    session: Session,
    computer: str,
    *,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
    catalogs: CatalogCache | None = None,
) -> bool:
    """Whether :func:`evaluate_computer` would write anything now; reads only (a sweeper
    asks this in a read-only transaction and takes the write lock only when it must)."""
    return _assess(session, computer, now, grace, catalogs).changes_anything(session)


def _apply(
    uow: UnitOfWork,
    computer: str,
    changes: list[AlertChange[HealthKey]],
    current: dict[HealthKey, Health],
    accounts: dict[int, AccountRow],
) -> None:
    s = uow.session
    now = uow.now
    system = dataclasses.replace(uow, actor=SYSTEM_ACTOR)
    open_alerts = {
        a.key: a
        for a in s.scalars(
            select(AlertRow).where(
                AlertRow.source == SOURCE,
                AlertRow.computer == computer,
                AlertRow.closed_at.is_(None),
            )
        )
    }

    def name_of(account_id: int) -> str | None:
        account = accounts.get(account_id)
        return account.name if account is not None else None

    def close(alert: AlertRow, message: str) -> None:
        alert.closed_at = now
        alert.updated_at = now
        _audit(system, AuditAction.ALERT_CLOSE, alert, name_of(alert.account_id or 0), message)

    for change in changes:
        key = alert_key(change.key.account_id, computer)
        alert = open_alerts.get(key)
        if change.action is AlertAction.CLOSE:
            if alert is not None:
                close(alert, change.message)
                del open_alerts[key]
            continue
        if alert is None:
            alert = AlertRow(
                key=key,
                source=SOURCE,
                computer=computer,
                account_id=change.key.account_id,
                object_name=None,
                state=change.state.value,
                severity=change.severity.value,
                message=change.message,
                opened_at=now,
                updated_at=now,
                closed_at=None,
            )
            s.add(alert)
            s.flush()
            open_alerts[key] = alert
            _audit(system, AuditAction.ALERT_OPEN, alert, name_of(change.key.account_id))
        else:
            alert.state = change.state.value
            alert.severity = change.severity.value
            alert.message = change.message
            alert.updated_at = now

    # An alert whose pair has no health row any more (the account was removed: its rows went
    # with it) or that is open while its pair is healthy is closed too.
    unhealthy = {alert_key(k.account_id, computer) for k, h in current.items() if not h.ok}
    for key, alert in sorted(open_alerts.items()):
        if key not in unhealthy:
            close(alert, f"{alert.message} — resolved")


def _audit(
    uow: UnitOfWork,
    action: AuditAction,
    alert: AlertRow,
    account: str | None,
    message: str | None = None,
) -> None:
    audit.record(
        uow,
        action,
        alert.key,
        {
            "alert": alert.id,
            "computer": alert.computer,
            "account": account,
            "account_id": alert.account_id,
            "state": alert.state,
            "severity": alert.severity,
            "message": message if message is not None else alert.message,
        },
    )


def computers_to_sweep(session: Session) -> list[str]:
    """Every computer with an approved agent or a stored Run As health row."""
    agents = set(session.scalars(select(AgentRow.id).where(AgentRow.status == "approved")))
    stored = set(session.scalars(select(RunAsHealthRow.computer).distinct()))
    with_alerts = set(
        session.scalars(
            select(AlertRow.computer)
            .where(AlertRow.source == SOURCE, AlertRow.closed_at.is_(None))
            .distinct()
        )
    )
    return sorted(agents | stored | with_alerts)


def sweep(uow: UnitOfWork, *, grace: timedelta = DEFAULT_GRACE) -> int:
    """Evaluate every computer of :func:`computers_to_sweep` in this one unit of work; also
    forgets old report ids. Returns how many computers were evaluated.
    (:class:`HealthSweeper` does the same with one transaction per computer.)"""
    computers = computers_to_sweep(uow.session)
    for computer in computers:
        evaluate_computer(uow, computer, grace=grace)
    monitoring.prune_reports(uow.session, uow.now)
    return len(computers)


#: a sweep re-evaluates every computer at least this often (expiry thresholds are crossed by
#: time alone); between full sweeps only computers whose inputs may have changed are
FULL_SWEEP_S = 300.0


def awaiting_grace(session: Session) -> set[str]:
    """Computers where a needed account is missing but the grace period has not yet run out:
    time alone will change their health."""
    return set(
        session.scalars(
            select(RunAsHealthRow.computer)
            .where(
                RunAsHealthRow.missing_since.is_not(None),
                RunAsHealthRow.state != HealthState.NOT_DISTRIBUTED.value,
            )
            .distinct()
        )
    )


#: the share of the time a long sweep may work (it rests the rest): after a change that touches
#: every computer — a password rolled out to thousands of agents — the sweep must not take the
#: CPU (and the GIL) from the configuration deliveries that roll the change out
SWEEP_DUTY = 0.5
#: a sweep this short runs without resting
SWEEP_UNPACED = 100
#: while configurations are being delivered, a sweep evaluates one computer per this many
#: seconds (it makes progress, but takes almost nothing from the roll-out)...
YIELD_STEP_S = 0.5
#: ...and rests long enough to work at most this share of the time (evaluating a computer
#: takes tens of milliseconds in a large group: one per 0.5 s was still a sixth of a core)
YIELD_DUTY = 0.05


class HealthSweeper:
    """A daemon thread that re-evaluates Run As health every ``interval_s`` seconds.

    Each computer is evaluated in a read-only transaction first, and in a write transaction of
    its own only when its health or alerts change, so a large management group never holds
    the write lock (SQLite) for a whole sweep, and one computer that fails (logged) does not
    stop the others; content is read once per epoch for the whole sweep (``catalogs``). While
    configurations are being delivered (``yield_to``) the sweep slows to one computer per
    ``yield_step_s``. Incremental: a computer is evaluated again only when the resolution
    epoch changed since its last evaluation (anything that can change what it needs), when it
    waits for a grace period to end, or at the full sweep every :data:`FULL_SWEEP_S` (expiry
    thresholds); probe reports re-evaluate their computer themselves. With thousands of agents
    a sweep of every computer every interval would compete with every poll."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        interval_s: float,
        grace: timedelta = DEFAULT_GRACE,
        event_retention: timedelta = monitoring.DEFAULT_EVENT_RETENTION,
        duty: float = SWEEP_DUTY,
        unpaced: int = SWEEP_UNPACED,
        yield_to: Callable[[], bool] | None = None,
        yield_step_s: float = YIELD_STEP_S,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if not 0 < duty <= 1:
            raise ValueError("duty must be in (0, 1]")
        self.duty = duty
        self.unpaced = unpaced
        self.runtime = runtime
        self.interval_s = interval_s
        self.grace = grace
        self.event_retention = event_retention
        #: while this says True (configurations being delivered), the sweep waits
        self.yield_to = yield_to
        self.yield_step_s = yield_step_s
        #: content per epoch, read once for every computer of a sweep
        self.catalogs = CatalogCache()
        #: computers evaluated whose health needed no write (read-only transaction only)
        self.unchanged = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: computer -> the epoch at its last evaluation
        self._evaluated_at: dict[str, int] = {}
        self._last_full = -float("inf")

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="runas-health-sweep", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep sweeping: a database that is away comes back
                _log.exception("runas_health.sweep_failed")
            self._stop.wait(self.interval_s)

    def _evaluate(self, computer: str) -> None:
        # Read first, in a transaction that takes no lock: most computers' health is what it
        # was (after a password change every computer's epoch moved, yet nothing it needs
        # did), and a write transaction per computer would queue behind, and hold up, the
        # configuration deliveries and the administrators' changes (SQLite: one writer).
        with self.runtime.unit_of_work(actor=SYSTEM_ACTOR, source=SOURCE, read_only=True) as uow:
            changes = would_change(
                uow.session, computer, now=uow.now, grace=self.grace, catalogs=self.catalogs
            )
        if not changes:
            self.unchanged += 1
            return
        with self.runtime.unit_of_work(actor=SYSTEM_ACTOR, source=SOURCE) as uow:
            evaluate_computer(uow, computer, grace=self.grace, catalogs=self.catalogs)

    def _yield(self, spent: float) -> None:
        """While configurations are being delivered (``yield_to``), one computer per
        ``yield_step_s`` at most, and at most :data:`YIELD_DUTY` of the time (``spent``: how
        long the last computer took): a credential change rolls out to every agent first and
        health follows (a sweep that competed with the roll-out would slow both), yet a
        management group that never stops changing still gets its health swept."""
        if self.yield_to is not None and self.yield_to():
            rest = spent * (1 - YIELD_DUTY) / YIELD_DUTY
            self._stop.wait(max(self.yield_step_s, rest))

    def run_once(self) -> int:
        """One sweep: returns how many computers were evaluated without error."""
        with self.runtime.unit_of_work(actor=SYSTEM_ACTOR, source=SOURCE, read_only=True) as uow:
            computers = computers_to_sweep(uow.session)
            epoch = lookup.epoch(uow.session)
            waiting = awaiting_grace(uow.session)
        started = time.monotonic()
        full = started - self._last_full >= FULL_SWEEP_S
        if full:
            self._last_full = started
        else:
            computers = [c for c in computers if c in waiting or self._evaluated_at.get(c) != epoch]
        done = 0
        spent = 0.0
        for index, computer in enumerate(computers):
            if self._stop.is_set():
                break
            self._yield(spent)
            began = time.monotonic()
            try:
                self._evaluate(computer)
                self._evaluated_at[computer] = epoch
                done += 1
            except Exception:
                _log.exception(
                    "runas_health.evaluate_failed", extra={"fields": {"computer": computer}}
                )
            spent = time.monotonic() - began
            if index >= self.unpaced and self.duty < 1:
                self._stop.wait(spent * (1 - self.duty) / self.duty)
        with self.runtime.unit_of_work(actor=SYSTEM_ACTOR, source=SOURCE) as uow:
            monitoring.prune_reports(uow.session, uow.now)
            if full:
                monitoring.prune_events(uow.session, uow.now, self.event_retention)
        return done


# -- reading -----------------------------------------------------------------------------------


class HealthView(BaseModel):
    account: str
    account_id: int
    computer: str
    state: str
    severity: str | None
    message: str
    since: datetime
    #: when the account was first seen needed here but not distributed (grace period start)
    missing_since: datetime | None
    #: the latest credential check an agent reported: None, "ok", or the failure kind
    last_report: str | None
    last_report_at: datetime | None
    last_report_message: str
    last_report_secret_version: int | None


def health_show(session: Session, computer: str) -> list[HealthView]:
    """The stored Run As health of every account on ``computer``, as of the last evaluation."""
    rows = [
        (row, name)
        for row, name in session.execute(
            select(RunAsHealthRow, AccountRow.name)
            .join(AccountRow, AccountRow.id == RunAsHealthRow.account_id)
            .where(RunAsHealthRow.computer == computer)
            .order_by(AccountRow.name)
        )
    ]
    if not rows:
        lookup.computer(session, computer)  # an unknown computer is a NotFound, not "(none)"
    return [_view(row, name) for row, name in rows]


def _view(row: RunAsHealthRow, name: str) -> HealthView:
    severity = _severity(row.state)
    last = None if row.report_at is None else (row.report_failure or "ok")
    return HealthView(
        account=name,
        account_id=row.account_id,
        computer=row.computer,
        state=row.state,
        severity=severity,
        message=row.message,
        since=row.since,
        missing_since=row.missing_since,
        last_report=last,
        last_report_at=row.report_at,
        last_report_message=row.report_message,
        last_report_secret_version=row.report_secret_version,
    )


def _severity(state: str) -> str | None:
    try:
        value = SEVERITY[HealthState(state)]
    except ValueError:
        return None
    return value.value if value is not None else None


__all__ = [
    "SOURCE",
    "SYSTEM_ACTOR",
    "HealthSweeper",
    "HealthView",
    "alert_key",
    "computers_to_sweep",
    "evaluate_computer",
    "health_show",
    "sweep",
    "would_change",
]
