"""The operational database schema: SQLAlchemy 2 declarative models.

One model per table, named ``<Thing>Row`` so that it is never confused with the immutable domain
value it maps to (``runas.domain.model``). Services translate rows to domain values; nothing
outside ``runas.storage`` and ``runas.services`` should need these classes.

Choices worth knowing:

* Every timestamp is a timezone-aware UTC ``datetime`` (:class:`UTCDateTime`); a naive datetime
  is refused when written.
* JSON columns are ``sqlalchemy.JSON``, stored as ``jsonb`` on PostgreSQL (comparable and
  indexable; key order of objects is not preserved, which nothing relies on).
* ``associations.target`` is ``""`` (never NULL) for the *all* target kind, so that the unique
  constraint ``(profile_id, account_id, target_kind, target)`` holds for it too: SQL treats two
  NULLs as distinct, which would let the same "all" association be stored twice. A check
  constraint ties the empty string to ``target_kind = 'all'``. The domain uses ``None``; the
  service layer converts.
* ``profiles`` and ``accounts`` carry ``row_version`` (SQLAlchemy ``version_id_col``): an UPDATE
  of a stale row raises ``sqlalchemy.orm.exc.StaleDataError`` instead of overwriting a change.
* Constraint names come from :data:`NAMING_CONVENTION`, so migrations are deterministic and the
  same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Identifiers (pack, class, group, profile, workflow ids), account and computer names.
NAME_LENGTH = 255
#: Object full names (``Class:host;path;key``) are longer.
FULL_NAME_LENGTH = 1024

# A 64-bit surrogate key on PostgreSQL; on SQLite only ``INTEGER PRIMARY KEY`` is the rowid alias
# that autoincrements, so BIGINT would leave the key NULL on insert.
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: JSON value that is never SQL NULL (lists and mappings; defaults supplied by the model).
Json: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")
#: JSON value for a nullable column: Python ``None`` is stored as SQL NULL, not JSON ``null``.
NullableJson: TypeEngine[Any] = JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time zone support: the value is stored as
    naive UTC text (which still sorts and compares correctly) and read back as aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime refused: timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """Default for ``created_at``-style columns; services may pass their own (injectable) time."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - read by SQLAlchemy at class creation
        datetime: UTCDateTime(),
        str: String(NAME_LENGTH),
        bool: Boolean(),
        int: Integer(),
    }


#: The schema the migrations must produce (``runas.storage.migrate.check_drift`` compares them).
metadata = Base.metadata


class SettingRow(Base):
    """Management-group wide settings: ``name``, ``resolution_epoch`` (int, bumped by every
    change that can alter resolution), ``tasks_execution``..."""

    __tablename__ = "mg_settings"

    key: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[Any] = mapped_column(Json)


class PackRow(Base):
    __tablename__ = "packs"

    id: Mapped[str] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str]
    description: Mapped[str] = mapped_column(Text, default="")
    #: ``[{"id": ..., "min_version": ... | None}, ...]``
    references: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    #: the pack's YAML exactly as imported
    source_text: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)
    imported_by: Mapped[str]

    classes: Mapped[list[ClassRow]] = relationship(
        back_populates="pack", cascade="all, delete-orphan", passive_deletes=True
    )
    groups: Mapped[list[GroupRow]] = relationship(
        back_populates="pack", cascade="all, delete-orphan", passive_deletes=True
    )
    profiles: Mapped[list[ProfileRow]] = relationship(
        back_populates="pack", cascade="all, delete-orphan", passive_deletes=True
    )
    workflows: Mapped[list[WorkflowRow]] = relationship(
        back_populates="pack", cascade="all, delete-orphan", passive_deletes=True
    )


class ClassRow(Base):
    __tablename__ = "classes"

    id: Mapped[str] = mapped_column(primary_key=True)
    pack_id: Mapped[str] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"), index=True)
    display_name: Mapped[str]
    #: the base class id; no foreign key because the base may live in another pack (checked in
    #: code when packs are imported and removed). NULL only for ``System.Entity``.
    base_id: Mapped[str | None]
    abstract: Mapped[bool] = mapped_column(default=False)
    host_class_id: Mapped[str | None]
    key_properties: Mapped[list[str]] = mapped_column(Json, default=list)
    properties: Mapped[list[str]] = mapped_column(Json, default=list)
    description: Mapped[str] = mapped_column(Text, default="")

    pack: Mapped[PackRow] = relationship(back_populates="classes")


class GroupRow(Base):
    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(primary_key=True)
    pack_id: Mapped[str] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"), index=True)
    display_name: Mapped[str]
    description: Mapped[str] = mapped_column(Text, default="")
    #: explicit members, by object full name
    members: Mapped[list[str]] = mapped_column(Json, default=list)
    #: ``[{"class_id": ..., "conditions": [{"property", "op", "value"}, ...]}, ...]``
    rules: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    #: nested group ids
    includes: Mapped[list[str]] = mapped_column(Json, default=list)

    pack: Mapped[PackRow] = relationship(back_populates="groups")


class ProfileRow(Base):
    __tablename__ = "profiles"
    __table_args__ = (
        CheckConstraint("accessibility IN ('public', 'internal')", name="accessibility"),
        CheckConstraint("max_accounts IS NULL OR max_accounts > 0", name="max_accounts"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    #: NULL for a profile created by hand (not owned by any pack)
    pack_id: Mapped[str | None] = mapped_column(
        ForeignKey("packs.id", ondelete="CASCADE"), index=True
    )
    display_name: Mapped[str]
    description: Mapped[str] = mapped_column(Text, default="")
    context_class: Mapped[str]
    accessibility: Mapped[str] = mapped_column(String(16), default="public")
    #: account types allowed; empty = all
    allowed_types: Mapped[list[str]] = mapped_column(Json, default=list)
    fallback: Mapped[bool] = mapped_column(default=True)
    ordered: Mapped[bool] = mapped_column(default=False)
    max_accounts: Mapped[int | None]
    row_version: Mapped[int] = mapped_column()

    pack: Mapped[PackRow | None] = relationship(back_populates="profiles")
    associations: Mapped[list[AssociationRow]] = relationship(
        back_populates="profile", passive_deletes="all"
    )

    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class WorkflowRow(Base):
    __tablename__ = "workflows"
    __table_args__ = (
        CheckConstraint("kind IN ('discovery', 'rule', 'monitor', 'task')", name="kind"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    pack_id: Mapped[str] = mapped_column(ForeignKey("packs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str]
    description: Mapped[str] = mapped_column(Text, default="")
    target_class: Mapped[str] = mapped_column(index=True)
    #: no foreign key: a workflow may name a profile of another pack (checked in code)
    profile_id: Mapped[str | None] = mapped_column(index=True)
    #: ``{"interval_seconds", "spread_seconds", "timeout_seconds"}`` or NULL (tasks)
    schedule: Mapped[dict[str, Any] | None] = mapped_column(NullableJson)
    probe_type: Mapped[str] = mapped_column(String(64))
    probe_config: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    #: discovery workflows: the classes they discover (ids), for objects off the agent's computer
    discovers: Mapped[list[str]] = mapped_column(Json, default=list, server_default=text("'[]'"))
    #: tasks: ``{name: {"default", "overridable", "description", "position"}}``
    parameters: Mapped[dict[str, Any]] = mapped_column(
        Json, default=dict, server_default=text("'{}'")
    )
    #: tasks: seconds an agent has to pick a run up (and then to report it); NULL otherwise
    timeout_seconds: Mapped[int | None]

    pack: Mapped[PackRow] = relationship(back_populates="workflows")


class ObjectRow(Base):
    """A discovered object. It exists while at least one discovery source claims it."""

    __tablename__ = "objects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    class_id: Mapped[str] = mapped_column(index=True)
    full_name: Mapped[str] = mapped_column(String(FULL_NAME_LENGTH), unique=True)
    key_values: Mapped[list[str]] = mapped_column(Json, default=list)
    properties: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: the hosting object; deleting a host deletes everything it hosts
    host_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("objects.id", ondelete="CASCADE"), index=True
    )
    #: the hosting computer's name (the object's own name for a computer)
    computer_name: Mapped[str] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    host: Mapped[ObjectRow | None] = relationship(remote_side=[id], back_populates="hosted")
    hosted: Mapped[list[ObjectRow]] = relationship(
        back_populates="host", cascade="all, delete-orphan", passive_deletes=True
    )
    claims: Mapped[list[DiscoveryClaimRow]] = relationship(
        back_populates="object", cascade="all, delete-orphan", passive_deletes=True
    )


class DiscoveryClaimRow(Base):
    """``source`` (a discovery workflow id or ``"import"``…) claims the object within ``scope``
    (``""`` for a global claim)."""

    __tablename__ = "discovery_claims"

    source: Mapped[str] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(FULL_NAME_LENGTH), primary_key=True, default="")
    object_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True, index=True
    )

    object: Mapped[ObjectRow] = relationship(back_populates="claims")


class AccountRow(Base):
    """A Run As account. Public fields only; secrets live in :class:`SecretVersionRow`."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(
            "distribution_mode IN ('more-secure', 'less-secure')", name="distribution_mode"
        ),
        CheckConstraint("current_version >= 0", name="current_version"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(unique=True)
    type: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    public_fields: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: the secret version in use (0 = no secret stored yet)
    current_version: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[datetime | None]
    distribution_mode: Mapped[str] = mapped_column(String(16), default="more-secure")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str]
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_by: Mapped[str]
    row_version: Mapped[int] = mapped_column()

    secret_versions: Mapped[list[SecretVersionRow]] = relationship(
        back_populates="account",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="SecretVersionRow.version",
    )
    distribution: Mapped[list[DistributionRow]] = relationship(
        back_populates="account", cascade="all, delete-orphan", passive_deletes=True
    )
    associations: Mapped[list[AssociationRow]] = relationship(
        back_populates="account", passive_deletes="all"
    )

    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class SecretVersionRow(Base):
    """One encrypted version of an account's secret fields (envelope encryption, domain §11)."""

    __tablename__ = "secret_versions"
    __table_args__ = (CheckConstraint("version >= 1", name="version"),)

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True)
    #: the key-encryption key that wrapped ``wrapped_dek``; key rotation selects rows by it
    kek_id: Mapped[str] = mapped_column(String(128), index=True)
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str]

    account: Mapped[AccountRow] = relationship(back_populates="secret_versions")


class DistributionRow(Base):
    """The account's secret may be sent to this computer (more-secure distribution)."""

    __tablename__ = "distribution"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    computer_name: Mapped[str] = mapped_column(primary_key=True, index=True)

    account: Mapped[AccountRow] = relationship(back_populates="distribution")


class AssociationRow(Base):
    """Profile + account + target. Deleting a profile or an account that is still associated is
    refused by the database (ON DELETE RESTRICT): the caller removes associations first."""

    __tablename__ = "associations"
    __table_args__ = (
        UniqueConstraint("profile_id", "account_id", "target_kind", "target"),
        CheckConstraint("target_kind IN ('all', 'class', 'group', 'object')", name="target_kind"),
        CheckConstraint("(target_kind = 'all') = (target = '')", name="target"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_id: Mapped[str] = mapped_column(
        ForeignKey("profiles.id", ondelete="RESTRICT"), index=True
    )
    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="RESTRICT"), index=True
    )
    target_kind: Mapped[str] = mapped_column(String(16))
    #: class id, group id or object full name; ``""`` for ``all`` (see the module docstring)
    target: Mapped[str] = mapped_column(String(FULL_NAME_LENGTH), default="")
    enforced: Mapped[bool] = mapped_column(default=False)
    #: rank in an ordered profile (accounts tried in turn); NULL otherwise
    position: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str]

    profile: Mapped[ProfileRow] = relationship(back_populates="associations")
    account: Mapped[AccountRow] = relationship(back_populates="associations")


# -- the management server (issue 3): users, tokens, roles, audit ---------------------------


class UserRow(Base):
    """A local user of the management group. ``password_hash`` is an argon2id PHC string."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(unique=True)
    display_name: Mapped[str] = mapped_column(default="")
    password_hash: Mapped[str] = mapped_column(String(512))
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str]
    row_version: Mapped[int] = mapped_column()

    tokens: Mapped[list[ApiTokenRow]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    roles: Mapped[list[RoleAssignmentRow]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class ApiTokenRow(Base):
    """A bearer token: a *session* token from ``runas login`` or a *personal* API token.
    Only a SHA-256 of the token is stored (tokens are 256-bit random, so no slow hash is
    needed to resist guessing); the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("kind IN ('session', 'personal')", name="kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(default="")
    kind: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[UserRow] = relationship(back_populates="tokens")


class RoleAssignmentRow(Base):
    """A role held by a user, optionally scoped to groups of objects and to tasks (empty lists:
    no restriction). A user's rights are the union of their roles."""

    __tablename__ = "role_assignments"
    __table_args__ = (UniqueConstraint("user_id", "role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(64))
    scope_groups: Mapped[list[str]] = mapped_column(Json, default=list)
    scope_tasks: Mapped[list[str]] = mapped_column(Json, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str]

    user: Mapped[UserRow] = relationship(back_populates="roles")


class LoginFailureRow(Base):
    """A failed login, kept a short while to rate-limit guessing across every server."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(String(128), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditRow(Base):
    """One record of the tamper-evident audit trail.

    ``seq`` numbers the chain from 1 with no gaps; ``hash`` is SHA-256 over the record's
    canonical form including ``prev_hash``, the previous record's hash. The chain head (last
    seq and hash) is also kept in ``mg_settings`` so that removing the newest records shows.
    Records never hold a secret."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(String(128), default="")
    #: ``source:subject:action`` tag, e.g. ``api:account:create``
    action: Mapped[str] = mapped_column(String(128), index=True)
    target: Mapped[str] = mapped_column(String(FULL_NAME_LENGTH), default="", index=True)
    #: ``success``, ``denied`` or ``failure``
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


# -- agents (issue 4): enrolment, the management group's keys, state, Run As health, alerts ---


class AgentRow(Base):
    """An agent: enrolled (pending), approved (holds a certificate) or rejected. The id is its
    computer's name. Removing an agent deletes its row: its certificate is refused from then on
    (``cert_serial`` must match the row's), and it can enrol again with new keys."""

    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    #: the agent's HPKE public key (X25519, 32 bytes): what its bundles are sealed to
    hpke_public_key: Mapped[bytes] = mapped_column(LargeBinary)
    #: SHA-256 (hex) of the TLS public key the agent enrolled with (SubjectPublicKeyInfo)
    tls_key_sha256: Mapped[str] = mapped_column(String(64))
    csr_pem: Mapped[str] = mapped_column(Text)
    cert_serial: Mapped[str | None] = mapped_column(String(64))
    cert_pem: Mapped[str | None] = mapped_column(Text)
    cert_not_after: Mapped[datetime | None]
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    management_server: Mapped[bool] = mapped_column(default=False)
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    enrolled_from: Mapped[str] = mapped_column(String(128), default="")
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None]
    last_seen_at: Mapped[datetime | None]
    last_seen_from: Mapped[str] = mapped_column(String(128), default="")
    last_epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    row_version: Mapped[int] = mapped_column()

    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class EnrolmentTokenRow(Base):
    """A one-time enrolment token for one computer: an agent that presents it is approved at
    once. Only a SHA-256 of the token is stored."""

    __tablename__ = "enrolment_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    computer: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class GroupKeyRow(Base):
    """A key of the management group itself (the agent CA): certificate in clear, private key
    sealed under the keyring like a secret (envelope AAD account id 0, reserved)."""

    __tablename__ = "group_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    cert_pem: Mapped[str] = mapped_column(Text)
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MonitorStateRow(Base):
    """The latest result of one workflow for one object, as its agent reported it."""

    __tablename__ = "monitor_states"

    object_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True
    )
    workflow_id: Mapped[str] = mapped_column(primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None]
    timed_out: Mapped[bool] = mapped_column(default=False)
    perf: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    account_id: Mapped[int | None] = mapped_column(BigInteger)
    secret_version: Mapped[int | None]
    ran_at: Mapped[datetime]
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentEventRow(Base):
    """An event a workflow emitted (already scrubbed by the agent)."""

    __tablename__ = "agent_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    object_name: Mapped[str] = mapped_column(String(FULL_NAME_LENGTH))
    workflow_id: Mapped[str]
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class AgentReportRow(Base):
    """Reports already stored, by id: an agent that retries a report (to another server after
    a failover) does not store it twice."""

    __tablename__ = "agent_reports"

    report_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RunAsHealthRow(Base):
    """Run As health of one account on one computer (domain.md §9), with what it is computed
    from: when it was first seen needed but not distributed, and the latest probe report."""

    __tablename__ = "run_as_health"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    computer: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    state: Mapped[str] = mapped_column(String(32), default="ok")
    message: Mapped[str] = mapped_column(Text, default="")
    since: Mapped[datetime] = mapped_column(default=utcnow)
    missing_since: Mapped[datetime | None]
    report_failure: Mapped[str | None] = mapped_column(String(32))
    report_message: Mapped[str] = mapped_column(Text, default="")
    report_at: Mapped[datetime | None]
    report_secret_version: Mapped[int | None]


class AlertRow(Base):
    """An alert: opened and closed by the management group itself (Run As health, monitors).
    At most one open alert per ``key`` (enforced by the code that opens them)."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(FULL_NAME_LENGTH), index=True)
    source: Mapped[str] = mapped_column(String(32))
    computer: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    account_id: Mapped[int | None] = mapped_column(BigInteger)
    object_name: Mapped[str | None] = mapped_column(String(FULL_NAME_LENGTH))
    state: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    closed_at: Mapped[datetime | None] = mapped_column(index=True)


class SshHostKeyRow(Base):
    """An SSH host key of a target (``host``, ``port``): *pending* when an agent reported it
    offered (nobody trusts it yet), *trusted* once an administrator approved its fingerprint or
    added it. Only trusted keys reach agents (their ``known_hosts``). Public data."""

    __tablename__ = "ssh_host_keys"
    __table_args__ = (
        UniqueConstraint("host", "port", "key_type", "key"),
        CheckConstraint("status IN ('pending', 'trusted')", name="status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    port: Mapped[int]
    #: the OpenSSH key type (``ssh-ed25519``, ``ecdsa-sha2-nistp256``, ``ssh-rsa``…)
    key_type: Mapped[str] = mapped_column(String(64))
    #: base64 of the public key blob, as in a known_hosts line (bounded so the unique index
    #: fits PostgreSQL's B-tree row limit)
    key: Mapped[str] = mapped_column(String(2048))
    #: ``SHA256:<base64 without padding>``, as ``ssh-keygen -l`` prints it
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: the agent that reported the offer; None for a key an administrator added
    reported_by: Mapped[str | None] = mapped_column(String(64))
    approved_by: Mapped[str | None]
    approved_at: Mapped[datetime | None]


class ConnectedGroupRow(Base):
    """A connected management group (``services/connected.py``): another group's API, and the
    local Run As account (type basic, an administrator there) this group logs in with. The
    account cannot be removed while a connection uses it (ON DELETE RESTRICT). ``ca_pem``: the
    CA certificate(s) the connected server's TLS certificate must chain to; NULL = the
    system's CAs."""

    __tablename__ = "connected_groups"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    server_url: Mapped[str] = mapped_column(String(1024))
    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="RESTRICT"), index=True
    )
    ca_pem: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str]


# -- tasks (issue 6): runs started on demand, one target per object (services/tasks.py) -------


class TaskRunRow(Base):
    """A task run: who started which task, where, with which kind of credentials. Never a
    password: supplied credentials are sealed per target (:class:`TaskTargetRow`)."""

    __tablename__ = "task_runs"
    __table_args__ = (
        CheckConstraint("credential_mode IN ('predefined', 'supplied')", name="credential_mode"),
    )

    #: a UUID: the task run id users see
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: no foreign key: a run outlives the pack that declared its task
    task_id: Mapped[str] = mapped_column(index=True)
    requested_by: Mapped[str] = mapped_column(index=True)
    requested_at: Mapped[datetime] = mapped_column(index=True)
    #: the management group where the request was made (a connected group's for forwarded runs)
    management_group: Mapped[str]
    credential_mode: Mapped[str] = mapped_column(String(16))
    #: ``DOMAIN\user`` or ``user`` for supplied credentials, NULL for predefined
    supplied_user: Mapped[str | None]
    overrides: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    timeout_seconds: Mapped[int]

    targets: Mapped[list[TaskTargetRow]] = relationship(
        back_populates="run",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="TaskTargetRow.id",
    )


class TaskTargetRow(Base):
    """One object of a task run, run by the agent of its computer. ``sealed_credentials``
    (supplied credentials sealed to that agent for this target only) is cleared as soon as
    the target is delivered or ends."""

    __tablename__ = "task_targets"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'delivered', 'succeeded', 'failed', 'timed-out', 'refused')",
            name="status",
        ),
        # the agent's poll: its pending targets, one indexed query
        Index("ix_task_targets_computer_status", "computer", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("task_runs.id", ondelete="CASCADE"), index=True
    )
    object_name: Mapped[str] = mapped_column(String(FULL_NAME_LENGTH))
    #: no foreign key: the run keeps its history when the object goes away
    object_id: Mapped[int | None] = mapped_column(BigInteger)
    computer: Mapped[str]
    status: Mapped[str] = mapped_column(String(16))
    #: the agent must pick the target up before this
    deadline: Mapped[datetime]
    account_id: Mapped[int | None] = mapped_column(BigInteger)
    secret_version: Mapped[int | None]
    sealed_credentials: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: healthy, warning, critical or unknown once done
    state: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None]
    #: scrubbed by the agent, at most 64 KiB
    output: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    run: Mapped[TaskRunRow] = relationship(back_populates="targets")


__all__ = [
    "FULL_NAME_LENGTH",
    "NAME_LENGTH",
    "NAMING_CONVENTION",
    "AccountRow",
    "AgentEventRow",
    "AgentReportRow",
    "AgentRow",
    "AlertRow",
    "ApiTokenRow",
    "AssociationRow",
    "AuditRow",
    "Base",
    "ClassRow",
    "ConnectedGroupRow",
    "DiscoveryClaimRow",
    "DistributionRow",
    "EnrolmentTokenRow",
    "GroupKeyRow",
    "GroupRow",
    "LoginFailureRow",
    "MonitorStateRow",
    "ObjectRow",
    "PackRow",
    "ProfileRow",
    "RoleAssignmentRow",
    "RunAsHealthRow",
    "SecretVersionRow",
    "SettingRow",
    "SshHostKeyRow",
    "TaskRunRow",
    "TaskTargetRow",
    "UTCDateTime",
    "UserRow",
    "WorkflowRow",
    "metadata",
    "utcnow",
]
