"""Users, roles, tokens and logging in, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr
from sqlalchemy import func, select

from runas.domain.roles import Permission
from runas.errors import (
    AlreadyExists,
    InUse,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from runas.runtime import UnitOfWork
from runas.services import users
from runas.services.users import (
    LoginRateLimited,
    PasswordChange,
    Principal,
    RoleAssign,
    TokenCreate,
    UserCreate,
)
from runas.storage.database import Database
from runas.storage.tables import ApiTokenRow, LoginFailureRow, UserRow
from support.db import every_row

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
#: cheap argon2id parameters, so that the many logins below stay fast
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
GOOD = "correct horse battery staple"
HERE = "192.0.2.10"


def _no_keyring() -> Any:
    raise AssertionError("users never need the keyring")


@contextmanager
def unit(
    db: Database, *, now: datetime = NOW, source: str = HERE, actor: str = "test:admin"
) -> Iterator[UnitOfWork]:
    with db.session() as session:
        yield UnitOfWork(
            session=session,
            actor=actor,
            now=now,
            source=source,
            _keyring=_no_keyring,
            _keyring_source=_no_keyring,
        )


def add_user(db: Database, name: str, *roles: str, password: str = GOOD) -> None:
    with unit(db) as uow:
        users.create_user(
            uow,
            UserCreate(name=name, password=SecretStr(password), roles=list(roles)),
            hasher=FAST,
        )


def login(
    db: Database,
    name: str,
    password: str = GOOD,
    *,
    now: datetime = NOW,
    source: str = HERE,
    hasher: PasswordHasher = FAST,
    lifetime: timedelta = users.DEFAULT_SESSION_LIFETIME,
) -> users.LoginResult:
    with unit(db, now=now, source=source) as uow:
        return users.login(uow, name, SecretStr(password), hasher=hasher, lifetime=lifetime)


def authenticate(db: Database, token: str, now: datetime = NOW) -> Principal:
    with db.session() as session:
        return users.authenticate_token(session, token, now)


def personal_token(db: Database, user: str, days: int | None = None) -> users.TokenCreated:
    with unit(db) as uow:
        return users.create_token(
            uow, TokenCreate(name=f"t{NOW.timestamp()}-{days}", expires_in_days=days), user=user
        )


def failures(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(LoginFailureRow)) or 0


# -- passwords -----------------------------------------------------------------------------


def test_password_is_stored_as_an_argon2id_hash(database: Database, db_url: str) -> None:
    with unit(database) as uow:
        users.create_user(uow, UserCreate(name="alice", password=SecretStr(GOOD)))
    with database.session() as session:
        stored = session.scalars(select(UserRow.password_hash)).one()
    # RFC 9106 second recommended option: 64 MiB, 3 passes, 4 lanes.
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert GOOD not in repr(every_row(db_url))
    assert login(database, "alice", hasher=PasswordHasher()).user.name == "alice"


def test_login_upgrades_a_hash_made_with_older_parameters(database: Database) -> None:
    add_user(database, "alice")  # FAST parameters
    login(database, "alice", hasher=PasswordHasher())
    with database.session() as session:
        stored = session.scalars(select(UserRow.password_hash)).one()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert login(database, "alice", hasher=PasswordHasher()).token


@pytest.mark.parametrize(
    ("password", "complaint"),
    [
        ("short-one", "too short: use at least 12 characters"),
        ("x" * 20, "one character repeated"),
        ("alice-is-great-2025", "cannot contain the user's name"),
        ("Alice Liddell rules!", "cannot contain the user's name"),
        (" " * 14, "only spaces"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason_and_without_the_password(
    database: Database, password: str, complaint: str
) -> None:
    with unit(database) as uow, pytest.raises(InvalidInput) as refused:
        users.create_user(
            uow,
            UserCreate(name="alice", display_name="Alice Liddell", password=SecretStr(password)),
            hasher=FAST,
        )
    assert complaint in str(refused.value)
    assert password not in str(refused.value)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(UserRow)) == 0


def test_user_names_are_checked_and_case_insensitive(database: Database) -> None:
    add_user(database, "Alice")
    with unit(database) as uow, pytest.raises(AlreadyExists):
        users.create_user(uow, UserCreate(name="ALICE", password=SecretStr(GOOD)), hasher=FAST)
    with unit(database) as uow, pytest.raises(InvalidInput, match="not valid"):
        users.create_user(uow, UserCreate(name="a b", password=SecretStr(GOOD)), hasher=FAST)
    assert login(database, "ALICE").user.name == "alice"


# -- login and tokens ----------------------------------------------------------------------


def test_login_opens_a_session_that_authenticates(database: Database) -> None:
    add_user(database, "alice", "operator")
    result = login(database, "alice")
    assert result.expires_at == NOW + timedelta(hours=12)
    assert result.token.startswith("runas_")
    assert result.token not in repr(result)
    who = authenticate(database, result.token)
    assert who.name == "alice"
    assert who.has(Permission.TASKS_RUN)
    assert not who.has(Permission.RUNAS_READ)
    with database.session() as session:
        kinds = session.scalars(select(ApiTokenRow.kind)).all()
    assert kinds == ["session"]


def test_tokens_are_stored_only_as_sha256(database: Database, db_url: str) -> None:
    add_user(database, "alice", "administrator")
    session_token = login(database, "alice").token
    made = personal_token(database, "alice")
    assert made.token not in repr(made)
    dump = repr(every_row(db_url))
    for token in (session_token, made.token):
        assert token not in dump
        assert token.removeprefix("runas_") not in dump
        assert hashlib.sha256(token.encode()).hexdigest() in dump
    assert authenticate(database, made.token).name == "alice"


def test_session_and_personal_tokens_expire(database: Database) -> None:
    add_user(database, "alice")
    session_token = login(database, "alice", lifetime=timedelta(hours=1)).token
    assert authenticate(database, session_token, NOW + timedelta(minutes=59)).name == "alice"
    with pytest.raises(Unauthenticated):
        authenticate(database, session_token, NOW + timedelta(hours=1))

    made = personal_token(database, "alice", days=7)
    assert made.expires_at == NOW + timedelta(days=7)
    authenticate(database, made.token, NOW + timedelta(days=6))
    with pytest.raises(Unauthenticated):
        authenticate(database, made.token, NOW + timedelta(days=7, seconds=1))
    forever = personal_token(database, "alice")
    assert authenticate(database, forever.token, NOW + timedelta(days=3650)).name == "alice"


def test_revoked_tokens_unknown_tokens_and_disabled_users_are_rejected_alike(
    database: Database,
) -> None:
    add_user(database, "alice", "administrator")
    add_user(database, "bob")
    alice = personal_token(database, "alice")
    bob = personal_token(database, "bob")
    with unit(database) as uow:
        users.revoke_token(uow, alice.id)
    with unit(database) as uow:
        users.set_disabled(uow, "bob", True)
    messages = set()
    for token in (alice.token, bob.token, "runas_" + "A" * 43, "not-a-token", ""):
        with pytest.raises(Unauthenticated) as rejected:
            authenticate(database, token)
        messages.add(str(rejected.value))
    assert len(messages) == 1
    with pytest.raises(Unauthenticated):
        login(database, "bob")  # a disabled user cannot log in either
    with unit(database) as uow:
        users.set_disabled(uow, "bob", False)
    assert authenticate(database, bob.token).name == "bob"


def test_last_used_is_written_at_most_once_a_minute(database: Database) -> None:
    add_user(database, "alice")
    made = personal_token(database, "alice")

    def last_used() -> datetime | None:
        with database.session() as session:
            return session.scalars(
                select(ApiTokenRow.last_used_at).where(ApiTokenRow.id == made.id)
            ).one()

    assert last_used() is None
    authenticate(database, made.token, NOW)
    assert last_used() == NOW
    authenticate(database, made.token, NOW + timedelta(seconds=59))
    assert last_used() == NOW
    authenticate(database, made.token, NOW + timedelta(seconds=61))
    assert last_used() == NOW + timedelta(seconds=61)


def test_a_user_revokes_only_their_own_tokens_an_administrator_any(database: Database) -> None:
    add_user(database, "alice", "administrator")
    add_user(database, "bob", "operator")
    alice_token = personal_token(database, "alice")
    bob = authenticate(database, login(database, "bob").token)
    alice = authenticate(database, login(database, "alice").token)
    with unit(database) as uow, pytest.raises(NotFound, match=f"no token with id {alice_token.id}"):
        users.revoke_token(uow, alice_token.id, principal=bob)
    with unit(database) as uow, pytest.raises(NotFound, match="no user named 'alice'"):
        users.list_tokens(uow.session, principal=bob, user="alice")
    bob_token = personal_token(database, "bob")
    with unit(database) as uow:
        assert users.revoke_token(uow, bob_token.id, principal=alice) == bob_token.id
    with unit(database) as uow:
        listed = users.list_tokens(uow.session, principal=bob, now=NOW)
    assert [(t.name, t.revoked) for t in listed if t.kind == "personal"] == [(bob_token.name, True)]


def test_personal_token_names_are_unique_per_user(database: Database) -> None:
    add_user(database, "alice")
    with unit(database) as uow:
        users.create_token(uow, TokenCreate(name="ci"), user="alice")
    with unit(database) as uow, pytest.raises(AlreadyExists, match="already has a token"):
        users.create_token(uow, TokenCreate(name="ci"), user="alice")
    with unit(database) as uow, pytest.raises(InvalidInput, match="--user"):
        users.create_token(uow, TokenCreate(name="x"))  # local mode must say whose


# -- failed logins -------------------------------------------------------------------------


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verifications += 1
        return super().verify(hash, password)


def test_unknown_user_and_wrong_password_fail_alike(database: Database) -> None:
    add_user(database, "alice")
    outcomes = []
    for name, password in (("alice", "wrong password!"), ("nobody", GOOD)):
        hasher = CountingHasher()
        with pytest.raises(Unauthenticated) as failed:
            login(database, name, password, hasher=hasher)
        # An unknown name costs one argon2 verification too, so timing tells nothing.
        outcomes.append((type(failed.value), str(failed.value), hasher.verifications))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1] == "wrong user name or password"


def test_five_failures_for_a_name_lock_it_for_the_window(database: Database) -> None:
    add_user(database, "alice")
    for i in range(5):
        with pytest.raises(Unauthenticated):
            login(database, "alice", "wrong password!", now=NOW + timedelta(seconds=i))
    assert failures(database) == 5  # kept although each request failed
    with pytest.raises(TooManyRequests) as limited:
        login(database, "alice", now=NOW + timedelta(seconds=10))  # even the right password
    assert isinstance(limited.value, LoginRateLimited)
    assert limited.value.retry_after == 290  # until the oldest failure leaves the window
    assert "try again in 290 seconds" in str(limited.value)
    with pytest.raises(TooManyRequests):  # the name is locked whatever the source
        login(database, "alice", now=NOW + timedelta(seconds=11), source="198.51.100.7")
    assert failures(database) == 5  # refused attempts are not counted: waiting always helps
    # The window slides: once the oldest failure is 5 minutes old, one attempt is allowed.
    assert login(database, "alice", now=NOW + timedelta(minutes=5, seconds=1)).token
    assert failures(database) == 0


def test_a_successful_login_clears_the_names_failures(database: Database) -> None:
    add_user(database, "alice")
    for _ in range(4):
        with pytest.raises(Unauthenticated):
            login(database, "alice", "wrong password!")
    login(database, "alice")
    for _ in range(4):
        with pytest.raises(Unauthenticated):
            login(database, "alice", "wrong password!")
    assert login(database, "alice").token


def test_twenty_failures_from_one_source_lock_that_source(database: Database) -> None:
    add_user(database, "alice")
    for i in range(20):
        with pytest.raises(Unauthenticated):
            login(database, f"guess{i}", "wrong password!")
    with pytest.raises(TooManyRequests):
        login(database, "alice")
    assert login(database, "alice", source="198.51.100.7").token


def test_failures_older_than_the_window_are_purged(database: Database) -> None:
    add_user(database, "alice")
    for i in range(3):
        with pytest.raises(Unauthenticated):
            login(database, f"guess{i}", "wrong password!")
    assert failures(database) == 3
    with pytest.raises(Unauthenticated):
        login(database, "other", "wrong password!", now=NOW + timedelta(minutes=6))
    assert failures(database) == 1


# -- roles ---------------------------------------------------------------------------------


def test_rights_are_the_union_of_the_roles(database: Database) -> None:
    add_user(database, "carol", "author", "read-only-administrator")
    who = authenticate(database, login(database, "carol").token)
    assert {g.role.value for g in who.roles} == {"author", "read-only-administrator"}
    # author: content and profile listing; read-only administrator: Run As reads, audit.
    for granted in (Permission.CONTENT_WRITE, Permission.RUNAS_READ, Permission.AUDIT_READ):
        assert who.has(granted)
    for refused in (Permission.RUNAS_WRITE, Permission.USERS_WRITE, Permission.KEYS_ADMIN):
        assert not who.has(refused)
    users.me(who)  # the /me view is built from the principal alone
    assert "runas:read" in users.me(who).permissions


def test_a_user_without_roles_may_only_look_after_themself(database: Database) -> None:
    add_user(database, "dave")
    who = authenticate(database, login(database, "dave").token)
    assert who.permissions == frozenset({Permission.SELF})


def test_role_assignment_is_checked(database: Database) -> None:
    add_user(database, "alice")
    with unit(database) as uow, pytest.raises(InvalidInput, match="unknown role 'boss'"):
        users.assign_role(uow, "alice", RoleAssign(role="boss"))
    with unit(database) as uow, pytest.raises(NotFound, match=r"no group 'No\.Such\.Group'"):
        users.assign_role(uow, "alice", RoleAssign(role="operator", scope_groups=["No.Such.Group"]))
    with unit(database) as uow, pytest.raises(NotFound, match=r"no task 'No\.Task'"):
        users.assign_role(uow, "alice", RoleAssign(role="operator", scope_tasks=["No.Task"]))
    with unit(database) as uow, pytest.raises(InvalidInput, match="cannot be scoped"):
        users.assign_role(uow, "alice", RoleAssign(role="administrator", scope_groups=["G"]))
    with unit(database) as uow, pytest.raises(NotFound, match="does not hold the operator role"):
        users.revoke_role(uow, "alice", "operator")
    with unit(database) as uow:
        view = users.assign_role(uow, "alice", RoleAssign(role="operator"))
    assert [g.role for g in view.roles] == ["operator"]


def test_the_last_administrator_stays(database: Database) -> None:
    add_user(database, "alice", "administrator")
    add_user(database, "bob", "operator")
    for attempt in (
        lambda uow: users.remove_user(uow, "alice"),
        lambda uow: users.revoke_role(uow, "alice", "administrator"),
        lambda uow: users.set_disabled(uow, "alice", True),
    ):
        with unit(database) as uow, pytest.raises(InUse, match="'alice' is the last administrator"):
            attempt(uow)
    with unit(database) as uow:
        users.remove_user(uow, "bob")  # anyone else may go
    add_user(database, "erin", "administrator")
    with unit(database) as uow:
        users.revoke_role(uow, "alice", "administrator")
    with unit(database) as uow, pytest.raises(InUse, match="'erin' is the last administrator"):
        users.remove_user(uow, "erin")
    with unit(database) as uow:
        assert users.remove_user(uow, "alice") == "alice"


# -- passwords changed ---------------------------------------------------------------------


def test_changing_ones_own_password_needs_the_current_one(database: Database) -> None:
    add_user(database, "bob", "operator")
    first = login(database, "bob").token
    second = login(database, "bob").token
    bob = authenticate(database, second)
    new = SecretStr("a whole new passphrase")
    with unit(database) as uow, pytest.raises(InvalidInput, match="current password"):
        users.set_password(uow, "bob", PasswordChange(password=new), principal=bob, hasher=FAST)
    with unit(database) as uow, pytest.raises(InvalidInput, match="not correct"):
        users.set_password(
            uow,
            "bob",
            PasswordChange(password=new, current_password=SecretStr("a wrong guess!")),
            principal=bob,
            hasher=FAST,
        )
    assert failures(database) == 1  # a guess through this door counts too
    with unit(database) as uow:
        users.set_password(
            uow,
            "bob",
            PasswordChange(password=new, current_password=SecretStr(GOOD)),
            principal=bob,
            hasher=FAST,
        )
    with pytest.raises(Unauthenticated):
        authenticate(database, first)  # the other session ended
    assert authenticate(database, second).name == "bob"  # the one that changed it goes on
    with pytest.raises(Unauthenticated):
        login(database, "bob")
    assert login(database, "bob", new.get_secret_value()).token


def test_another_users_password_is_not_theirs_to_change(database: Database) -> None:
    add_user(database, "alice", "administrator")
    add_user(database, "bob", "operator")
    bob = authenticate(database, login(database, "bob").token)
    with unit(database) as uow, pytest.raises(NotFound, match="no user named 'alice'"):
        users.set_password(
            uow, "alice", PasswordChange(password=SecretStr("bob owns you now!")), principal=bob
        )
    with unit(database) as uow:  # local mode (the server host) may
        users.set_password(
            uow, "bob", PasswordChange(password=SecretStr("reset by the admin")), hasher=FAST
        )
    assert login(database, "bob", "reset by the admin").token


# -- nothing leaks -------------------------------------------------------------------------


def test_no_password_or_token_reaches_a_log_record(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "canary-Pa55word-7f3a9c"
    caplog.set_level(logging.DEBUG)
    add_user(database, "alice", "administrator", password=canary)
    token = login(database, "alice", canary).token
    with pytest.raises(Unauthenticated):
        login(database, "alice", canary + "x")
    with pytest.raises(Unauthenticated):
        login(database, canary, canary)  # a password typed as the name
    made = personal_token(database, "alice")
    authenticate(database, token)
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    for secret in (canary, token, made.token):
        assert secret not in text


def test_the_audit_trail_records_changes_and_logins_but_no_secret(
    database: Database, db_url: str
) -> None:
    from runas.services import audit

    canary = "canary-Pa55word-7f3a9c"
    add_user(database, "alice", "administrator", password=canary)
    token = login(database, "alice", canary).token
    with pytest.raises(Unauthenticated):
        login(database, "alice", "wrong password!")
    with pytest.raises(Unauthenticated):
        login(database, canary, canary)
    with database.session() as session:
        records = audit.list_records(session)
    seen = [(r.action, r.target, r.outcome) for r in records]
    assert ("user:create", "alice", "success") in seen
    assert ("auth:login", "alice", "success") in seen
    assert ("auth:login", "alice", "failure") in seen
    assert ("auth:login", "(unknown user)", "failure") in seen
    dump = repr(every_row(db_url)).lower()  # user names are lower case: so is a mistyped name
    assert canary.lower() not in dump
    assert token.lower() not in dump
