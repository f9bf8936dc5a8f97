"""Initialise (or upgrade) a management group: data directory, keyring, schema, system pack."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import func, inspect, select

from runas.domain.model import SYSTEM_PACK
from runas.errors import KeyringError
from runas.packs import builtin_system_pack, compare_versions
from runas.runtime import Runtime
from runas.services import audit, lookup, packs
from runas.services.audit import AuditAction
from runas.storage import migrate
from runas.storage.tables import PackRow, SecretVersionRow

NAME_KEY = "management_group"


class InitResult(BaseModel):
    management_group: str
    data_dir: str
    database: str
    keyring: str
    keyring_created: bool
    schema_revision: str | None
    system_pack: str


def init(rt: Runtime, management_group: str | None = None) -> InitResult:
    settings = rt.settings
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    source = rt.keyring_source()
    created = False
    if source.file is not None and not source.file.path.exists():
        stored = _stored_secret_versions(rt)
        if stored:
            # A new keyring could open none of them; the usual cause is a keyring that was
            # moved or not restored with the database.
            raise KeyringError(
                f"keyring {source.file.path} does not exist, but the database holds {stored} "
                "secret version(s) wrapped by another keyring: restore that keyring (or point "
                "RUNAS_KEYRING_FILE at it) instead of creating a new one"
            )
        source.file.create(rt.clock())
        created = True
    rt.keyring()  # fail now, not at the first secret, if the keyring is unusable
    migrate.upgrade(rt.database)
    system = builtin_system_pack()
    with rt.unit_of_work() as uow:
        row = uow.session.get(PackRow, SYSTEM_PACK)
        if row is None or compare_versions(system.pack.version, row.version) > 0:
            packs.import_pack(uow, system.text, system.source)
        name = lookup.setting(uow.session, NAME_KEY)
        if name is None or management_group:
            name = management_group or settings.management_group
            lookup.set_setting(uow.session, NAME_KEY, name)
        system_version = uow.session.get(PackRow, SYSTEM_PACK)
        assert system_version is not None
        version = system_version.version
        audit.record(
            uow,
            AuditAction.MG_INIT,
            str(name),
            {"keyring_created": created, "system_pack": version},
        )
    return InitResult(
        management_group=str(name),
        data_dir=str(settings.data_dir),
        database=rt.database.display_url,
        keyring=source.description,
        keyring_created=created,
        schema_revision=migrate.current_revision(rt.database),
        system_pack=version,
    )


def _stored_secret_versions(rt: Runtime) -> int:
    """How many secret versions an existing database holds (0 for a new or empty one)."""
    with rt.database.engine.connect() as conn:
        if not inspect(conn).has_table(SecretVersionRow.__tablename__):
            return 0
    with rt.database.session() as session:
        return session.scalar(select(func.count()).select_from(SecretVersionRow)) or 0


def db_upgrade(rt: Runtime) -> str | None:
    migrate.upgrade(rt.database)
    return migrate.current_revision(rt.database)
