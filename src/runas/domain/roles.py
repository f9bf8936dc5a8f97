"""Roles and permissions (domain.md §8). Pure: which role may do what.

Each role includes the one above it: Read-only Operator ⊂ Operator ⊂ Advanced Operator ⊂
Author ⊂ Administrator. The Read-only Administrator sees what an administrator sees and
changes nothing. A user's rights are the union of their roles' rights.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from runas.errors import InvalidInput


class Role(StrEnum):
    READ_ONLY_OPERATOR = "read-only-operator"
    OPERATOR = "operator"
    ADVANCED_OPERATOR = "advanced-operator"
    AUTHOR = "author"
    ADMINISTRATOR = "administrator"
    READ_ONLY_ADMINISTRATOR = "read-only-administrator"


class Permission(StrEnum):
    #: objects, groups, packs (content as imported), state, alerts, views
    OBJECTS_READ = "objects:read"
    TASKS_RUN = "tasks:run"
    ALERTS_UPDATE = "alerts:update"
    MAINTENANCE = "maintenance:write"
    OVERRIDES_WRITE = "overrides:write"
    #: import and remove packs
    CONTENT_WRITE = "content:write"
    #: list Run As profiles (not their associations)
    PROFILES_LIST = "profiles:list"
    #: Run As accounts, distribution, associations, explain, computer configuration, keys
    RUNAS_READ = "runas:read"
    RUNAS_WRITE = "runas:write"
    KEYS_ADMIN = "keys:admin"
    DISCOVERY_SUBMIT = "discovery:submit"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    AUDIT_READ = "audit:read"
    SETTINGS_WRITE = "settings:write"
    #: every authenticated user: their own tokens and password
    SELF = "self"


_READ_ONLY_OPERATOR = frozenset({Permission.SELF, Permission.OBJECTS_READ})
_OPERATOR = _READ_ONLY_OPERATOR | {
    Permission.TASKS_RUN,
    Permission.ALERTS_UPDATE,
    Permission.MAINTENANCE,
}
_ADVANCED_OPERATOR = _OPERATOR | {Permission.OVERRIDES_WRITE}
_AUTHOR = _ADVANCED_OPERATOR | {Permission.CONTENT_WRITE, Permission.PROFILES_LIST}
_ADMINISTRATOR = frozenset(Permission)
_READ_ONLY_ADMINISTRATOR = frozenset(
    {
        Permission.SELF,
        Permission.OBJECTS_READ,
        Permission.PROFILES_LIST,
        Permission.RUNAS_READ,
        Permission.USERS_READ,
        Permission.AUDIT_READ,
    }
)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.READ_ONLY_OPERATOR: _READ_ONLY_OPERATOR,
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.ADVANCED_OPERATOR: frozenset(_ADVANCED_OPERATOR),
    Role.AUTHOR: frozenset(_AUTHOR),
    Role.ADMINISTRATOR: _ADMINISTRATOR,
    Role.READ_ONLY_ADMINISTRATOR: _READ_ONLY_ADMINISTRATOR,
}


def permissions_of(roles: Iterable[Role]) -> frozenset[Permission]:
    """The union of the roles' permissions."""
    out: set[Permission] = set()
    for role in roles:
        out |= ROLE_PERMISSIONS[role]
    return frozenset(out)


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise InvalidInput(f"unknown role {value!r} (roles: {known})") from None
