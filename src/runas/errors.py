"""The one error tree of runas.

    RunAsError                      every error runas raises on purpose
    ├── InvalidInput                bad input from a user or a file (CLI exit 1, HTTP 422)
    │   ├── PackError               a management pack that cannot be imported (file:line)
    │   └── AccountValidationError  fields that do not fit an account type
    ├── NotFound                    a named thing does not exist (HTTP 404)
    ├── Conflict                    the request clashes with current state (HTTP 409)
    │   ├── AlreadyExists
    │   └── InUse                   refused because something still depends on it
    ├── DecryptionError             one opaque error for every failure to decrypt (no oracle)
    ├── KeyringError                the keyring cannot be read or is unusable
    ├── ConfigurationError          settings or data directory are wrong
    ├── Unauthenticated             no valid credentials (HTTP 401)
    ├── Forbidden                   authenticated, but the role does not allow it (HTTP 403)
    │   ├── AgentRemoved            an agent certificate names no current agent
    │   └── AgentNotApproved        an agent that is pending or rejected
    ├── TooManyRequests             rate limited, e.g. repeated failed logins (HTTP 429)
    └── ServerError                 a problem the server reported without details (HTTP 5xx)

Callers catch at the level they need; the CLI and the API each map this tree once
(one line + exit code, RFC 9457 problem+json). Messages never contain a secret.
"""

from __future__ import annotations


class RunAsError(Exception):
    """Base of every error runas raises on purpose. ``str(err)`` is one line for a person."""

    #: short machine-readable kind, used as the problem type in the API
    code = "runas-error"
    #: HTTP status the API maps this error to
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(RunAsError):
    code = "invalid-input"
    status = 422


class PackError(InvalidInput):
    """A management pack problem, located as ``file:line: message`` when the place is known."""

    code = "invalid-pack"

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.source = source
        self.line = line
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(f"{where}{message}")


class AccountValidationError(InvalidInput):
    code = "invalid-account"


class NotFound(RunAsError):
    code = "not-found"
    status = 404


class Conflict(RunAsError):
    code = "conflict"
    status = 409


class AlreadyExists(Conflict):
    code = "already-exists"


class InUse(Conflict):
    code = "in-use"


class DecryptionError(RunAsError):
    """Raised for every decryption failure, whatever the cause, with the same message."""

    code = "decryption-failed"
    status = 500

    def __init__(self, message: str = "secret could not be decrypted") -> None:
        super().__init__(message)


class KeyringError(RunAsError):
    code = "keyring-error"
    status = 500


class ConfigurationError(RunAsError):
    code = "configuration-error"
    status = 500


class Unauthenticated(RunAsError):
    code = "unauthenticated"
    status = 401


class Forbidden(RunAsError):
    code = "forbidden"
    status = 403


class TooManyRequests(RunAsError):
    code = "too-many-requests"
    status = 429


class ServerError(RunAsError):
    code = "server-error"
    status = 500


# -- agents (services/agents.py): the agent matches these codes, the last segment of the
# problem ``type``, and answers by erasing its secrets and enrolling again (docs/agents.md)


class AgentRemoved(Forbidden):
    """The certificate names an agent the management group no longer has (removed, or
    enrolled again since with other keys)."""

    code = "agent-removed"


class AgentNotApproved(Forbidden):
    """The agent exists but is not approved (pending or rejected)."""

    code = "agent-not-approved"


def _all_subclasses(cls: type[RunAsError]) -> list[type[RunAsError]]:
    out: list[type[RunAsError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_for(code: str, message: str) -> RunAsError:
    """Rebuild the error a server reported as problem+json (``code`` is the problem type's
    last segment), so a remote CLI fails exactly like a local one."""
    for cls in _all_subclasses(RunAsError):
        if cls.code == code:
            err = cls.__new__(cls)
            RunAsError.__init__(err, message)
            return err
    return ServerError(message)


__all__ = [
    "AccountValidationError",
    "AgentNotApproved",
    "AgentRemoved",
    "AlreadyExists",
    "ConfigurationError",
    "Conflict",
    "DecryptionError",
    "Forbidden",
    "InUse",
    "InvalidInput",
    "KeyringError",
    "NotFound",
    "PackError",
    "RunAsError",
    "ServerError",
    "TooManyRequests",
    "Unauthenticated",
    "error_for",
]
