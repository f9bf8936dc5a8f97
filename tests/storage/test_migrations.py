"""The migrations build exactly the schema the models describe, on both backends.

``test_migrated_schema_matches_the_models`` is the guard that fails CI when a model changes
without a migration (the equivalent of ``alembic check``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, MetaData, String, inspect, text

from runas.storage import migrate, tables
from runas.storage.database import Database

ALL_TABLES = {
    "accounts",
    "agent_events",
    "agent_reports",
    "agents",
    "alerts",
    "enrolment_tokens",
    "group_keys",
    "monitor_states",
    "run_as_health",
    "api_tokens",
    "associations",
    "audit_log",
    "classes",
    "connected_groups",
    "discovery_claims",
    "distribution",
    "groups",
    "login_failures",
    "mg_settings",
    "objects",
    "packs",
    "profiles",
    "role_assignments",
    "secret_versions",
    "ssh_host_keys",
    "task_runs",
    "task_targets",
    "users",
    "workflows",
}


def _table_names(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


@pytest.fixture
def empty_database(empty_db_url: str) -> Iterator[Database]:
    db = Database(empty_db_url)
    try:
        yield db
    finally:
        db.dispose()


def test_upgrade_from_nothing_reaches_head(empty_database: Database) -> None:
    db = empty_database
    assert migrate.current_revision(db) is None
    assert not migrate.is_at_head(db)

    migrate.upgrade(db)

    assert migrate.current_revision(db) == migrate.head_revision()
    assert migrate.is_at_head(db)
    assert _table_names(db) == ALL_TABLES


def test_upgrade_is_idempotent(database: Database) -> None:
    migrate.upgrade(database)
    assert migrate.is_at_head(database)


def test_migrated_schema_matches_the_models(database: Database) -> None:
    assert migrate.check_drift(database) == []


def test_drift_guard_sees_a_model_change_without_migration(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = MetaData(naming_convention=tables.NAMING_CONVENTION)
    for table in tables.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["accounts"].append_column(Column("nickname", String(40), nullable=True))
    monkeypatch.setattr(migrate, "metadata", changed)

    assert migrate.check_drift(database) == ["add_column accounts.nickname"]


def test_drift_guard_sees_a_database_changed_by_hand(database: Database) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("CREATE TABLE scratch (id INTEGER PRIMARY KEY)"))
        connection.execute(text("DROP INDEX ix_objects_computer_name"))

    drift = migrate.check_drift(database)

    assert "remove_table scratch" in drift
    assert "add_index objects.ix_objects_computer_name" in drift


def test_downgrade_to_base_and_up_again(database: Database) -> None:
    migrate.downgrade(database, "base")
    assert migrate.current_revision(database) is None
    assert _table_names(database) == set()

    migrate.upgrade(database)
    assert migrate.is_at_head(database)
    assert migrate.check_drift(database) == []


def test_migrations_ship_inside_the_package() -> None:
    # The Alembic configuration is built from the package directory, not from a checkout's
    # alembic.ini, so an installed runas can migrate its own database.
    assert (migrate.MIGRATIONS_DIR / "env.py").is_file()
    head = migrate.head_revision()
    assert list((migrate.MIGRATIONS_DIR / "versions").glob(f"{head}_*.py"))
