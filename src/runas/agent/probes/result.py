"""What a probe run says: a state, a message, performance data, events, and what it learnt
about the credential it was given.

Every probe (``command`` and the in-process ones) returns a :class:`ProbeResult`. A probe never
raises for anything its peer does: a refused logon is an :class:`AuthFailure` (typed, so Run As
health can act on it, domain.md §9), an unreachable peer is state ``unknown`` with a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from runas.domain.health import AuthFailureKind, ProbeReport


class ProbeState(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


#: exit code → state without a property bag (Nagios plugin convention); anything else: unknown
EXIT_CODE_STATES: Mapping[int, ProbeState] = {
    0: ProbeState.HEALTHY,
    1: ProbeState.WARNING,
    2: ProbeState.CRITICAL,
}


class EventSeverity(StrEnum):
    INFORMATION = "information"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class ProbeEvent:
    severity: EventSeverity
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity.value, "message": self.message}


@dataclass(frozen=True)
class AuthFailure:
    """The program could not log on with the credential, or could not elevate."""

    kind: AuthFailureKind
    message: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "message": self.message}


@dataclass(frozen=True)
class ProbeResult:
    state: ProbeState
    message: str
    #: a program's exit code; None when it was killed for the timeout, never started, or the
    #: probe talks to its peer itself (sql, http, ssh, ldap, snmp)
    exit_code: int | None
    perf: Mapping[str, float] = field(default_factory=dict)
    events: tuple[ProbeEvent, ...] = ()
    auth_failure: AuthFailure | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    #: stdout or stderr went over the output limit and was cut
    truncated: bool = False
    stdout: str = ""
    stderr: str = ""
    #: how many secrets were replaced in this result (audit the count, never the values)
    scrubbed: int = 0
    #: objects a discovery workflow found, in the discovery payload's object shape
    #: (``{"class": ..., "key": {...}, "properties": {...}, "host": ...}``); None: not a discovery
    discovery: tuple[Mapping[str, Any], ...] | None = None
    #: an SSH host key the peer offered that the management group does not trust (yet):
    #: ``{"host": ..., "port": ..., "key": "<type> <base64>"}`` — public data, recorded by the
    #: server as pending until an administrator approves it (docs/probes/ssh.md)
    host_key: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "message": self.message,
            "exit_code": self.exit_code,
            "perf": dict(self.perf),
            "events": [e.to_dict() for e in self.events],
            "auth_failure": self.auth_failure.to_dict() if self.auth_failure else None,
            "duration_s": self.duration_s,
            "timed_out": self.timed_out,
            "truncated": self.truncated,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "scrubbed": self.scrubbed,
            "discovery": None if self.discovery is None else [dict(o) for o in self.discovery],
            "host_key": None if self.host_key is None else dict(self.host_key),
        }

    def credential_report(self, at: datetime, secret_version: int | None) -> ProbeReport | None:
        """What this run says about the credential it was given, for Run As health.

        An ``auth_failure`` is a failure report. A run that classified its target (healthy,
        warning or critical) without one is a success: the program's contract is to report
        failing credentials in its bag. An unknown or timed-out run proves nothing (None).
        Call it only for runs that were given a credential.
        """
        if self.auth_failure is not None:
            return ProbeReport(
                at, self.auth_failure.kind, self.auth_failure.message, secret_version
            )
        if self.timed_out or self.state is ProbeState.UNKNOWN:
            return None
        return ProbeReport(at, None, "", secret_version)


def unknown(message: str, *, duration_s: float = 0.0) -> ProbeResult:
    """A run that could not classify its target (nothing proved about the credential)."""
    return ProbeResult(ProbeState.UNKNOWN, message, None, duration_s=duration_s)


def logon_failed(message: str, *, duration_s: float = 0.0) -> ProbeResult:
    """The peer refused the credential: state critical, typed for Run As health."""
    return ProbeResult(
        ProbeState.CRITICAL,
        message,
        None,
        auth_failure=AuthFailure(AuthFailureKind.LOGON_FAILED, message),
        duration_s=duration_s,
    )


def elevation_failed(message: str, *, duration_s: float = 0.0) -> ProbeResult:
    """Logged on, but sudo or su refused to elevate: its own Run As health state."""
    return ProbeResult(
        ProbeState.CRITICAL,
        message,
        None,
        auth_failure=AuthFailure(AuthFailureKind.ELEVATION_FAILED, message),
        duration_s=duration_s,
    )


__all__ = [
    "EXIT_CODE_STATES",
    "AuthFailure",
    "EventSeverity",
    "ProbeEvent",
    "ProbeResult",
    "ProbeState",
    "elevation_failed",
    "logon_failed",
    "unknown",
]
