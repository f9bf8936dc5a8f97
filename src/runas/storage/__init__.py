"""runas.storage: the operational database.

* :mod:`runas.storage.tables` — the schema (SQLAlchemy models ``<Thing>Row``).
* :mod:`runas.storage.database` — :class:`Database`: engine and unit-of-work sessions, built from
  a URL (SQLite or PostgreSQL).
* :mod:`runas.storage.migrate` — Alembic, driven in code: upgrade, current revision, drift check.
"""

from runas.storage.database import Database, mask_url, sqlite_url_for

__all__ = ["Database", "mask_url", "sqlite_url_for"]
