"""Users, roles, tokens and logging in: the one import for the server, the CLI and tests.

The work is done in small modules, each about one thing:

    user_store    users (create, list, show, remove, disable, password) and the principal a
                  bearer token stands for (:func:`authenticate_token`)
    roles         role assignments and their scopes; the last administrator stays
    tokens        personal API tokens, ``login`` (session tokens), ``me``
    passwords     argon2id hashing and the password policy
    login_limits  failed-login rate limiting shared by every server on the database

``principal=None`` (the default everywhere) is the local CLI on the server host, which is
trusted: it holds the database and the keyring already. The server always passes the
authenticated principal where the answer depends on whose thing it is.
"""

from __future__ import annotations

from runas.services.login_limits import LoginLimits, LoginRateLimited
from runas.services.roles import (
    UNSCOPED_ROLES,
    RoleAssign,
    RoleView,
    assign_role,
    revoke_role,
    role_list,
)
from runas.services.tokens import (
    DEFAULT_SESSION_LIFETIME,
    LoginRequest,
    LoginResult,
    MeView,
    TokenCreate,
    TokenCreated,
    TokenView,
    create_token,
    list_tokens,
    login,
    me,
    revoke_token,
)
from runas.services.user_store import (
    Grant,
    PasswordChange,
    Principal,
    RoleGrantView,
    UserCreate,
    UserView,
    authenticate_token,
    create_user,
    list_users,
    remove_user,
    set_disabled,
    set_password,
    show_user,
)

__all__ = [
    "DEFAULT_SESSION_LIFETIME",
    "UNSCOPED_ROLES",
    "Grant",
    "LoginLimits",
    "LoginRateLimited",
    "LoginRequest",
    "LoginResult",
    "MeView",
    "PasswordChange",
    "Principal",
    "RoleAssign",
    "RoleGrantView",
    "RoleView",
    "TokenCreate",
    "TokenCreated",
    "TokenView",
    "UserCreate",
    "UserView",
    "assign_role",
    "authenticate_token",
    "create_token",
    "create_user",
    "list_tokens",
    "list_users",
    "login",
    "me",
    "remove_user",
    "revoke_role",
    "revoke_token",
    "role_list",
    "set_disabled",
    "set_password",
    "show_user",
]
