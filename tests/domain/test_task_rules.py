"""The pure task rules (domain/tasks.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runas.domain import tasks as rules
from runas.domain.model import TaskParameter
from runas.domain.roles import Role
from runas.errors import InvalidInput
from runas.services.user_store import Grant

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def test_effective_parameters_take_overrides_and_render_defaults_as_text() -> None:
    params = (
        TaskParameter("mode", "graceful", True),
        TaskParameter("count", 3),
        TaskParameter("force", False, True),
        TaskParameter("free"),
    )
    assert rules.effective_parameters("T", params, {"force": "yes"}) == {
        "mode": "graceful",
        "count": "3",
        "force": "yes",
        "free": "",
    }
    with pytest.raises(InvalidInput) as info:
        rules.effective_parameters("T", params, {"count": "1", "nope": "x"})
    assert str(info.value) == (
        "task T has no parameter 'nope'; parameter 'count' of task T cannot be overridden "
        "(overridable: force, mode)"
    )


def test_task_scope_is_the_union_of_the_roles_that_run_tasks() -> None:
    assert rules.task_scope([Grant(Role.OPERATOR, (), ())]) is None
    scoped = [Grant(Role.OPERATOR, (), ("A",)), Grant(Role.READ_ONLY_OPERATOR, (), ())]
    assert rules.task_scope(scoped) == frozenset({"A"})
    assert rules.task_scope([*scoped, Grant(Role.AUTHOR, (), ("B",))]) == frozenset({"A", "B"})
    assert rules.task_scope([*scoped, Grant(Role.ADMINISTRATOR, (), ())]) is None
    assert not rules.task_in_scope("B", frozenset({"A"}))


@pytest.mark.parametrize(
    ("enabled", "admin", "supplied", "refused"),
    [
        (True, False, False, False),
        (False, False, False, True),
        (False, False, True, False),
        (False, True, False, False),
    ],
)
def test_tasks_execution(enabled: bool, admin: bool, supplied: bool, refused: bool) -> None:
    found = rules.credentials_refusal(
        tasks_execution=enabled, administrator=admin, supplied=supplied, management_group="MG2"
    )
    assert (found is not None) is refused
    if found is not None:
        assert found.startswith("Tasks Execution is disabled in management group MG2: supply")


def test_a_targets_life() -> None:
    deadline = T0 + timedelta(minutes=5)
    assert rules.expiry("pending", deadline, 300, deadline - timedelta(seconds=1)) is None
    late = rules.expiry("pending", deadline, 300, deadline)
    assert late is not None
    assert late.status is rules.TargetStatus.TIMED_OUT
    assert rules.expiry("delivered", deadline, 300, deadline + timedelta(seconds=299)) is None
    assert rules.expiry("delivered", deadline, 300, deadline + timedelta(seconds=300))
    assert rules.expiry("succeeded", deadline, 300, deadline + timedelta(days=1)) is None
    assert rules.status_of_result("warning") is rules.TargetStatus.SUCCEEDED
    assert rules.status_of_result("unknown") is rules.TargetStatus.FAILED
    assert rules.run_status(["pending", "pending"]) == "pending"
    assert rules.run_status(["pending", "refused"]) == "running"
    assert rules.run_status(["delivered"]) == "running"
    assert rules.run_status(["succeeded", "succeeded"]) == "done"
    assert rules.run_status(["succeeded", "timed-out"]) == "failed"


def test_credentials_and_output() -> None:
    assert rules.credential_type("CONTOSO") == "windows"
    assert rules.credential_type(None) == "simple"
    assert rules.display_user("u", "D") == "D\\u"
    assert rules.cut_output("é" * 10) == "é" * 10
    cut = rules.cut_output("é" * 40_000)
    assert len(cut.encode()) <= rules.MAX_OUTPUT_BYTES
    assert cut.endswith("(output cut at 64 KiB)")
