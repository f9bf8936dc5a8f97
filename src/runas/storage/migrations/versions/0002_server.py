"""The management server: users, API tokens, role assignments, login failures, audit trail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
NAME = sa.String(length=255)
FULL_NAME = sa.String(length=1024)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("display_name", NAME, nullable=False),
        sa.Column("password_hash", sa.String(length=512), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", NAME, nullable=False),
        sa.Column("row_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint("kind IN ('session', 'personal')", name=op.f("ck_api_tokens_kind")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])
    op.create_table(
        "role_assignments",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("scope_groups", JSON, nullable=False),
        sa.Column("scope_tasks", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", NAME, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_role_assignments_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_assignments")),
        sa.UniqueConstraint("user_id", "role", name=op.f("uq_role_assignments_user_id_role")),
    )
    op.create_index(op.f("ix_role_assignments_user_id"), "role_assignments", ["user_id"])
    op.create_table(
        "login_failures",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index(op.f("ix_login_failures_name"), "login_failures", ["name"])
    op.create_index(op.f("ix_login_failures_at"), "login_failures", ["at"])
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("target", FULL_NAME, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_log_seq")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_actor"), "audit_log", ["actor"])
    op.create_index(op.f("ix_audit_log_action"), "audit_log", ["action"])
    op.create_index(op.f("ix_audit_log_target"), "audit_log", ["target"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("login_failures")
    op.drop_table("role_assignments")
    op.drop_table("api_tokens")
    op.drop_table("users")
