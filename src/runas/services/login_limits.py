"""Login rate limiting, shared by every management server on the database.

Failed logins are rows in ``login_failures`` (a SHA-256 of the name, the source address, the
time), so a guesser
gains nothing by spreading attempts over several servers. Within :attr:`LoginLimits.window`
(5 minutes), 5 failures for one name or 20 from one source make further attempts fail with
:class:`LoginRateLimited` (HTTP 429) until the oldest counted failure leaves the window; the
refused attempts themselves are not counted, so waiting always helps. A successful login
clears its name's failures. Rows older than the window are deleted as logins happen.

Two servers checking at the same instant can each let one more attempt through than the
limit: the limit bounds guessing to a handful per window, it is not a counter that must be
exact.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from runas.errors import TooManyRequests
from runas.storage.tables import LoginFailureRow

SOURCE_LENGTH = 128


@dataclass(frozen=True)
class LoginLimits:
    window: timedelta = timedelta(minutes=5)
    per_name: int = 5
    per_source: int = 20


DEFAULT_LIMITS = LoginLimits()


class LoginRateLimited(TooManyRequests):
    """Too many failed logins; ``retry_after`` is the number of seconds to wait (the API sends
    it as ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _key(name: str) -> str:
    # Only a hash of the name is kept: people type their password into the name field, and a
    # password must not sit in the database even for the five minutes of the window.
    return hashlib.sha256(name.strip().lower().encode("utf-8")).hexdigest()


def purge(session: Session, now: datetime, limits: LoginLimits = DEFAULT_LIMITS) -> None:
    session.execute(delete(LoginFailureRow).where(LoginFailureRow.at <= now - limits.window))


def _retry_after(
    session: Session,
    column: Literal["name", "source"],
    value: str,
    limit: int,
    now: datetime,
    limits: LoginLimits,
) -> int | None:
    """Seconds until fewer than ``limit`` failures remain in the window, or None if they
    already are fewer."""
    since = now - limits.window
    where = (LoginFailureRow.name if column == "name" else LoginFailureRow.source) == value
    count = session.scalar(
        select(func.count()).select_from(LoginFailureRow).where(where, LoginFailureRow.at > since)
    )
    if not count or count < limit:
        return None
    # The failure whose expiry brings the count below the limit: the limit-th newest.
    pivot = session.scalars(
        select(LoginFailureRow.at)
        .where(where, LoginFailureRow.at > since)
        .order_by(LoginFailureRow.at.desc())
        .offset(limit - 1)
        .limit(1)
    ).first()
    if pivot is None:  # pragma: no cover - the count said there were enough rows
        return 1
    return max(1, math.ceil((pivot + limits.window - now).total_seconds()))


def check(
    session: Session,
    name: str,
    source: str,
    now: datetime,
    limits: LoginLimits = DEFAULT_LIMITS,
) -> None:
    """Raise :class:`LoginRateLimited` if this name or this source has failed too often."""
    wait = _retry_after(session, "name", _key(name), limits.per_name, now, limits)
    if wait is None and source:
        wait = _retry_after(
            session, "source", source[:SOURCE_LENGTH], limits.per_source, now, limits
        )
    if wait is not None:
        raise LoginRateLimited(
            f"too many failed logins: try again in {wait} seconds", retry_after=wait
        )


def record_failure(session: Session, name: str, source: str, now: datetime) -> None:
    session.add(LoginFailureRow(name=_key(name), source=source[:SOURCE_LENGTH], at=now))
    session.flush()


def clear(session: Session, name: str) -> None:
    session.execute(delete(LoginFailureRow).where(LoginFailureRow.name == _key(name)))


__all__ = [
    "DEFAULT_LIMITS",
    "LoginLimits",
    "LoginRateLimited",
    "check",
    "clear",
    "purge",
    "record_failure",
]
