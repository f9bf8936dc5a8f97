"""Reading alerts. Alerts are opened and closed by the management group itself (Run As health:
:mod:`runas.services.run_as_health`; monitors later), never by hand.

Who sees which alert (the API applies it; local mode sees everything):

* Run As health alerts (source ``runas-health``) name Run As accounts: they are shown only to
  callers who may read Run As configuration (``runas:read``);
* other alerts are about objects: a caller with a scoped role sees those whose object (or,
  without an object, whose computer object) is inside the scope.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from runas.errors import InvalidInput
from runas.services import convert
from runas.services import objects as object_service
from runas.services.run_as_health import SOURCE as RUNAS_HEALTH
from runas.storage.tables import AccountRow, AlertRow, ObjectRow

MAX_LIST = 10_000


class AlertView(BaseModel):
    id: int
    source: str
    computer: str
    account: str | None
    object: str | None
    state: str
    severity: str
    message: str
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None


def list_alerts(
    session: Session,
    *,
    open_only: bool = True,
    computer: str | None = None,
    source: str | None = None,
    limit: int = 1000,
    include_runas: bool = True,
    scope: frozenset[str] | None = None,
) -> list[AlertView]:
    """Alerts, newest first: only open ones unless ``open_only`` is False, at most ``limit``.
    ``include_runas`` False leaves out Run As health alerts; a ``scope`` (a caller's role
    scope) leaves out alerts about objects outside it."""
    if limit < 1 or limit > MAX_LIST:
        raise InvalidInput(f"--limit must be between 1 and {MAX_LIST}")
    stmt = select(AlertRow).order_by(AlertRow.opened_at.desc(), AlertRow.id.desc())
    if open_only:
        stmt = stmt.where(AlertRow.closed_at.is_(None))
    if computer is not None:
        stmt = stmt.where(AlertRow.computer == computer)
    if source is not None:
        stmt = stmt.where(AlertRow.source == source)
    if not include_runas:
        stmt = stmt.where(AlertRow.source != RUNAS_HEALTH)
    visible = object_service.visibility(session, scope)
    if visible is None:
        rows = list(session.scalars(stmt.limit(limit)))
    else:
        rows = [r for r in session.scalars(stmt) if _visible(session, r, visible)][:limit]
    ids = sorted({r.account_id for r in rows if r.account_id is not None})
    names = {
        i: n
        for i, n in session.execute(
            select(AccountRow.id, AccountRow.name).where(AccountRow.id.in_(ids))
        )
    }
    return [
        AlertView(
            id=r.id,
            source=r.source,
            computer=r.computer,
            account=None if r.account_id is None else names.get(r.account_id),
            object=r.object_name,
            state=r.state,
            severity=r.severity,
            message=r.message,
            opened_at=r.opened_at,
            updated_at=r.updated_at,
            closed_at=r.closed_at,
        )
        for r in rows
    ]


def _visible(session: Session, alert: AlertRow, test: object_service.ScopeTest) -> bool:
    if alert.object_name is not None:
        stmt = select(ObjectRow).where(ObjectRow.full_name == alert.object_name)
    else:
        stmt = select(ObjectRow).where(
            ObjectRow.computer_name == alert.computer, ObjectRow.host_id.is_(None)
        )
    row = session.scalars(stmt).first()
    return row is not None and test(convert.object_record(row))


__all__ = ["MAX_LIST", "AlertView", "list_alerts"]
