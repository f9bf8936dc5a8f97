"""Tasks (domain.md §7): the rules that decide whether a run may start and what it runs with.

Pure: values in, values (or an error) out. ``services/tasks.py`` reads the database, asks
these questions, and writes the answer.

- :func:`effective_parameters`: a task's parameter values after the operator's overrides
  (only overridable, known parameters may be overridden).
- :func:`task_scope` / :func:`task_in_scope`: which tasks an operator's roles let them run.
- :func:`credentials_refusal`: the Tasks Execution setting of the management group where the
  request is made — disabled, a non-administrator must supply credentials.
- :func:`credential_type`: the document type supplied credentials are handed to a probe as.
- :func:`expiry`, :func:`status_of_result`, :func:`run_status`: a target's life.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from runas.domain.model import ParameterValue, TaskParameter
from runas.domain.roles import ROLE_PERMISSIONS, Permission, Role
from runas.errors import InvalidInput

#: what an agent may report as a task's output (scrubbed text); longer is cut
MAX_OUTPUT_BYTES = 64 * 1024


class TargetStatus(StrEnum):
    PENDING = "pending"  # waiting for its agent
    DELIVERED = "delivered"  # the agent took it; its result is awaited
    SUCCEEDED = "succeeded"  # reported healthy or warning
    FAILED = "failed"  # reported critical or unknown
    TIMED_OUT = "timed-out"  # not picked up, or not reported, in time
    REFUSED = "refused"  # never sent: no agent, no account that runs it


FINAL = frozenset(
    {TargetStatus.SUCCEEDED, TargetStatus.FAILED, TargetStatus.TIMED_OUT, TargetStatus.REFUSED}
)


class CredentialMode(StrEnum):
    PREDEFINED = "predefined"
    SUPPLIED = "supplied"


class _Grant(Protocol):
    @property
    def role(self) -> Role: ...

    @property
    def scope_tasks(self) -> Sequence[str]: ...


# -- parameters --------------------------------------------------------------------------------


def parameter_text(value: ParameterValue | None) -> str:
    """A parameter's value as the probe sees it (placeholders are text)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def effective_parameters(
    task_id: str, parameters: Sequence[TaskParameter], overrides: Mapping[str, str]
) -> dict[str, str]:
    """Every parameter of the task with its value for this run: the override where one is
    given, else the default. Overriding an unknown or non-overridable parameter is refused
    (all of them named, so one correction is enough)."""
    declared = {p.name: p for p in parameters}
    unknown = sorted(n for n in overrides if n not in declared)
    fixed = sorted(n for n in overrides if n in declared and not declared[n].overridable)
    if unknown or fixed:
        parts = []
        if unknown:
            parts.append(f"task {task_id} has no parameter {', '.join(map(repr, unknown))}")
        if fixed:
            parts.append(
                f"parameter {', '.join(map(repr, fixed))} of task {task_id} cannot be overridden"
            )
        overridable = sorted(p.name for p in parameters if p.overridable)
        hint = (
            f" (overridable: {', '.join(overridable)})"
            if overridable
            else " (it has no overridable parameter)"
        )
        raise InvalidInput("; ".join(parts) + hint)
    return {
        p.name: overrides[p.name] if p.name in overrides else parameter_text(p.default)
        for p in parameters
    }


# -- who may run what ------------------------------------------------------------------------


def task_scope(grants: Iterable[_Grant]) -> frozenset[str] | None:
    """The tasks a caller's roles let them run: None when a role that grants running tasks
    lists no task scope (no bound), else the union of the task scopes of those roles."""
    tasks: set[str] = set()
    for grant in grants:
        if Permission.TASKS_RUN in ROLE_PERMISSIONS[grant.role]:
            if not grant.scope_tasks:
                return None
            tasks.update(grant.scope_tasks)
    return frozenset(tasks)


def task_in_scope(task_id: str, scope: frozenset[str] | None) -> bool:
    return scope is None or task_id in scope


def credentials_refusal(
    *, tasks_execution: bool, administrator: bool, supplied: bool, management_group: str
) -> str | None:
    """Why a run must not start as asked (the Tasks Execution setting of the management group
    where the request is made), or None. Supplied credentials are always allowed;
    administrators may always use the predefined account."""
    if tasks_execution or administrator or supplied:
        return None
    return (
        f"Tasks Execution is disabled in management group {management_group}: supply "
        "credentials to run tasks (runas task start … --user USER; the password is prompted "
        "or read from stdin)"
    )


def credential_type(domain: str | None) -> str:
    """The credential document type supplied credentials become: ``windows`` with a domain,
    else ``simple`` (user + password)."""
    return "windows" if domain else "simple"


def display_user(user: str, domain: str | None) -> str:
    return f"{domain}\\{user}" if domain else user


# -- a target's life ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expiry:
    status: TargetStatus
    message: str


def expiry(status: str, deadline: datetime, timeout_seconds: int, now: datetime) -> Expiry | None:
    """What a target becomes because time passed, or None. Pending past its deadline: its
    agent never picked it up. Delivered past deadline + timeout: the agent never reported."""
    if status == TargetStatus.PENDING and now >= deadline:
        return Expiry(
            TargetStatus.TIMED_OUT, "timed out: the agent did not pick the task up in time"
        )
    if status == TargetStatus.DELIVERED and now >= deadline + timedelta(seconds=timeout_seconds):
        return Expiry(TargetStatus.TIMED_OUT, "timed out: the agent did not report")
    return None


def status_of_result(state: str) -> TargetStatus:
    """A reported state's target status: healthy and warning succeeded, the rest failed."""
    return TargetStatus.SUCCEEDED if state in ("healthy", "warning") else TargetStatus.FAILED


def run_status(statuses: Iterable[str]) -> str:
    """A run's status from its targets': ``pending`` (nothing taken yet), ``running`` (some
    taken or done, not all done), ``done`` (every target succeeded), ``failed`` (all done, at
    least one did not succeed)."""
    found = [TargetStatus(s) for s in statuses]
    if not found:
        return "failed"
    if all(s is TargetStatus.PENDING for s in found):
        return "pending"
    if any(s not in FINAL for s in found):
        return "running"
    return "done" if all(s is TargetStatus.SUCCEEDED for s in found) else "failed"


def cut_output(text: str, limit: int = MAX_OUTPUT_BYTES) -> str:
    """``text`` within ``limit`` bytes of UTF-8 (cut on a character boundary, marked)."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = "\n… (output cut at 64 KiB)"
    keep = limit - len(marker.encode("utf-8"))
    return data[:keep].decode("utf-8", errors="ignore") + marker


__all__ = [
    "FINAL",
    "MAX_OUTPUT_BYTES",
    "CredentialMode",
    "Expiry",
    "TargetStatus",
    "credential_type",
    "credentials_refusal",
    "cut_output",
    "display_user",
    "effective_parameters",
    "expiry",
    "parameter_text",
    "run_status",
    "status_of_result",
    "task_in_scope",
    "task_scope",
]
