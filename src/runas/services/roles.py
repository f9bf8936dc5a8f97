"""Roles: which users hold which role, with which scopes (domain.md §8).

A user's rights are the union of their roles' (:func:`runas.domain.roles.permissions_of`).
Scopes (groups of objects, tasks) narrow an operator-type role to part of the management group;
an empty scope means no restriction. The two administrator roles are about the whole group and
are never scoped. The last enabled administrator cannot lose the role.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from runas.domain.roles import ROLE_PERMISSIONS, Role, parse_role
from runas.errors import InvalidInput, NotFound
from runas.runtime import UnitOfWork
from runas.services.audit import AuditAction, record
from runas.services.user_store import UserView, find_user, refuse_last_administrator, user_view
from runas.storage.tables import GroupRow, RoleAssignmentRow, WorkflowRow

#: roles that are not scoped: they are about the management group as a whole
UNSCOPED_ROLES = frozenset({Role.ADMINISTRATOR, Role.READ_ONLY_ADMINISTRATOR})


class RoleAssign(BaseModel):
    role: str
    scope_groups: list[str] = Field(default_factory=list)
    scope_tasks: list[str] = Field(default_factory=list)


class RoleView(BaseModel):
    role: str
    scoped: bool
    permissions: list[str]


def role_list() -> list[RoleView]:
    """The roles, each with every permission it grants (a role includes the ones below it)."""
    return [
        RoleView(
            role=role.value,
            scoped=role not in UNSCOPED_ROLES,
            permissions=sorted(p.value for p in ROLE_PERMISSIONS[role]),
        )
        for role in Role
    ]


def _check_scopes(session: Session, req: RoleAssign, role: Role) -> tuple[list[str], list[str]]:
    groups = list(dict.fromkeys(g.strip() for g in req.scope_groups if g.strip()))
    tasks = list(dict.fromkeys(t.strip() for t in req.scope_tasks if t.strip()))
    if role in UNSCOPED_ROLES and (groups or tasks):
        raise InvalidInput(f"the {role.value} role cannot be scoped: it covers the whole group")
    if groups:
        found = set(session.scalars(select(GroupRow.id).where(GroupRow.id.in_(groups))))
        missing = [g for g in groups if g not in found]
        if missing:
            raise NotFound(f"no group {missing[0]!r} (scope groups must exist)")
    if tasks:
        found = set(
            session.scalars(
                select(WorkflowRow.id).where(WorkflowRow.id.in_(tasks), WorkflowRow.kind == "task")
            )
        )
        missing = [t for t in tasks if t not in found]
        if missing:
            raise NotFound(f"no task {missing[0]!r} (scope tasks must exist)")
    return groups, tasks


def assign_role(uow: UnitOfWork, name: str, req: RoleAssign) -> UserView:
    """Give a user a role, or change the scopes of one they hold (the new scopes replace the
    old). Empty scopes mean no restriction."""
    s = uow.session
    role = parse_role(req.role)
    row = find_user(s, name, for_update=True)
    groups, tasks = _check_scopes(s, req, role)
    existing = next((r for r in row.roles if r.role == role.value), None)
    if existing is None:
        row.roles.append(
            RoleAssignmentRow(
                role=role.value,
                scope_groups=groups,
                scope_tasks=tasks,
                created_at=uow.now,
                created_by=uow.actor,
            )
        )
    else:
        existing.scope_groups = groups
        existing.scope_tasks = tasks
    s.flush()
    record(
        uow,
        AuditAction.ROLE_GRANT,
        row.name,
        {"role": role.value, "groups": groups, "tasks": tasks},
    )
    return user_view(row)


def revoke_role(uow: UnitOfWork, name: str, role_name: str) -> UserView:
    s = uow.session
    role = parse_role(role_name)
    row = find_user(s, name, for_update=True)
    existing = next((r for r in row.roles if r.role == role.value), None)
    if existing is None:
        raise NotFound(f"user {row.name!r} does not hold the {role.value} role")
    if role is Role.ADMINISTRATOR:
        refuse_last_administrator(s, row, f"revoke administrator from {row.name!r}")
    row.roles.remove(existing)
    s.flush()
    record(uow, AuditAction.ROLE_REVOKE, row.name, {"role": role.value})
    return user_view(row)


__all__ = [
    "UNSCOPED_ROLES",
    "RoleAssign",
    "RoleView",
    "assign_role",
    "revoke_role",
    "role_list",
]
