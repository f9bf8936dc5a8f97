"""Bearer tokens: personal API tokens, and the session tokens ``runas login`` opens.

A token is returned once, when it is made, and stored only as its SHA-256
(:mod:`runas.services.user_store` checks one on every request). A user manages their own tokens; a
user administrator (or the local CLI, which is trusted) anyone's. Logging in is rate-limited
by :mod:`runas.services.login_limits`, shared by every server on the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from runas.domain.roles import Permission
from runas.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from runas.runtime import UnitOfWork
from runas.services import login_limits, passwords
from runas.services.audit import AuditAction, record
from runas.services.login_limits import DEFAULT_LIMITS, LoginLimits
from runas.services.user_store import (
    TOKEN_REJECTED,
    USER_NAME,
    Principal,
    RoleGrantView,
    UserView,
    find_user,
    hash_token,
    new_token,
    same_user,
    user_view,
)
from runas.storage.tables import ApiTokenRow, UserRow

DEFAULT_SESSION_LIFETIME = timedelta(hours=12)
#: the one message for every failed login: it never says whether the name exists
LOGIN_FAILED = "wrong user name or password"

# -- views ---------------------------------------------------------------------------------


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenView(BaseModel):
    id: int
    user: str
    name: str
    kind: Literal["session", "personal"]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool


class TokenCreated(TokenView):
    #: the token itself, shown this once and never again (only its SHA-256 is stored)
    token: str = Field(repr=False)


class LoginRequest(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    # No length constraint here: pydantic's error would quote the input (the password).
    password: SecretStr


class LoginResult(BaseModel):
    token: str = Field(repr=False)
    expires_at: datetime
    user: UserView


class MeView(BaseModel):
    name: str
    roles: list[RoleGrantView]
    permissions: list[str]


def token_view(row: ApiTokenRow, owner: str) -> TokenView:
    return TokenView(
        id=row.id,
        user=owner,
        name=row.name,
        kind="session" if row.kind == "session" else "personal",
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked_at is not None,
    )


# -- tokens --------------------------------------------------------------------------------


def _owner(
    session: Session, principal: Principal | None, user: str | None, need: Permission
) -> UserRow:
    """Whose tokens: ``user`` if given (another user's needs ``need``), else the caller's."""
    if user is None:
        if principal is None:
            raise InvalidInput("name the user whose tokens these are (--user)")
        row = session.get(UserRow, principal.user_id)
        if row is None:  # removed while the request ran
            raise Unauthenticated(TOKEN_REJECTED)
        return row
    row = find_user(session, user)
    if principal is not None and not same_user(principal, row) and not principal.has(need):
        raise NotFound(f"no user named {user!r}")
    return row


def create_token(
    uow: UnitOfWork,
    req: TokenCreate,
    *,
    principal: Principal | None = None,
    user: str | None = None,
) -> TokenCreated:
    """A personal API token for the caller (or, for a user administrator or the local CLI,
    for ``user``). The token is in the result and nowhere else."""
    s = uow.session
    owner = _owner(s, principal, user, Permission.USERS_WRITE)
    name = req.name.strip()
    if not name:
        raise InvalidInput("a token needs a name")
    clash = s.scalars(
        select(ApiTokenRow.id).where(
            ApiTokenRow.user_id == owner.id,
            ApiTokenRow.kind == "personal",
            ApiTokenRow.name == name,
            ApiTokenRow.revoked_at.is_(None),
        )
    ).first()
    if clash is not None:
        raise AlreadyExists(f"{owner.name!r} already has a token named {name!r} (id {clash})")
    expires = uow.now + timedelta(days=req.expires_in_days) if req.expires_in_days else None
    token = new_token()
    row = ApiTokenRow(
        user_id=owner.id,
        name=name,
        kind="personal",
        token_hash=hash_token(token),
        created_at=uow.now,
        expires_at=expires,
    )
    s.add(row)
    s.flush()
    record(uow, AuditAction.TOKEN_CREATE, owner.name, {"token_id": row.id, "name": name})
    return TokenCreated(**token_view(row, owner.name).model_dump(), token=token)


def list_tokens(
    session: Session,
    *,
    principal: Principal | None = None,
    user: str | None = None,
    now: datetime | None = None,
) -> list[TokenView]:
    """The caller's tokens (or ``user``'s, for a user reader): personal tokens, and session
    tokens still in use (ended sessions are left out)."""
    owner = _owner(session, principal, user, Permission.USERS_READ)
    rows = session.scalars(
        select(ApiTokenRow).where(ApiTokenRow.user_id == owner.id).order_by(ApiTokenRow.id)
    )
    out = []
    for r in rows:
        ended = r.revoked_at is not None or (
            now is not None and r.expires_at is not None and r.expires_at <= now
        )
        if r.kind == "session" and ended:
            continue
        out.append(token_view(r, owner.name))
    return out


def revoke_token(uow: UnitOfWork, token_id: int, *, principal: Principal | None = None) -> int:
    """Revoke one of the caller's tokens (a user administrator or the local CLI: anyone's).
    Revoking a revoked token is not an error."""
    row = uow.session.get(ApiTokenRow, token_id)
    if row is None or not (
        principal is None
        or row.user_id == principal.user_id
        or principal.has(Permission.USERS_WRITE)
    ):
        raise NotFound(f"no token with id {token_id}")
    if row.revoked_at is None:
        row.revoked_at = uow.now
        uow.session.flush()
        record(uow, AuditAction.TOKEN_REVOKE, row.user.name, {"token_id": row.id, "name": row.name})
    return row.id


# -- logging in and authenticating ---------------------------------------------------------


#: the audit target of a failed login for a name that is no user: people type their password
#: into the name field, so a name is recorded only when it is a user's
UNKNOWN_USER = "(unknown user)"


def _fail_login(uow: UnitOfWork, key: str, row: UserRow | None, reason: str) -> Unauthenticated:
    login_limits.record_failure(uow.session, key, uow.source, uow.now)
    target = row.name if row is not None else UNKNOWN_USER
    record(uow, AuditAction.AUTH_LOGIN, target, {"error": reason}, "failure")
    # The failure must count although the request fails: commit it now (the caller's unit of
    # work then rolls back nothing).
    uow.session.commit()
    return Unauthenticated(LOGIN_FAILED)


def login(
    uow: UnitOfWork,
    name: str,
    password: SecretStr,
    *,
    lifetime: timedelta = DEFAULT_SESSION_LIFETIME,
    limits: LoginLimits = DEFAULT_LIMITS,
    hasher: PasswordHasher = passwords.DEFAULT_HASHER,
) -> LoginResult:
    """Check a name and password and open a session: a ``session`` token valid for
    ``lifetime``.

    Every failure — unknown name, wrong password, disabled user — is the same
    :class:`Unauthenticated` with the same message, and takes the time of one argon2
    verification (an unknown name is verified against a dummy hash), so neither the answer nor
    its timing tells which names exist. Too many recent failures for the name or from the
    source (``uow.source``) raise :class:`~runas.services.login_limits.LoginRateLimited`.

    On failure this function COMMITS ``uow``'s transaction before raising, so that the failure
    is counted (and audited) although the request fails: call it in a unit of work of its own.
    Argon2 is slow on purpose: the server runs this in a worker thread.
    """
    s = uow.session
    key = name.strip().lower()
    row = (
        s.scalars(select(UserRow).where(UserRow.name == key)).one_or_none()
        if USER_NAME.fullmatch(key)
        else None
    )
    login_limits.purge(s, uow.now, limits)
    try:
        login_limits.check(s, key, uow.source, uow.now, limits)
    except login_limits.LoginRateLimited:
        target = row.name if row is not None else UNKNOWN_USER
        record(uow, AuditAction.AUTH_LOGIN, target, {"error": "rate-limited"}, "denied")
        s.commit()
        raise
    if row is None:
        passwords.burn_verification(password, hasher=hasher)
        raise _fail_login(uow, key, None, "unknown user")
    try:
        passwords.verify_password(row.password_hash, password, hasher=hasher)
    except passwords.PasswordMismatch:
        raise _fail_login(uow, key, row, "wrong password") from None
    if row.disabled:
        raise _fail_login(uow, key, row, "disabled user")

    login_limits.clear(s, key)
    if passwords.needs_rehash(row.password_hash, hasher=hasher):
        # A plain UPDATE: a new hash of the same password is not a change anyone can conflict
        # with, so it does not bump row_version (two servers may both do it).
        s.execute(
            update(UserRow)
            .where(UserRow.id == row.id)
            .values(password_hash=passwords.hash_password(password, hasher=hasher))
            .execution_options(synchronize_session=False)
        )
    # Ended sessions are of no further use: drop them as the user opens a new one.
    s.execute(
        delete(ApiTokenRow).where(
            ApiTokenRow.user_id == row.id,
            ApiTokenRow.kind == "session",
            (ApiTokenRow.expires_at <= uow.now) | ApiTokenRow.revoked_at.is_not(None),
        )
    )
    token = new_token()
    expires_at = uow.now + lifetime
    s.add(
        ApiTokenRow(
            user_id=row.id,
            name="login",
            kind="session",
            token_hash=hash_token(token),
            created_at=uow.now,
            expires_at=expires_at,
        )
    )
    s.flush()
    record(uow, AuditAction.AUTH_LOGIN, row.name)
    return LoginResult(token=token, expires_at=expires_at, user=user_view(row))


def me(principal: Principal) -> MeView:
    return MeView(
        name=principal.name,
        roles=[
            RoleGrantView(
                role=g.role.value,
                scope_groups=list(g.scope_groups),
                scope_tasks=list(g.scope_tasks),
            )
            for g in principal.roles
        ],
        permissions=sorted(p.value for p in principal.permissions),
    )


__all__ = [
    "DEFAULT_SESSION_LIFETIME",
    "LOGIN_FAILED",
    "LoginRequest",
    "LoginResult",
    "MeView",
    "TokenCreate",
    "TokenCreated",
    "TokenView",
    "create_token",
    "list_tokens",
    "login",
    "me",
    "revoke_token",
    "token_view",
]
