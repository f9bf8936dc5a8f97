"""Connected management groups (``services/connected.py``): another group's API and the local
Run As account this group logs in to it with.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "connected_groups",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("server_url", sa.String(length=1024), nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("ca_pem", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_connected_groups_account_id_accounts"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connected_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_connected_groups_name")),
    )
    with op.batch_alter_table("connected_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_connected_groups_account_id"), ["account_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("connected_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connected_groups_account_id"))

    op.drop_table("connected_groups")
