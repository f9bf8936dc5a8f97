"""Run As health (domain.md §9): every state, the precedence between them, the edges of the
grace period and of the expiry thresholds, and the alerts that open and close by themselves."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from runas.domain.health import (
    PRECEDENCE,
    SEVERITY,
    AlertAction,
    AuthFailureKind,
    Health,
    HealthInputs,
    HealthKey,
    HealthState,
    ProbeReport,
    Severity,
    alert_transitions,
    evaluate,
    evaluate_all,
    track_missing,
)
from runas.domain.resolution import Outcome
from runas.errors import InvalidInput

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
BASE = HealthInputs(account="sql-monitor", computer="db01.corp.contoso.com")

LOGON_FAILED = ProbeReport(NOW, AuthFailureKind.LOGON_FAILED, "login failed for user 'svc'", 3)
ELEVATION_FAILED = ProbeReport(NOW, AuthFailureKind.ELEVATION_FAILED, "sudo: password required")
SUCCESS = ProbeReport(NOW, None, "", 3)


def state_of(inputs: HealthInputs, now: datetime = NOW, **kw: timedelta) -> HealthState:
    return evaluate(inputs, now, **kw).state


def test_nothing_wrong_is_ok() -> None:
    health = evaluate(BASE, NOW)
    assert health.state is HealthState.OK
    assert health.ok
    assert health.severity is None
    assert health.masked == ()


# -- probe reports ----------------------------------------------------------------------------


def test_logon_failure_names_account_computer_and_reason() -> None:
    health = evaluate(replace(BASE, report=LOGON_FAILED), NOW)
    assert health.state is HealthState.LOGON_FAILED
    assert health.severity is Severity.CRITICAL
    assert "'sql-monitor'" in health.message
    assert "db01.corp.contoso.com" in health.message
    assert "login failed for user 'svc'" in health.message


def test_elevation_failure() -> None:
    health = evaluate(replace(BASE, report=ELEVATION_FAILED), NOW)
    assert health.state is HealthState.ELEVATION_FAILED
    assert "elevation failed" in health.message


def test_success_clears_an_earlier_failure() -> None:
    assert state_of(replace(BASE, report=SUCCESS, secret_version=3)) is HealthState.OK


def test_report_about_an_older_secret_version_is_stale() -> None:
    # Rotating the secret is the fix for a failed logon: the alert must not wait for a probe.
    assert state_of(replace(BASE, report=LOGON_FAILED, secret_version=4)) is HealthState.OK
    assert state_of(replace(BASE, report=LOGON_FAILED, secret_version=3)) is (
        HealthState.LOGON_FAILED
    )
    # A report that does not say which version it used always counts.
    unversioned = replace(LOGON_FAILED, secret_version=None)
    assert state_of(replace(BASE, report=unversioned, secret_version=4)) is (
        HealthState.LOGON_FAILED
    )


# -- resolution: conflict and not distributed ------------------------------------------------


def test_conflict_is_immediate_and_names_the_other_accounts() -> None:
    inputs = replace(
        BASE, outcomes=frozenset({Outcome.CONFLICT}), conflict_with=frozenset({"sql-b", "sql-a"})
    )
    health = evaluate(inputs, NOW)
    assert health.state is HealthState.CONFLICT
    assert "with 'sql-a', 'sql-b'" in health.message


def missing(since: datetime | None) -> HealthInputs:
    return replace(
        BASE,
        outcomes=frozenset({Outcome.NOT_DISTRIBUTED}),
        missing_since=since,
        profiles=frozenset({"SQL.MonitoringAccount"}),
    )


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (timedelta(0), HealthState.OK),
        (timedelta(minutes=4, seconds=59), HealthState.OK),
        (timedelta(minutes=5), HealthState.NOT_DISTRIBUTED),
        (timedelta(hours=3), HealthState.NOT_DISTRIBUTED),
    ],
)
def test_not_distributed_only_after_the_grace_period(
    elapsed: timedelta, expected: HealthState
) -> None:
    assert state_of(missing(NOW - elapsed)) is expected


def test_not_distributed_message_is_scoms_credentials_not_found() -> None:
    health = evaluate(missing(NOW - timedelta(minutes=10)), NOW)
    assert health.severity is Severity.CRITICAL
    assert "credentials not found" in health.message
    assert "'SQL.MonitoringAccount'" in health.message
    assert "distribute it there, or narrow the association" in health.message


def test_grace_period_is_a_parameter() -> None:
    inputs = missing(NOW - timedelta(seconds=30))
    assert state_of(inputs) is HealthState.OK
    assert state_of(inputs, grace=timedelta(seconds=30)) is HealthState.NOT_DISTRIBUTED


def test_missing_first_seen_now_waits_for_the_grace() -> None:
    assert state_of(missing(None)) is HealthState.OK
    assert state_of(missing(None), grace=timedelta(0)) is HealthState.NOT_DISTRIBUTED


def test_track_missing_keeps_the_first_time_and_forgets_when_fixed() -> None:
    first = track_missing(None, True, NOW)
    assert first == NOW
    later = NOW + timedelta(minutes=3)
    assert track_missing(first, True, later) == NOW
    assert track_missing(first, False, later) is None
    # Missing again later starts a new grace period.
    assert track_missing(None, True, later) == later


def test_other_outcomes_are_healthy() -> None:
    inputs = replace(BASE, outcomes=frozenset({Outcome.ACCOUNT, Outcome.ACTION_ACCOUNT}))
    assert state_of(inputs) is HealthState.OK


# -- expiry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (timedelta(days=30), HealthState.OK),
        (timedelta(days=14), HealthState.OK),
        (timedelta(days=14) - timedelta(seconds=1), HealthState.EXPIRING_WARNING),
        (timedelta(days=3), HealthState.EXPIRING_WARNING),
        (timedelta(days=3) - timedelta(seconds=1), HealthState.EXPIRING_CRITICAL),
        (timedelta(seconds=1), HealthState.EXPIRING_CRITICAL),
        (timedelta(0), HealthState.EXPIRED),
        (-timedelta(days=400), HealthState.EXPIRED),
    ],
)
def test_expiry_thresholds(left: timedelta, expected: HealthState) -> None:
    assert state_of(replace(BASE, expires_at=NOW + left)) is expected


def test_expiry_severities_and_messages() -> None:
    warning = evaluate(replace(BASE, expires_at=NOW + timedelta(days=10)), NOW)
    critical = evaluate(replace(BASE, expires_at=NOW + timedelta(days=1)), NOW)
    expired = evaluate(replace(BASE, expires_at=NOW - timedelta(days=1)), NOW)
    assert warning.severity is Severity.WARNING
    assert "expires on 2025-06-11, in less than 14 days" in warning.message
    assert critical.severity is Severity.CRITICAL
    assert "in less than 3 days" in critical.message
    assert expired.severity is Severity.CRITICAL
    assert "expired on 2025-05-31" in expired.message


def test_expiry_in_another_time_zone_compares_as_an_instant() -> None:
    paris = timezone(timedelta(hours=2))
    # 13:00 in Paris is 11:00 UTC, an hour before NOW: expired, though 13:00 > 12:00.
    expires = datetime(2025, 6, 1, 13, 0, tzinfo=paris)
    assert state_of(replace(BASE, expires_at=expires)) is HealthState.EXPIRED


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="now must be a timezone-aware"):
        evaluate(BASE, NOW.replace(tzinfo=None))
    with pytest.raises(InvalidInput, match="expires_at"):
        evaluate(replace(BASE, expires_at=datetime(2025, 7, 1)), NOW)


# -- precedence -------------------------------------------------------------------------------


def all_conditions() -> HealthInputs:
    """Inputs under which every condition except the mutually exclusive ones holds."""
    return replace(
        BASE,
        outcomes=frozenset({Outcome.CONFLICT, Outcome.NOT_DISTRIBUTED}),
        missing_since=NOW - timedelta(hours=1),
        report=LOGON_FAILED,
        secret_version=3,
        expires_at=NOW - timedelta(days=1),
    )


def test_precedence_order_is_the_documented_one() -> None:
    assert PRECEDENCE == (
        HealthState.EXPIRED,
        HealthState.LOGON_FAILED,
        HealthState.ELEVATION_FAILED,
        HealthState.CONFLICT,
        HealthState.NOT_DISTRIBUTED,
        HealthState.EXPIRING_CRITICAL,
        HealthState.EXPIRING_WARNING,
        HealthState.OK,
    )
    assert set(PRECEDENCE) == set(HealthState) == set(SEVERITY)


def test_precedence_peels_off_one_condition_at_a_time() -> None:
    inputs = all_conditions()
    health = evaluate(inputs, NOW)
    assert health.state is HealthState.EXPIRED
    assert health.masked == (
        HealthState.LOGON_FAILED,
        HealthState.CONFLICT,
        HealthState.NOT_DISTRIBUTED,
    )

    inputs = replace(inputs, expires_at=NOW + timedelta(days=1))
    assert state_of(inputs) is HealthState.LOGON_FAILED
    assert evaluate(inputs, NOW).masked[-1] is HealthState.EXPIRING_CRITICAL

    inputs = replace(inputs, report=replace(ELEVATION_FAILED, secret_version=3))
    assert state_of(inputs) is HealthState.ELEVATION_FAILED

    inputs = replace(inputs, report=SUCCESS)
    assert state_of(inputs) is HealthState.CONFLICT

    inputs = replace(inputs, outcomes=frozenset({Outcome.NOT_DISTRIBUTED}))
    assert state_of(inputs) is HealthState.NOT_DISTRIBUTED

    inputs = replace(inputs, outcomes=frozenset())
    assert state_of(inputs) is HealthState.EXPIRING_CRITICAL

    inputs = replace(inputs, expires_at=NOW + timedelta(days=5))
    assert state_of(inputs) is HealthState.EXPIRING_WARNING

    inputs = replace(inputs, expires_at=None)
    assert state_of(inputs) is HealthState.OK


def test_not_distributed_within_grace_does_not_mask_expiring() -> None:
    inputs = replace(missing(NOW), expires_at=NOW + timedelta(days=2))
    assert evaluate(inputs, NOW).masked == ()
    assert state_of(inputs) is HealthState.EXPIRING_CRITICAL


# -- alerts -----------------------------------------------------------------------------------

KEY = HealthKey(7, "db01.corp.contoso.com")
OTHER = HealthKey(8, "web01.corp.contoso.com")


def health(state_inputs: HealthInputs) -> Health:
    return evaluate(state_inputs, NOW)


OK = health(BASE)
FAILED = health(replace(BASE, report=LOGON_FAILED))
EXPIRING = health(replace(BASE, expires_at=NOW + timedelta(days=10)))
EXPIRING_SOON = health(replace(BASE, expires_at=NOW + timedelta(days=2)))


def test_unhealthy_pair_opens_an_alert() -> None:
    for previous in ({}, {KEY: OK}):
        (change,) = alert_transitions(previous, {KEY: FAILED})
        assert change.action is AlertAction.OPEN
        assert change.key == KEY
        assert change.state is HealthState.LOGON_FAILED
        assert change.severity is Severity.CRITICAL
        assert change.message == FAILED.message


def test_recovery_closes_the_alert_with_its_severity() -> None:
    (change,) = alert_transitions({KEY: EXPIRING}, {KEY: OK})
    assert change.action is AlertAction.CLOSE
    assert change.state is HealthState.OK
    assert change.severity is Severity.WARNING
    assert "'sql-monitor' on db01.corp.contoso.com: resolved (was expiring-warning)" in (
        change.message
    )


def test_pair_no_longer_evaluated_closes_its_alert() -> None:
    (change,) = alert_transitions({KEY: FAILED, OTHER: OK}, {})
    assert change.action is AlertAction.CLOSE
    assert change.key == KEY


def test_state_change_updates_the_alert() -> None:
    (change,) = alert_transitions({KEY: EXPIRING}, {KEY: EXPIRING_SOON})
    assert change.action is AlertAction.UPDATE
    assert change.state is HealthState.EXPIRING_CRITICAL
    assert change.severity is Severity.CRITICAL
    assert change.message == EXPIRING_SOON.message


def test_no_change_no_alert() -> None:
    assert alert_transitions({KEY: OK, OTHER: FAILED}, {KEY: OK, OTHER: FAILED}) == []
    assert alert_transitions({}, {KEY: OK}) == []
    # Same state, different wording (a new probe message): not a change.
    reworded = replace(FAILED, message=FAILED.message + " (again)")
    assert alert_transitions({KEY: FAILED}, {KEY: reworded}) == []


def test_alerts_follow_a_whole_life_cycle() -> None:
    now = NOW
    since: datetime | None = None
    previous: dict[HealthKey, Health] = {}
    actions: list[tuple[AlertAction, HealthState]] = []
    # The account is needed but not distributed for 6 minutes, then distributed; then it
    # fails to log on once, and a later success clears it.
    timeline: list[tuple[timedelta, bool, ProbeReport | None]] = [
        (timedelta(0), True, None),
        (timedelta(minutes=4), True, None),
        (timedelta(minutes=6), True, None),
        (timedelta(minutes=7), False, None),
        (timedelta(minutes=8), False, LOGON_FAILED),
        (timedelta(minutes=9), False, SUCCESS),
    ]
    for offset, is_missing, report in timeline:
        now = NOW + offset
        since = track_missing(since, is_missing, now)
        inputs = replace(
            BASE,
            outcomes=frozenset({Outcome.NOT_DISTRIBUTED}) if is_missing else frozenset(),
            missing_since=since,
            report=report,
            secret_version=3,
        )
        current = evaluate_all([(KEY, inputs)], now)
        actions += [(c.action, c.state) for c in alert_transitions(previous, current)]
        previous = current
    assert actions == [
        (AlertAction.OPEN, HealthState.NOT_DISTRIBUTED),
        (AlertAction.CLOSE, HealthState.OK),
        (AlertAction.OPEN, HealthState.LOGON_FAILED),
        (AlertAction.CLOSE, HealthState.OK),
    ]
