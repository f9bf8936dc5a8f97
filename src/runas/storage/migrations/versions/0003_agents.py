"""Agents: enrolment, enrolment tokens, the management group's keys, monitor states, events,
reports, Run As health and alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("object_name", sa.String(length=1024), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_events")),
    )
    with op.batch_alter_table("agent_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_events_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_agent_events_at"), ["at"], unique=False)

    op.create_table(
        "agent_reports",
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_agent_reports")),
    )
    with op.batch_alter_table("agent_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_reports_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_agent_reports_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("hpke_public_key", sa.LargeBinary(), nullable=False),
        sa.Column("tls_key_sha256", sa.String(length=64), nullable=False),
        sa.Column("csr_pem", sa.Text(), nullable=False),
        sa.Column("cert_serial", sa.String(length=64), nullable=True),
        sa.Column("cert_pem", sa.Text(), nullable=True),
        sa.Column("cert_not_after", TIMESTAMP, nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("management_server", sa.Boolean(), nullable=False),
        sa.Column("enrolled_at", TIMESTAMP, nullable=False),
        sa.Column("enrolled_from", sa.String(length=128), nullable=False),
        sa.Column("decided_at", TIMESTAMP, nullable=True),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.Column("last_seen_at", TIMESTAMP, nullable=True),
        sa.Column("last_seen_from", sa.String(length=128), nullable=False),
        sa.Column("last_epoch", sa.BigInteger(), nullable=False),
        sa.Column("row_version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected')", name=op.f("ck_agents_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    op.create_table(
        "alerts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("computer", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("object_name", sa.String(length=1024), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("opened_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("closed_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_closed_at"), ["closed_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_computer"), ["computer"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_key"), ["key"], unique=False)

    op.create_table(
        "enrolment_tokens",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("computer", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("used_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_enrolment_tokens_token_hash")),
    )
    with op.batch_alter_table("enrolment_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_enrolment_tokens_computer"), ["computer"], unique=False
        )

    op.create_table(
        "group_keys",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_group_keys")),
    )
    op.create_table(
        "monitor_states",
        sa.Column("object_id", BIG_ID, nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("timed_out", sa.Boolean(), nullable=False),
        sa.Column(
            "perf",
            JSON,
            nullable=False,
        ),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("secret_version", sa.Integer(), nullable=True),
        sa.Column("ran_at", TIMESTAMP, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["object_id"],
            ["objects.id"],
            name=op.f("fk_monitor_states_object_id_objects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("object_id", "workflow_id", name=op.f("pk_monitor_states")),
    )
    with op.batch_alter_table("monitor_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_monitor_states_agent_id"), ["agent_id"], unique=False)

    op.create_table(
        "run_as_health",
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("computer", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("since", TIMESTAMP, nullable=False),
        sa.Column("missing_since", TIMESTAMP, nullable=True),
        sa.Column("report_failure", sa.String(length=32), nullable=True),
        sa.Column("report_message", sa.Text(), nullable=False),
        sa.Column("report_at", TIMESTAMP, nullable=True),
        sa.Column("report_secret_version", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_run_as_health_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "computer", name=op.f("pk_run_as_health")),
    )


def downgrade() -> None:
    op.drop_table("run_as_health")
    with op.batch_alter_table("monitor_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitor_states_agent_id"))

    op.drop_table("monitor_states")
    op.drop_table("group_keys")
    with op.batch_alter_table("enrolment_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrolment_tokens_computer"))

    op.drop_table("enrolment_tokens")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_key"))
        batch_op.drop_index(batch_op.f("ix_alerts_computer"))
        batch_op.drop_index(batch_op.f("ix_alerts_closed_at"))

    op.drop_table("alerts")
    op.drop_table("agents")
    with op.batch_alter_table("agent_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_reports_received_at"))
        batch_op.drop_index(batch_op.f("ix_agent_reports_agent_id"))

    op.drop_table("agent_reports")
    with op.batch_alter_table("agent_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_events_at"))
        batch_op.drop_index(batch_op.f("ix_agent_events_agent_id"))

    op.drop_table("agent_events")
