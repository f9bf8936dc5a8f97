"""The operational database behaves the same on SQLite and PostgreSQL: constraints hold,
transactions are all-or-nothing, and a bad URL is a one-line error that hides the password."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from runas.errors import ConfigurationError
from runas.storage.database import Database, mask_url, sqlite_url_for
from runas.storage.tables import (
    AccountRow,
    AssociationRow,
    DiscoveryClaimRow,
    ObjectRow,
    PackRow,
    ProfileRow,
    SecretVersionRow,
    WorkflowRow,
)

ADMIN = "corp\\admin"


def _account(name: str = "SQL sa") -> AccountRow:
    return AccountRow(name=name, type="simple", created_by=ADMIN, modified_by=ADMIN)


def _profile(profile_id: str = "SQL.Monitoring") -> ProfileRow:
    return ProfileRow(id=profile_id, display_name="SQL monitoring", context_class="SQL.Instance")


def _object(full_name: str, host: ObjectRow | None = None) -> ObjectRow:
    return ObjectRow(
        class_id="System.Computer" if host is None else "SQL.Instance",
        full_name=full_name,
        key_values=[full_name],
        computer_name="db1.corp.contoso.com",
        host=host,
    )


def _count(session: Session, model: type[object]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


# -- transactions --------------------------------------------------------------------------


def test_session_commits_on_success(database: Database) -> None:
    with database.session() as session:
        session.add(_account())

    with database.session() as session:
        assert session.scalars(select(AccountRow.name)).all() == ["SQL sa"]


def test_exception_in_session_rolls_everything_back(database: Database) -> None:
    def fail_half_way() -> None:
        with database.session() as session:
            session.add(_account("first"))
            session.flush()  # the row reached the database inside the transaction
            session.add(_account("second"))
            session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_half_way()

    with database.session() as session:
        assert _count(session, AccountRow) == 0


def test_savepoint_rolls_back_only_its_own_work(database: Database) -> None:
    with database.session() as session:
        session.add(_account("kept"))
        with pytest.raises(IntegrityError), session.begin_nested():
            session.add(_account("kept"))  # duplicate name, inside the savepoint
        session.add(_account("also kept"))

    with database.session() as session:
        assert set(session.scalars(select(AccountRow.name))) == {"kept", "also kept"}


def test_objects_read_in_a_session_stay_readable_after_it(database: Database) -> None:
    with database.session() as session:
        account = _account()
        session.add(account)

    assert account.name == "SQL sa"
    assert account.id >= 1


def test_concurrent_read_then_write_transactions_both_commit(database: Database) -> None:
    # On SQLite a transaction that reads and then writes fails at once with "database is locked"
    # if another connection wrote meanwhile, unless transactions take the write lock up front
    # (BEGIN IMMEDIATE): then the second one waits for the first instead.
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def add_account(name: str) -> None:
        try:
            start.wait(timeout=5)
            with database.session() as session:
                _count(session, AccountRow)
                time.sleep(0.1)
                session.add(_account(name))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=add_account, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    with database.session() as session:
        assert _count(session, AccountRow) == 2


# -- keys and constraints ------------------------------------------------------------------


def test_ids_autoincrement(database: Database) -> None:
    with database.session() as session:
        first, second = _account("one"), _account("two")
        session.add_all([first, second])
        session.flush()
        assert first.id >= 1
        assert second.id > first.id


def test_associated_account_cannot_be_deleted(database: Database) -> None:
    with database.session() as session:
        account = _account()
        session.add_all([account, _profile()])
        session.flush()
        session.add(
            AssociationRow(
                profile_id="SQL.Monitoring",
                account_id=account.id,
                target_kind="all",
                created_by=ADMIN,
            )
        )
        account_id = account.id

    with pytest.raises(IntegrityError), database.session() as session:
        session.execute(delete(AccountRow).where(AccountRow.id == account_id))

    with pytest.raises(IntegrityError), database.session() as session:
        session.execute(delete(ProfileRow).where(ProfileRow.id == "SQL.Monitoring"))

    with database.session() as session:
        assert _count(session, AccountRow) == 1
        assert _count(session, ProfileRow) == 1


def test_association_must_name_existing_account_and_profile(database: Database) -> None:
    with pytest.raises(IntegrityError), database.session() as session:
        session.add(
            AssociationRow(
                profile_id="No.Such.Profile", account_id=4242, target_kind="all", created_by=ADMIN
            )
        )


def test_deleting_an_object_deletes_what_it_hosts_and_their_claims(database: Database) -> None:
    with database.session() as session:
        computer = _object("db1.corp.contoso.com")
        instance = _object("SQL.Instance:db1.corp.contoso.com;MSSQLSERVER", host=computer)
        database_ = _object("SQL.Database:db1.corp.contoso.com;MSSQLSERVER;sales", host=instance)
        other = _object("web1.corp.contoso.com")
        session.add_all([computer, instance, database_, other])
        session.flush()
        for obj in (computer, instance, database_, other):
            session.add(DiscoveryClaimRow(source="discovery.sql", object_id=obj.id))
        computer_id = computer.id

    with database.session() as session:
        # Core delete: the database does the cascading, not the ORM.
        session.execute(delete(ObjectRow).where(ObjectRow.id == computer_id))

    with database.session() as session:
        assert session.scalars(select(ObjectRow.full_name)).all() == ["web1.corp.contoso.com"]
        assert _count(session, DiscoveryClaimRow) == 1


def test_deleting_an_account_deletes_its_secret_versions(database: Database) -> None:
    with database.session() as session:
        account = _account()
        account.secret_versions.append(
            SecretVersionRow(
                version=1, kek_id="kek-1", wrapped_dek=b"d", ciphertext=b"c", created_by=ADMIN
            )
        )
        session.add(account)

    with database.session() as session:
        session.delete(session.scalars(select(AccountRow)).one())

    with database.session() as session:
        assert _count(session, SecretVersionRow) == 0


def test_deleting_a_pack_deletes_its_content(database: Database) -> None:
    with database.session() as session:
        pack = PackRow(
            id="sql", version="1.0", display_name="SQL", source_text="id: sql\n", imported_by=ADMIN
        )
        pack.workflows.append(
            WorkflowRow(
                id="sql.discovery",
                kind="discovery",
                display_name="Discover SQL",
                target_class="System.Computer",
                probe_type="command",
            )
        )
        pack.profiles.append(_profile())
        session.add(pack)

    with database.session() as session:
        session.execute(delete(PackRow).where(PackRow.id == "sql"))

    with database.session() as session:
        assert _count(session, WorkflowRow) == 0
        assert _count(session, ProfileRow) == 0


def test_account_names_are_unique(database: Database) -> None:
    with database.session() as session:
        session.add(_account("SQL sa"))

    with pytest.raises(IntegrityError), database.session() as session:
        session.add(_account("SQL sa"))


def test_object_full_names_are_unique(database: Database) -> None:
    with database.session() as session:
        session.add(_object("db1.corp.contoso.com"))

    with pytest.raises(IntegrityError), database.session() as session:
        session.add(_object("db1.corp.contoso.com"))


@pytest.mark.parametrize(
    ("target_kind", "target"),
    [("all", ""), ("class", "SQL.Instance"), ("object", "SQL.Instance:db1;MSSQLSERVER")],
)
def test_the_same_association_cannot_be_made_twice(
    database: Database, target_kind: str, target: str
) -> None:
    with database.session() as session:
        account = _account()
        session.add_all([account, _profile()])
        session.flush()
        account_id = account.id

    def associate() -> None:
        with database.session() as session:
            session.add(
                AssociationRow(
                    profile_id="SQL.Monitoring",
                    account_id=account_id,
                    target_kind=target_kind,
                    target=target,
                    created_by=ADMIN,
                )
            )

    associate()
    with pytest.raises(IntegrityError):
        associate()


@pytest.mark.parametrize(
    ("target_kind", "target"),
    [("all", "SQL.Instance"), ("class", ""), ("everything", "")],
)
def test_association_target_must_fit_its_kind(
    database: Database, target_kind: str, target: str
) -> None:
    with database.session() as session:
        account = _account()
        session.add_all([account, _profile()])
        session.flush()
        account_id = account.id

    with pytest.raises(IntegrityError), database.session() as session:
        session.add(
            AssociationRow(
                profile_id="SQL.Monitoring",
                account_id=account_id,
                target_kind=target_kind,
                target=target,
                created_by=ADMIN,
            )
        )


def test_distribution_mode_is_checked(database: Database) -> None:
    account = _account()
    account.distribution_mode = "everywhere"
    with pytest.raises(IntegrityError), database.session() as session:
        session.add(account)


# -- optimistic concurrency ----------------------------------------------------------------


def test_row_version_is_bumped_by_every_update(database: Database) -> None:
    with database.session() as session:
        account = _account()
        session.add(account)
        session.flush()
        assert account.row_version == 1
        account.description = "sa login of the sales instance"
        session.flush()
        assert account.row_version == 2


def test_update_of_a_stale_row_is_refused(database: Database) -> None:
    with database.session() as session:
        profile = _profile()
        session.add(profile)

    # Someone else changes the profile after we read it...
    with database.session() as session:
        session.execute(
            update(ProfileRow)
            .where(ProfileRow.id == "SQL.Monitoring")
            .values(display_name="theirs", row_version=ProfileRow.row_version + 1)
        )

    # ...so our change, made to the version we read, must not overwrite theirs.
    def save_mine() -> None:
        with database.session() as session:
            mine = session.merge(profile, load=False)  # as read: row_version 1
            mine.display_name = "mine"

    with pytest.raises(StaleDataError):
        save_mine()

    with database.session() as session:
        assert session.get_one(ProfileRow, "SQL.Monitoring").display_name == "theirs"


# -- types ---------------------------------------------------------------------------------


def test_timestamps_are_utc_and_timezone_aware(database: Database) -> None:
    paris_noon = datetime(2030, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with database.session() as session:
        account = _account()
        account.expires_at = paris_noon
        session.add(account)

    with database.session() as session:
        stored = session.scalars(select(AccountRow)).one()
        assert stored.expires_at == paris_noon
        assert stored.expires_at is not None
        assert stored.expires_at.tzinfo == UTC
        assert stored.expires_at.hour == 10
        assert stored.created_at.tzinfo == UTC
        # Comparisons in SQL see the same instant.
        assert session.scalar(
            select(func.count())
            .select_from(AccountRow)
            .where(AccountRow.expires_at < datetime(2030, 6, 1, 10, 30, tzinfo=UTC))
        )


def test_naive_timestamps_are_refused(database: Database) -> None:
    account = _account()
    account.expires_at = datetime(2030, 6, 1, 12, 0)
    with pytest.raises(StatementError, match="naive datetime"), database.session() as session:
        session.add(account)


def test_json_columns_round_trip(database: Database) -> None:
    with database.session() as session:
        pack = PackRow(
            id="sql",
            version="1.0",
            display_name="SQL",
            source_text="",
            imported_by=ADMIN,
            references=[{"id": "runas.system", "min_version": None}],
        )
        pack.workflows.append(
            WorkflowRow(
                id="sql.task",
                kind="task",
                display_name="Restart",
                target_class="SQL.Instance",
                probe_type="command",
                probe_config={"argv": ["systemctl", "restart", "mssql"], "timeout": 30},
                schedule=None,
            )
        )
        session.add(pack)

    with database.session() as session:
        workflow = session.get_one(WorkflowRow, "sql.task")
        assert workflow.probe_config == {"argv": ["systemctl", "restart", "mssql"], "timeout": 30}
        assert workflow.pack.references == [{"id": "runas.system", "min_version": None}]
        # A missing schedule is SQL NULL, not the JSON value null.
        assert session.scalar(select(WorkflowRow.id).where(WorkflowRow.schedule.is_(None)))


def test_binary_columns_keep_every_byte(database: Database) -> None:
    blob = bytes(range(256))
    with database.session() as session:
        account = _account()
        account.secret_versions.append(
            SecretVersionRow(
                version=1, kek_id="kek-1", wrapped_dek=blob, ciphertext=blob[::-1], created_by=ADMIN
            )
        )
        session.add(account)

    with database.session() as session:
        stored = session.scalars(select(SecretVersionRow)).one()
        assert (stored.wrapped_dek, stored.ciphertext) == (blob, blob[::-1])


# -- SQLite specifics ----------------------------------------------------------------------


def test_sqlite_connections_are_configured(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        with db.engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar() == 5000
    finally:
        db.dispose()


def test_sqlite_url_for_names_runas_db_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data dir?"
    data_dir.mkdir()
    db = Database(sqlite_url_for(data_dir))
    try:
        with db.engine.connect() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.commit()
    finally:
        db.dispose()
    assert (data_dir / "runas.db").is_file()


# -- URLs and errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://runas:s3cr%21t@db.example/runas",
        "postgres://runas:s3cr%21t@db.example/runas",
        "postgresql+psycopg://runas:s3cr%21t@db.example/runas",
    ],
)
def test_postgresql_urls_use_psycopg3(url: str) -> None:
    db = Database(url)
    try:
        assert db.url.drivername == "postgresql+psycopg"
        assert db.backend == "postgresql"
        assert "s3cr" not in repr(db)
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://runas:s3cret@db.example/runas", "'mysql' databases are not supported"),
        ("postgresql+psycopg2://runas:s3cret@db.example/runas", "driver 'psycopg2'"),
        ("sqlite+aiosqlite:///x.db?password=s3cret", "driver 'aiosqlite'"),
        ("runas:s3cret@db.example", "'(not a URL)' cannot be parsed"),
        ("postgresql://runas:s3cret@db.example:port/runas", "'postgresql://…' cannot be parsed"),
    ],
)
def test_unusable_url_is_a_one_line_configuration_error_without_password(
    url: str, complaint: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Database(url)
    message = str(caught.value)
    assert complaint in message
    assert "s3cret" not in message
    assert "\n" not in message


def test_unreachable_server_is_a_configuration_error_without_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        db = Database(f"postgresql://runas:s3cret@127.0.0.1:{port}/runas?connect_timeout=2")
        try:
            with pytest.raises(ConfigurationError, match="cannot connect to database") as caught:
                db.check_connection()
        finally:
            db.dispose()
    assert "s3cret" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u:pw@h:x:y/", "postgresql://…"),
        ("u:pw@h", "(not a URL)"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
