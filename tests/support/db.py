"""Read back everything a management group's database holds, for tests that must prove
nothing changed (bad input) or nothing leaked (canary secrets)."""

from __future__ import annotations

from sqlalchemy import inspect, text

from runas.storage.database import Database


def every_row(db_url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (alembic's included), by table name."""
    db = Database(db_url)
    tables: dict[str, list[tuple[object, ...]]] = {}
    try:
        with db.engine.connect() as conn:
            for table in sorted(inspect(conn).get_table_names()):
                query = text(f'SELECT * FROM "{table}"')  # noqa: S608 - names from the inspector
                tables[table] = [tuple(row) for row in conn.execute(query)]
    finally:
        db.dispose()
    return tables
