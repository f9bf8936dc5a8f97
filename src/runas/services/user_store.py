"""Local users of the management group, and who a request's token stands for.

Who may call what is decided by the caller (the API checks a route's permission before
anything is looked up); the functions here take ``principal`` only where the answer depends on
*whose* thing it is (one's own password). ``principal=None`` is the local CLI on the server
host, which is trusted: it holds the database and the keyring already. That is also how the
first administrator is made (``runas user add NAME --role administrator``).

Passwords arrive as :class:`~pydantic.SecretStr` and are stored only as argon2id hashes
(:mod:`runas.services.passwords`). Tokens are 256 bits from :mod:`secrets`, prefixed
``runas_`` (so secret scanners can recognise one) and stored only as SHA-256 hex: a token has
enough entropy that a fast hash is enough, and looking one up by its hash gives no timing clue
about any other token. Roles are in :mod:`runas.services.roles`; personal tokens and logging
in are in :mod:`runas.services.tokens`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from argon2 import PasswordHasher
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from runas.domain.roles import ROLE_PERMISSIONS, Permission, Role, parse_role, permissions_of
from runas.errors import AlreadyExists, Forbidden, InUse, InvalidInput, NotFound, Unauthenticated
from runas.runtime import UnitOfWork
from runas.services import login_limits, passwords
from runas.services.audit import AuditAction, record
from runas.services.login_limits import DEFAULT_LIMITS, LoginLimits
from runas.storage.tables import ApiTokenRow, RoleAssignmentRow, UserRow

#: user names: lower case, so that ``Alice`` and ``alice`` are one user (and one rate limit)
USER_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
TOKEN_PREFIX = "runas_"  # noqa: S105 - a marker, not a secret
TOKEN_BYTES = 32
#: ``last_used_at`` is written at most this often, not on every request
LAST_USED_RESOLUTION = timedelta(minutes=1)
#: the one message for every rejected token, whatever the reason
TOKEN_REJECTED = "the token is not valid (unknown, expired or revoked): log in again"  # noqa: S105

# -- views ---------------------------------------------------------------------------------


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    display_name: str = Field(default="", max_length=200)
    password: SecretStr
    roles: list[str] = Field(default_factory=list)


class RoleGrantView(BaseModel):
    role: str
    scope_groups: list[str]
    scope_tasks: list[str]


class UserView(BaseModel):
    name: str
    display_name: str
    disabled: bool
    created_at: datetime
    created_by: str
    roles: list[RoleGrantView]


class PasswordChange(BaseModel):
    password: SecretStr
    #: needed when a user changes their own password through the API: a stolen session token
    #: must not be enough to take the account over for good
    current_password: SecretStr | None = None


class Grant(NamedTuple):
    role: Role
    scope_groups: tuple[str, ...]
    scope_tasks: tuple[str, ...]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request: who, with which roles and rights, by which
    token."""

    user_id: int
    name: str
    roles: tuple[Grant, ...]
    permissions: frozenset[Permission]
    token_id: int | None = None

    def has(self, permission: Permission) -> bool:
        return permission in self.permissions

    def object_scope(self) -> frozenset[str] | None:
        """The groups that bound which objects this caller may see: None when a role that
        grants reading objects is unscoped (no bound), else the union of the scope groups
        of those roles (a user's rights are the union of their roles)."""
        groups: set[str] = set()
        for grant in self.roles:
            if Permission.OBJECTS_READ in ROLE_PERMISSIONS[grant.role]:
                if not grant.scope_groups:
                    return None
                groups.update(grant.scope_groups)
        return frozenset(groups)

    def require(self, permission: Permission) -> None:
        """Raise :class:`Forbidden` unless the caller holds ``permission``. The message names
        the permission, never the thing asked for, so it tells nothing about what exists."""
        if permission not in self.permissions:
            raise Forbidden(f"your roles do not allow this (it needs {permission.value})")


# -- helpers -------------------------------------------------------------------------------


def normalise_name(name: str) -> str:
    clean = name.strip().lower()
    if not USER_NAME.fullmatch(clean):
        raise InvalidInput(
            f"user name {name!r} is not valid: 1-64 characters, letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return clean


def find_user(session: Session, name: str, *, for_update: bool = False) -> UserRow:
    stmt = select(UserRow).where(UserRow.name == name.strip().lower())
    if for_update:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise NotFound(f"no user named {name!r}")
    return row


def _grants(rows: list[RoleAssignmentRow]) -> list[RoleGrantView]:
    order = {role: i for i, role in enumerate(Role)}
    ordered = sorted(rows, key=lambda r: order.get(Role(r.role), len(order)))
    return [
        RoleGrantView(
            role=r.role, scope_groups=list(r.scope_groups), scope_tasks=list(r.scope_tasks)
        )
        for r in ordered
    ]


def user_view(row: UserRow) -> UserView:
    return UserView(
        name=row.name,
        display_name=row.display_name,
        disabled=row.disabled,
        created_at=row.created_at,
        created_by=row.created_by,
        roles=_grants(list(row.roles)),
    )


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def _administrators(session: Session, *, lock: bool) -> set[int]:
    """Ids of the enabled users holding the administrator role. ``lock`` takes row locks on
    their assignments (PostgreSQL), so that two servers removing two administrators at the same
    moment cannot both see "one more is left" and leave none."""
    stmt = (
        select(RoleAssignmentRow.user_id)
        .join(UserRow, UserRow.id == RoleAssignmentRow.user_id)
        .where(RoleAssignmentRow.role == Role.ADMINISTRATOR.value, UserRow.disabled.is_(False))
    )
    if lock:
        stmt = stmt.with_for_update(of=RoleAssignmentRow)
    return set(session.scalars(stmt))


def refuse_last_administrator(session: Session, row: UserRow, doing: str) -> None:
    admins = _administrators(session, lock=True)
    if admins == {row.id}:
        raise InUse(
            f"cannot {doing}: {row.name!r} is the last administrator; make another user an "
            "administrator first (runas role assign USER administrator)"
        )


def same_user(principal: Principal | None, row: UserRow) -> bool:
    return principal is not None and principal.user_id == row.id


def _may_manage(principal: Principal | None, row: UserRow) -> bool:
    """Local mode, the user themself, or a user administrator."""
    return principal is None or same_user(principal, row) or principal.has(Permission.USERS_WRITE)


# -- users ---------------------------------------------------------------------------------


def create_user(
    uow: UnitOfWork, req: UserCreate, *, hasher: PasswordHasher = passwords.DEFAULT_HASHER
) -> UserView:
    s = uow.session
    name = normalise_name(req.name)
    roles = [parse_role(r) for r in dict.fromkeys(req.roles)]
    passwords.check_policy(req.password, names=(name, req.display_name))
    if s.scalars(select(UserRow.id).where(UserRow.name == name)).first() is not None:
        raise AlreadyExists(f"a user named {name!r} already exists")
    row = UserRow(
        name=name,
        display_name=req.display_name.strip(),
        password_hash=passwords.hash_password(req.password, hasher=hasher),
        disabled=False,
        created_at=uow.now,
        created_by=uow.actor,
    )
    row.roles = [
        RoleAssignmentRow(
            role=role.value,
            scope_groups=[],
            scope_tasks=[],
            created_at=uow.now,
            created_by=uow.actor,
        )
        for role in roles
    ]
    s.add(row)
    try:
        s.flush()
    except IntegrityError:
        raise AlreadyExists(f"a user named {name!r} already exists") from None
    record(uow, AuditAction.USER_CREATE, name, {"roles": [r.value for r in roles]})
    return user_view(row)


def list_users(session: Session) -> list[UserView]:
    rows = session.scalars(
        select(UserRow).options(selectinload(UserRow.roles)).order_by(UserRow.name)
    )
    return [user_view(r) for r in rows]


def show_user(session: Session, name: str) -> UserView:
    return user_view(find_user(session, name))


def remove_user(uow: UnitOfWork, name: str) -> str:
    row = find_user(uow.session, name, for_update=True)
    refuse_last_administrator(uow.session, row, f"remove user {row.name!r}")
    removed = row.name
    uow.session.delete(row)
    uow.session.flush()
    record(uow, AuditAction.USER_REMOVE, removed)
    return removed


def set_disabled(uow: UnitOfWork, name: str, disabled: bool) -> UserView:
    """Disable (or enable again) a user: a disabled user cannot log in and their tokens stop
    working at once, without being revoked."""
    row = find_user(uow.session, name, for_update=True)
    if disabled and not row.disabled:
        refuse_last_administrator(uow.session, row, f"disable user {row.name!r}")
    row.disabled = disabled
    uow.session.flush()
    record(uow, AuditAction.USER_DISABLE if disabled else AuditAction.USER_ENABLE, row.name)
    return user_view(row)


def set_password(
    uow: UnitOfWork,
    name: str,
    req: PasswordChange,
    *,
    principal: Principal | None = None,
    hasher: PasswordHasher = passwords.DEFAULT_HASHER,
    limits: LoginLimits = DEFAULT_LIMITS,
) -> UserView:
    """Set a user's password. A user may change their own, giving the current one; a user
    administrator (or the local CLI) may set anyone's. The user's other sessions end (their
    personal tokens stay: revoke those separately if they may be compromised)."""
    s = uow.session
    row = find_user(s, name, for_update=True)
    if not _may_manage(principal, row):
        # Not Forbidden: a caller without users:write learns nothing about other users.
        raise NotFound(f"no user named {name!r}")
    if same_user(principal, row) and not (principal and principal.has(Permission.USERS_WRITE)):
        _check_current_password(uow, row, req.current_password, hasher, limits)
    passwords.check_policy(req.password, names=(row.name, row.display_name))
    row.password_hash = passwords.hash_password(req.password, hasher=hasher)
    keep = principal.token_id if principal is not None else None
    s.execute(
        update(ApiTokenRow)
        .where(
            ApiTokenRow.user_id == row.id,
            ApiTokenRow.kind == "session",
            ApiTokenRow.revoked_at.is_(None),
            ApiTokenRow.id != (keep if keep is not None else -1),
        )
        .values(revoked_at=uow.now)
    )
    s.flush()
    record(uow, AuditAction.USER_PASSWORD, row.name)
    return user_view(row)


def _check_current_password(
    uow: UnitOfWork,
    row: UserRow,
    current: SecretStr | None,
    hasher: PasswordHasher,
    limits: LoginLimits,
) -> None:
    if current is None:
        raise InvalidInput("give your current password to change it")
    login_limits.check(uow.session, row.name, uow.source, uow.now, limits)
    try:
        passwords.verify_password(row.password_hash, current, hasher=hasher)
    except passwords.PasswordMismatch:
        # Counted like a failed login (this is a password guess too), and kept although the
        # request fails. (The server audits the failed request itself.)
        login_limits.record_failure(uow.session, row.name, uow.source, uow.now)
        uow.session.commit()
        raise InvalidInput("the current password is not correct") from None


def authenticate_token(session: Session, token: str, now: datetime) -> Principal:
    """The principal a bearer token stands for, or :class:`Unauthenticated` (one message for
    an unknown, expired or revoked token and for a disabled user).

    Marks the token used, at most once per :data:`LAST_USED_RESOLUTION`, so that a busy
    client does not cause a write on every request. The caller commits ``session``."""
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        raise Unauthenticated(TOKEN_REJECTED)
    found = session.execute(
        select(ApiTokenRow, UserRow)
        .join(UserRow, UserRow.id == ApiTokenRow.user_id)
        .where(ApiTokenRow.token_hash == hash_token(token))
    ).one_or_none()
    if found is None:
        raise Unauthenticated(TOKEN_REJECTED)
    tok, user = found
    if (
        tok.revoked_at is not None
        or (tok.expires_at is not None and tok.expires_at <= now)
        or user.disabled
    ):
        raise Unauthenticated(TOKEN_REJECTED)
    if tok.last_used_at is None or now - tok.last_used_at >= LAST_USED_RESOLUTION:
        # The condition is repeated in SQL so that concurrent requests write once between them.
        session.execute(
            update(ApiTokenRow)
            .where(
                ApiTokenRow.id == tok.id,
                ApiTokenRow.last_used_at.is_(None)
                | (ApiTokenRow.last_used_at < now - LAST_USED_RESOLUTION),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
    grants = tuple(
        Grant(Role(r.role), tuple(r.scope_groups), tuple(r.scope_tasks))
        for r in session.scalars(
            select(RoleAssignmentRow).where(RoleAssignmentRow.user_id == user.id)
        )
    )
    return Principal(
        user_id=user.id,
        name=user.name,
        roles=grants,
        permissions=permissions_of(g.role for g in grants) | {Permission.SELF},
        token_id=tok.id,
    )


__all__ = [
    "LAST_USED_RESOLUTION",
    "TOKEN_PREFIX",
    "Grant",
    "PasswordChange",
    "Principal",
    "RoleGrantView",
    "UserCreate",
    "UserView",
    "authenticate_token",
    "create_user",
    "find_user",
    "hash_token",
    "list_users",
    "new_token",
    "normalise_name",
    "refuse_last_administrator",
    "remove_user",
    "same_user",
    "set_disabled",
    "set_password",
    "show_user",
    "user_view",
]
