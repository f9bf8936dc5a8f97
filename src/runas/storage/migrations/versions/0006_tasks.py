"""Tasks: parameters and timeouts of task workflows, task runs and their targets
(``services/tasks.py``, docs/tasks.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("parameters", JSON, nullable=False, server_default=sa.text("'{}'"))
        )
        batch_op.add_column(sa.Column("timeout_seconds", sa.Integer(), nullable=True))

    op.create_table(
        "task_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("requested_at", TIMESTAMP, nullable=False),
        sa.Column("management_group", sa.String(length=255), nullable=False),
        sa.Column("credential_mode", sa.String(length=16), nullable=False),
        sa.Column("supplied_user", sa.String(length=255), nullable=True),
        sa.Column("overrides", JSON, nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "credential_mode IN ('predefined', 'supplied')",
            name=op.f("ck_task_runs_credential_mode"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_runs")),
    )
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_runs_requested_at"), ["requested_at"])
        batch_op.create_index(batch_op.f("ix_task_runs_requested_by"), ["requested_by"])
        batch_op.create_index(batch_op.f("ix_task_runs_task_id"), ["task_id"])

    op.create_table(
        "task_targets",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("object_name", sa.String(length=1024), nullable=False),
        sa.Column("object_id", sa.BigInteger(), nullable=True),
        sa.Column("computer", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("deadline", TIMESTAMP, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("secret_version", sa.Integer(), nullable=True),
        sa.Column("sealed_credentials", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'succeeded', 'failed', 'timed-out', 'refused')",
            name=op.f("ck_task_targets_status"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["task_runs.id"],
            name=op.f("fk_task_targets_run_id_task_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_targets")),
    )
    with op.batch_alter_table("task_targets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_task_targets_computer_status", ["computer", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_task_targets_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_targets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_targets_run_id"))
        batch_op.drop_index("ix_task_targets_computer_status")
    op.drop_table("task_targets")

    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_runs_task_id"))
        batch_op.drop_index(batch_op.f("ix_task_runs_requested_by"))
        batch_op.drop_index(batch_op.f("ix_task_runs_requested_at"))
    op.drop_table("task_runs")

    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_column("timeout_seconds")
        batch_op.drop_column("parameters")
