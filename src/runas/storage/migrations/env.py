"""Alembic environment of the runas operational database.

Normally driven by :mod:`runas.storage.migrate`, which passes an open connection in
``config.attributes["connection"]``. For ad-hoc use of the ``alembic`` command line, set
``sqlalchemy.url`` in the configuration (``alembic -x`` is not used).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from runas.storage.database import Database
from runas.storage.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: future migrations use batch mode (copy and move).
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("runas migrations run online only (offline SQL is not supported)")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given and sqlalchemy.url is not set")
    db = Database(url)
    try:
        with db.engine.begin() as connection:
            _run(connection)
    finally:
        db.dispose()


_main()
