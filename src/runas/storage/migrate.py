"""Schema migrations of the operational database, driven through Alembic's API.

Alembic is configured here, in code, from the package's own ``migrations`` directory: no
``alembic.ini`` is needed, so this works the same from a checkout and from an installed wheel.

* :func:`upgrade` brings a database to the newest schema (in one transaction on PostgreSQL).
* :func:`current_revision` / :func:`is_at_head` tell where a database stands.
* :func:`check_drift` compares the models (:mod:`runas.storage.tables`) with a migrated database;
  the test suite fails when it is not empty, so a model change without its migration is caught.
* :func:`alembic_config` gives a ``Config`` for the rest of ``alembic.command`` (for instance
  ``command.revision(alembic_config(db), message=..., autogenerate=True)`` to write the next
  migration).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from runas.storage.database import Database
from runas.storage.tables import metadata

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(db: Database, connection: Connection | None = None) -> Config:
    """An Alembic configuration for ``db``; migrations run on ``connection`` when given."""
    config = Config()
    # ConfigParser interpolation: a literal % in the path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    else:  # env.py opens its own connection (e.g. for ``command.revision``)
        url = db.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextmanager
def _transaction(db: Database) -> Iterator[Config]:
    with db.engine.begin() as connection:
        yield alembic_config(db, connection)


def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate ``db`` up to ``revision`` (the newest by default)."""
    with _transaction(db) as config:
        command.upgrade(config, revision)


def downgrade(db: Database, revision: str) -> None:
    """Migrate ``db`` down to ``revision`` (``"base"`` removes every table). Tests and recovery
    only: a downgrade drops data."""
    with _transaction(db) as config:
        command.downgrade(config, revision)


def head_revision() -> str:
    """The newest revision the package knows."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if head is None:  # pragma: no cover - the package ships at least one revision
        raise RuntimeError("no migration found in the runas package")
    return str(head)


def current_revision(db: Database) -> str | None:
    """The revision ``db`` is at, or ``None`` for a database never migrated."""
    with db.engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    return None if revision is None else str(revision)


def is_at_head(db: Database) -> bool:
    return current_revision(db) == head_revision()


def check_drift(db: Database) -> list[str]:
    """Differences between the models and the (migrated) database ``db``; ``[]`` when none.

    Each difference is one readable line, e.g. ``add_column accounts.nickname``.
    """
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = compare_metadata(context, metadata)
    return [_describe(diff) for diff in diffs]


def _describe(diff: Any) -> str:
    # compare_metadata yields ("add_table", Table), ("add_column", schema, table, Column),
    # ("add_index", Index), ("add_fk", ForeignKeyConstraint)... and, for changes to a column,
    # lists of ("modify_type", schema, table, column, info, old, new) tuples.
    if isinstance(diff, list):
        return "; ".join(_describe(item) for item in diff)
    op, *args = diff
    if op.startswith("modify_"):
        _schema, table, column, _info, old, new = args
        return f"{op} {table}.{column}: {old!r} -> {new!r}"
    if op in ("add_column", "remove_column"):
        _schema, table, column = args
        return f"{op} {table}.{column.name}"
    return " ".join([op, *(_name_of(arg) for arg in args)])


def _name_of(obj: Any) -> str:
    name = getattr(obj, "name", None)
    table = getattr(obj, "table", None)
    if table is not None and hasattr(table, "name"):
        return f"{table.name}.{name}"
    return str(name) if name is not None else repr(obj)


__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "check_drift",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_at_head",
    "upgrade",
]
