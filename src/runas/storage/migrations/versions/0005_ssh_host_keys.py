"""SSH host keys the management group trusts, or was offered and has not approved yet
(``services/ssh_hosts.py``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ssh_host_keys",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("key_type", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=2048), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_seen_at", TIMESTAMP, nullable=False),
        sa.Column("reported_by", sa.String(length=64), nullable=True),
        sa.Column("approved_by", sa.String(length=255), nullable=True),
        sa.Column("approved_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'trusted')", name=op.f("ck_ssh_host_keys_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ssh_host_keys")),
        sa.UniqueConstraint(
            "host", "port", "key_type", "key", name=op.f("uq_ssh_host_keys_host_port_key_type_key")
        ),
    )
    with op.batch_alter_table("ssh_host_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ssh_host_keys_host"), ["host"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ssh_host_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ssh_host_keys_host"))

    op.drop_table("ssh_host_keys")
