"""Finding things by the names people type: accounts by name or id, objects by full name or
id, computers by name. Every miss is a NotFound that says what was looked for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from runas.domain.model import COMPUTER_CLASS
from runas.domain.names import parse_full_name
from runas.errors import NotFound
from runas.storage.tables import (
    AccountRow,
    GroupRow,
    ObjectRow,
    PackRow,
    ProfileRow,
    SettingRow,
    WorkflowRow,
)

EPOCH_KEY = "resolution_epoch"
#: ``session.info`` key under which :func:`bump_epoch` leaves the epoch it wrote, so that the
#: process can learn about its own change as soon as it commits (``Runtime.on_epoch``)
EPOCH_WRITTEN = "runas.epoch_written"


def account(session: Session, ref: str, *, for_update: bool = False) -> AccountRow:
    stmt = select(AccountRow).where(AccountRow.name == ref)
    if for_update:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).one_or_none()
    if row is None and ref.isdecimal():
        row = session.get(AccountRow, int(ref))
    if row is None:
        raise NotFound(f"no Run As account named {ref!r}")
    return row


def profile(session: Session, ref: str) -> ProfileRow:
    row = session.get(ProfileRow, ref)
    if row is None:
        raise NotFound(f"no Run As profile {ref!r}")
    return row


def workflow(session: Session, ref: str) -> WorkflowRow:
    row = session.get(WorkflowRow, ref)
    if row is None:
        raise NotFound(f"no workflow {ref!r}")
    return row


def pack(session: Session, ref: str) -> PackRow:
    row = session.get(PackRow, ref)
    if row is None:
        raise NotFound(f"no management pack {ref!r}")
    return row


def group(session: Session, ref: str) -> GroupRow:
    row = session.get(GroupRow, ref)
    if row is None:
        raise NotFound(f"no group {ref!r}")
    return row


def obj(session: Session, ref: str) -> ObjectRow:
    """An object by numeric id or by full name (``Class:host;key``)."""
    if ref.isdecimal():
        row = session.get(ObjectRow, int(ref))
        if row is None:
            raise NotFound(f"no object with id {ref}")
        return row
    parse_full_name(ref)  # a clear error for something that is not a name at all
    found = session.scalars(select(ObjectRow).where(ObjectRow.full_name == ref)).one_or_none()
    if found is None:
        raise NotFound(f"no object named {ref!r}")
    return found


def computer(session: Session, name: str) -> ObjectRow:
    """The computer object whose name is ``name`` (the computer's own key)."""
    row = session.scalars(
        select(ObjectRow).where(ObjectRow.computer_name == name, ObjectRow.host_id.is_(None))
    ).first()
    if row is None:
        raise NotFound(f"no computer named {name!r} (computers appear through discovery)")
    return row


def known_computers(session: Session, names: set[str]) -> set[str]:
    """Those of ``names`` that are discovered computers."""
    found: set[str] = set()
    ordered = sorted(names)
    for start in range(0, len(ordered), 500):
        found.update(
            session.scalars(
                select(ObjectRow.computer_name).where(
                    ObjectRow.host_id.is_(None),
                    ObjectRow.computer_name.in_(ordered[start : start + 500]),
                )
            )
        )
    return found


def setting(session: Session, key: str, default: Any = None) -> Any:
    row = session.get(SettingRow, key)
    return default if row is None else row.value


def set_setting(session: Session, key: str, value: Any) -> None:
    row = session.get(SettingRow, key)
    if row is None:
        session.add(SettingRow(key=key, value=value))
    else:
        row.value = value


def bump_epoch(session: Session) -> int:
    """Every change that can alter resolution bumps the management group's epoch, so agents
    and other servers can tell their view is stale.

    The row is read ``FOR UPDATE``: two servers changing things at the same time on
    PostgreSQL would otherwise both read epoch N and both write N + 1, and a server that
    cached its view at N + 1 between the two commits would never see the second change."""
    row = session.scalars(
        select(SettingRow)
        .where(SettingRow.key == EPOCH_KEY)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        epoch = 1
        session.add(SettingRow(key=EPOCH_KEY, value=epoch))
    else:
        epoch = int(row.value) + 1
        row.value = epoch
    session.info[EPOCH_WRITTEN] = epoch
    return epoch


def epoch(session: Session) -> int:
    """The management group's resolution epoch as this transaction sees it."""
    return int(setting(session, EPOCH_KEY, 0) or 0)


__all__ = ["COMPUTER_CLASS"]
