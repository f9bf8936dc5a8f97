"""Run As health (domain.md §9): the state of one account on one computer, and its alerts.

Pure: no I/O, no clock. The caller gathers the facts for each (account, computer) pair into a
:class:`HealthInputs` and passes ``now``; :func:`evaluate` returns one :class:`Health`, and
:func:`alert_transitions` compares two rounds of evaluations so that alerts open, change and
close by themselves.

The states and the SCOM behaviour they stand for:

* ``expired`` / ``expiring-critical`` / ``expiring-warning`` — the account's expiry date is past,
  under 3 days or under 14 days away (SCOM events 7001 and 7014 warn of an expiring Run As
  account).
* ``logon-failed`` — the latest probe on the computer could not log on with the account (SCOM
  event 7000, "Run As account could not log on").
* ``elevation-failed`` — it logged on, but the elevation (sudo, su) the workflow needs failed.
* ``conflict`` — resolution left two accounts at the same rank for a workflow on the computer,
  and this is one of them: the workflow does not run (domain.md §5 step 3).
* ``not-distributed`` — a workflow on the computer resolves to the account, but the account is not
  distributed there; raised only once this has lasted a grace period (default 5 minutes, as SCOM's
  "Health Service Credentials Not Found"), because a configuration that was just changed takes a
  moment to reach the agent.
* ``ok`` — none of the above.

Several conditions can hold at once; the reported state is the first that holds in
:data:`PRECEDENCE`, and the others are kept in :attr:`Health.masked`:

    expired > logon-failed > elevation-failed > conflict > not-distributed
            > expiring-critical > expiring-warning > ok

Why this order: an expired account explains a failed logon, and its fix (a new secret) is the
one to make first. A logon failure is observed now and makes every use fail; elevation needs a
successful logon, so it comes after. Conflict and not-distributed stop workflows from running,
but they are configuration, not broken credentials; conflict goes first because resolution
decides it before distribution (domain.md §5), so distributing would not help while it stands.
Expiring states describe a future problem: the workflows still run today.

Which pairs to evaluate is the caller's choice: every computer the account is distributed to,
plus every computer where resolution needs it. A pair that is no longer evaluated closes its
alert (see :func:`alert_transitions`). Messages name the account and the computer, never a
secret (this module never sees one).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Generic, NamedTuple, TypeVar

from runas.domain.resolution import Outcome
from runas.errors import InvalidInput

#: SCOM raises "Credentials Not Found" after 5 minutes.
DEFAULT_GRACE = timedelta(minutes=5)
EXPIRY_WARNING = timedelta(days=14)
EXPIRY_CRITICAL = timedelta(days=3)


class HealthState(StrEnum):
    OK = "ok"
    NOT_DISTRIBUTED = "not-distributed"
    LOGON_FAILED = "logon-failed"
    EXPIRING_WARNING = "expiring-warning"
    EXPIRING_CRITICAL = "expiring-critical"
    EXPIRED = "expired"
    ELEVATION_FAILED = "elevation-failed"
    CONFLICT = "conflict"


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


#: First match wins; see the module docstring for why.
PRECEDENCE: tuple[HealthState, ...] = (
    HealthState.EXPIRED,
    HealthState.LOGON_FAILED,
    HealthState.ELEVATION_FAILED,
    HealthState.CONFLICT,
    HealthState.NOT_DISTRIBUTED,
    HealthState.EXPIRING_CRITICAL,
    HealthState.EXPIRING_WARNING,
    HealthState.OK,
)

#: Every state in which a workflow fails or does not run is critical; only an expiry that is
#: still two weeks away is a warning. ``ok`` raises no alert.
SEVERITY: Mapping[HealthState, Severity | None] = {
    HealthState.OK: None,
    HealthState.EXPIRING_WARNING: Severity.WARNING,
    HealthState.EXPIRING_CRITICAL: Severity.CRITICAL,
    HealthState.EXPIRED: Severity.CRITICAL,
    HealthState.LOGON_FAILED: Severity.CRITICAL,
    HealthState.ELEVATION_FAILED: Severity.CRITICAL,
    HealthState.CONFLICT: Severity.CRITICAL,
    HealthState.NOT_DISTRIBUTED: Severity.CRITICAL,
}


class AuthFailureKind(StrEnum):
    """What a probe can report about a credential it was given (the agent uses the same names)."""

    LOGON_FAILED = "logon-failed"
    ELEVATION_FAILED = "elevation-failed"


@dataclass(frozen=True)
class ProbeReport:
    """The latest credential check of an account on a computer, as the agent reported it.

    ``failure`` is None for a success, which clears an earlier failure. ``message`` is the
    probe's own (already scrubbed) explanation.
    """

    at: datetime
    failure: AuthFailureKind | None = None
    message: str = ""
    #: the secret version the probe used; a report about an older version is stale
    secret_version: int | None = None


class HealthKey(NamedTuple):
    """The usual key of a health state: one account (by id, which survives renames) on one
    computer. :func:`alert_transitions` accepts any hashable key."""

    account_id: int
    computer: str


@dataclass(frozen=True)
class HealthInputs:
    """The facts about one account on one computer."""

    account: str
    computer: str
    #: what resolution says for the workflows on the computer whose winner (or one of whose
    #: conflicting candidates) is this account: only CONFLICT and NOT_DISTRIBUTED matter here
    outcomes: frozenset[Outcome] = frozenset()
    #: when NOT_DISTRIBUTED was first seen for this pair (keep it with :func:`track_missing`);
    #: None while NOT_DISTRIBUTED is reported means "first seen now"
    missing_since: datetime | None = None
    #: the profiles that need the account there, for the not-distributed message
    profiles: frozenset[str] = frozenset()
    #: the accounts this one conflicts with there, for the conflict message
    conflict_with: frozenset[str] = frozenset()
    report: ProbeReport | None = None
    #: the account's current secret version (None: unknown, every report counts)
    secret_version: int | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Health:
    account: str
    computer: str
    state: HealthState
    message: str
    #: other conditions that hold but lose to ``state`` in :data:`PRECEDENCE`
    masked: tuple[HealthState, ...] = field(default=())

    @property
    def severity(self) -> Severity | None:
        return SEVERITY[self.state]

    @property
    def ok(self) -> bool:
        return self.state is HealthState.OK


def _aware(value: datetime, what: str) -> datetime:
    # Naive and aware datetimes do not compare; a naive one here is a caller bug that would
    # otherwise surface as a TypeError far from its cause.
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime")
    return value


def track_missing(since: datetime | None, missing: bool, now: datetime) -> datetime | None:
    """Keep the "first seen missing" time of a pair from one evaluation round to the next:
    it starts when NOT_DISTRIBUTED first appears and is forgotten as soon as it goes away."""
    if not missing:
        return None
    return since if since is not None else _aware(now, "now")


def _report_counts(inputs: HealthInputs) -> ProbeReport | None:
    report = inputs.report
    if report is None:
        return None
    # A new secret version is the fix for a failed logon: a report about the old version must
    # not keep the alert open until the next probe runs.
    if (
        report.secret_version is not None
        and inputs.secret_version is not None
        and report.secret_version != inputs.secret_version
    ):
        return None
    return report


def _conditions(inputs: HealthInputs, now: datetime, grace: timedelta) -> dict[HealthState, str]:
    """Every condition that holds, with the message it would raise."""
    who = f"Run As account {inputs.account!r} on {inputs.computer}"
    found: dict[HealthState, str] = {}

    if inputs.expires_at is not None:
        expires = _aware(inputs.expires_at, "expires_at")
        left = expires - now
        day = expires.date().isoformat()
        if left <= timedelta(0):
            found[HealthState.EXPIRED] = f"{who}: expired on {day}; give it a new secret"
        elif left < EXPIRY_CRITICAL:
            found[HealthState.EXPIRING_CRITICAL] = (
                f"{who}: expires on {day}, in less than {EXPIRY_CRITICAL.days} days"
            )
        elif left < EXPIRY_WARNING:
            found[HealthState.EXPIRING_WARNING] = (
                f"{who}: expires on {day}, in less than {EXPIRY_WARNING.days} days"
            )

    report = _report_counts(inputs)
    if report is not None and report.failure is not None:
        detail = f" ({report.message})" if report.message else ""
        if report.failure is AuthFailureKind.LOGON_FAILED:
            found[HealthState.LOGON_FAILED] = f"{who}: could not log on{detail}"
        else:
            found[HealthState.ELEVATION_FAILED] = f"{who}: logged on, but elevation failed{detail}"

    if Outcome.CONFLICT in inputs.outcomes:
        others = ", ".join(repr(name) for name in sorted(inputs.conflict_with))
        with_ = f" with {others}" if others else ""
        found[HealthState.CONFLICT] = (
            f"{who}: in a Run As conflict{with_}; the workflows concerned do not run "
            "(see `runas explain`)"
        )

    if Outcome.NOT_DISTRIBUTED in inputs.outcomes:
        since = _aware(inputs.missing_since, "missing_since") if inputs.missing_since else now
        if now - since >= grace:
            profiles = ", ".join(repr(p) for p in sorted(inputs.profiles))
            by = f" by profile {profiles}" if profiles else ""
            found[HealthState.NOT_DISTRIBUTED] = (
                f"{who}: credentials not found: the account is needed{by} but not distributed "
                f"to {inputs.computer}; distribute it there, or narrow the association"
            )
    return found


def evaluate(inputs: HealthInputs, now: datetime, grace: timedelta = DEFAULT_GRACE) -> Health:
    """The health of one account on one computer at ``now`` (timezone-aware)."""
    _aware(now, "now")
    found = _conditions(inputs, now, grace)
    holding = [state for state in PRECEDENCE if state in found]
    if not holding:
        return Health(
            inputs.account,
            inputs.computer,
            HealthState.OK,
            f"Run As account {inputs.account!r} on {inputs.computer}: ok",
        )
    top, *rest = holding
    return Health(inputs.account, inputs.computer, top, found[top], tuple(rest))


class AlertAction(StrEnum):
    OPEN = "open"
    UPDATE = "update"
    CLOSE = "close"


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class AlertChange(Generic[K]):
    action: AlertAction
    key: K
    #: the new state (``ok`` when closing)
    state: HealthState
    #: the alert's severity: the new one, or for a close the one of the alert being closed
    severity: Severity
    message: str


def _closed(key: K, before: Health) -> AlertChange[K]:
    severity = before.severity
    assert severity is not None  # only non-ok states have an alert to close
    return AlertChange(
        AlertAction.CLOSE,
        key,
        HealthState.OK,
        severity,
        f"Run As account {before.account!r} on {before.computer}: resolved "
        f"(was {before.state.value})",
    )


def alert_transitions(
    previous: Mapping[K, Health], current: Mapping[K, Health]
) -> list[AlertChange[K]]:
    """The alert changes from one evaluation round to the next.

    A pair that turns unhealthy opens an alert; one that moves to another unhealthy state
    updates it (the state, severity and message change); one that turns ok, or is no longer
    evaluated at all, closes it. A message that changes while the state stays the same is not
    a change: messages are stable within a state so alerts do not churn.
    """
    changes: list[AlertChange[K]] = []
    for key, after in current.items():
        before = previous.get(key)
        if after.ok:
            if before is not None and not before.ok:
                changes.append(_closed(key, before))
            continue
        severity = after.severity
        assert severity is not None
        if before is None or before.ok:
            changes.append(AlertChange(AlertAction.OPEN, key, after.state, severity, after.message))
        elif before.state is not after.state:
            changes.append(
                AlertChange(AlertAction.UPDATE, key, after.state, severity, after.message)
            )
    for key, before in previous.items():
        if key not in current and not before.ok:
            changes.append(_closed(key, before))
    return changes


def evaluate_all(
    pairs: Iterable[tuple[K, HealthInputs]], now: datetime, grace: timedelta = DEFAULT_GRACE
) -> dict[K, Health]:
    """:func:`evaluate` for many pairs, keyed for :func:`alert_transitions`."""
    return {key: evaluate(inputs, now, grace) for key, inputs in pairs}


__all__ = [
    "DEFAULT_GRACE",
    "EXPIRY_CRITICAL",
    "EXPIRY_WARNING",
    "PRECEDENCE",
    "SEVERITY",
    "AlertAction",
    "AlertChange",
    "AuthFailureKind",
    "Health",
    "HealthInputs",
    "HealthKey",
    "HealthState",
    "ProbeReport",
    "Severity",
    "alert_transitions",
    "evaluate",
    "evaluate_all",
    "track_missing",
]
