"""The initial schema of the operational database.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Types are spelled out here rather than imported from ``runas.storage.tables``: a migration must
keep producing the schema of its day when the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# INTEGER PRIMARY KEY is the autoincrementing rowid alias on SQLite; BIGINT elsewhere.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NULLABLE_JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
TIMESTAMP = sa.DateTime(timezone=True)
NAME = sa.String(length=255)
FULL_NAME = sa.String(length=1024)


def upgrade() -> None:
    op.create_table(
        "mg_settings",
        sa.Column("key", NAME, nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_mg_settings")),
    )

    op.create_table(
        "packs",
        sa.Column("id", NAME, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("display_name", NAME, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("references", JSON, nullable=False),
        sa.Column("source_text", sa.Text(), nullable=False),
        sa.Column("imported_at", TIMESTAMP, nullable=False),
        sa.Column("imported_by", NAME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_packs")),
    )

    op.create_table(
        "classes",
        sa.Column("id", NAME, nullable=False),
        sa.Column("pack_id", NAME, nullable=False),
        sa.Column("display_name", NAME, nullable=False),
        sa.Column("base_id", NAME, nullable=True),
        sa.Column("abstract", sa.Boolean(), nullable=False),
        sa.Column("host_class_id", NAME, nullable=True),
        sa.Column("key_properties", JSON, nullable=False),
        sa.Column("properties", JSON, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["packs.id"], name=op.f("fk_classes_pack_id_packs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_classes")),
    )
    op.create_index(op.f("ix_classes_pack_id"), "classes", ["pack_id"])

    op.create_table(
        "groups",
        sa.Column("id", NAME, nullable=False),
        sa.Column("pack_id", NAME, nullable=False),
        sa.Column("display_name", NAME, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("members", JSON, nullable=False),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("includes", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["packs.id"], name=op.f("fk_groups_pack_id_packs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
    )
    op.create_index(op.f("ix_groups_pack_id"), "groups", ["pack_id"])

    op.create_table(
        "profiles",
        sa.Column("id", NAME, nullable=False),
        sa.Column("pack_id", NAME, nullable=True),
        sa.Column("display_name", NAME, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("context_class", NAME, nullable=False),
        sa.Column("accessibility", sa.String(length=16), nullable=False),
        sa.Column("allowed_types", JSON, nullable=False),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("ordered", sa.Boolean(), nullable=False),
        sa.Column("max_accounts", sa.Integer(), nullable=True),
        sa.Column("row_version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "accessibility IN ('public', 'internal')", name=op.f("ck_profiles_accessibility")
        ),
        sa.CheckConstraint(
            "max_accounts IS NULL OR max_accounts > 0", name=op.f("ck_profiles_max_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["packs.id"], name=op.f("fk_profiles_pack_id_packs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profiles")),
    )
    op.create_index(op.f("ix_profiles_pack_id"), "profiles", ["pack_id"])

    op.create_table(
        "workflows",
        sa.Column("id", NAME, nullable=False),
        sa.Column("pack_id", NAME, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("display_name", NAME, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("target_class", NAME, nullable=False),
        sa.Column("profile_id", NAME, nullable=True),
        sa.Column("schedule", NULLABLE_JSON, nullable=True),
        sa.Column("probe_type", sa.String(length=64), nullable=False),
        sa.Column("probe_config", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('discovery', 'rule', 'monitor', 'task')", name=op.f("ck_workflows_kind")
        ),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["packs.id"], name=op.f("fk_workflows_pack_id_packs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index(op.f("ix_workflows_pack_id"), "workflows", ["pack_id"])
    op.create_index(op.f("ix_workflows_profile_id"), "workflows", ["profile_id"])
    op.create_index(op.f("ix_workflows_target_class"), "workflows", ["target_class"])

    op.create_table(
        "objects",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("class_id", NAME, nullable=False),
        sa.Column("full_name", FULL_NAME, nullable=False),
        sa.Column("key_values", JSON, nullable=False),
        sa.Column("properties", JSON, nullable=False),
        sa.Column("host_id", BIG_ID, nullable=True),
        sa.Column("computer_name", NAME, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["objects.id"], name=op.f("fk_objects_host_id_objects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_objects")),
        sa.UniqueConstraint("full_name", name=op.f("uq_objects_full_name")),
    )
    op.create_index(op.f("ix_objects_class_id"), "objects", ["class_id"])
    op.create_index(op.f("ix_objects_computer_name"), "objects", ["computer_name"])
    op.create_index(op.f("ix_objects_host_id"), "objects", ["host_id"])

    op.create_table(
        "discovery_claims",
        sa.Column("source", NAME, nullable=False),
        sa.Column("scope", FULL_NAME, nullable=False),
        sa.Column("object_id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["object_id"],
            ["objects.id"],
            name=op.f("fk_discovery_claims_object_id_objects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("source", "scope", "object_id", name=op.f("pk_discovery_claims")),
    )
    op.create_index(op.f("ix_discovery_claims_object_id"), "discovery_claims", ["object_id"])

    op.create_table(
        "accounts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("public_fields", JSON, nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("distribution_mode", sa.String(length=16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", NAME, nullable=False),
        sa.Column("modified_at", TIMESTAMP, nullable=False),
        sa.Column("modified_by", NAME, nullable=False),
        sa.Column("row_version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "distribution_mode IN ('more-secure', 'less-secure')",
            name=op.f("ck_accounts_distribution_mode"),
        ),
        sa.CheckConstraint("current_version >= 0", name=op.f("ck_accounts_current_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )

    op.create_table(
        "secret_versions",
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kek_id", sa.String(length=128), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", NAME, nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_secret_versions_version")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_secret_versions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "version", name=op.f("pk_secret_versions")),
    )
    op.create_index(op.f("ix_secret_versions_kek_id"), "secret_versions", ["kek_id"])

    op.create_table(
        "distribution",
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("computer_name", NAME, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_distribution_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "computer_name", name=op.f("pk_distribution")),
    )
    op.create_index(op.f("ix_distribution_computer_name"), "distribution", ["computer_name"])

    op.create_table(
        "associations",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("profile_id", NAME, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target", FULL_NAME, nullable=False),
        sa.Column("enforced", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", NAME, nullable=False),
        sa.CheckConstraint(
            "target_kind IN ('all', 'class', 'group', 'object')",
            name=op.f("ck_associations_target_kind"),
        ),
        # "" is the target of kind "all" (never NULL, so the unique constraint covers it)
        sa.CheckConstraint(
            "(target_kind = 'all') = (target = '')", name=op.f("ck_associations_target")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_associations_account_id_accounts"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_associations_profile_id_profiles"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_associations")),
        sa.UniqueConstraint(
            "profile_id",
            "account_id",
            "target_kind",
            "target",
            name=op.f("uq_associations_profile_id_account_id_target_kind_target"),
        ),
    )
    op.create_index(op.f("ix_associations_account_id"), "associations", ["account_id"])
    op.create_index(op.f("ix_associations_profile_id"), "associations", ["profile_id"])


def downgrade() -> None:
    # Dependants first; indexes go with their tables.
    for table in (
        "associations",
        "distribution",
        "secret_versions",
        "accounts",
        "discovery_claims",
        "objects",
        "workflows",
        "profiles",
        "groups",
        "classes",
        "packs",
        "mg_settings",
    ):
        op.drop_table(table)
