"""Fixtures shared by the whole suite.

Databases — each test gets a fresh, fully migrated database of its own:

* ``db_url``: parametrized over SQLite and PostgreSQL (test ids ``[sqlite]`` / ``[postgres]``;
  the PostgreSQL case carries the ``postgres`` marker, so ``-m "not postgres"`` runs SQLite only
  and never starts a server).
* ``database``: a :class:`runas.storage.database.Database` on ``db_url``, disposed afterwards.
* ``sqlite_url`` / ``postgres_url``: one backend only.
* ``empty_db_url``: a database with no schema at all (for migration tests), both backends.

The migrations run once per backend per test session into a template (a file for SQLite, a
``TEMPLATE`` database for PostgreSQL); a test's database is a copy, which takes milliseconds.
The PostgreSQL cluster is started on first use and shared by the session (one per xdist worker).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from runas.storage import migrate
from runas.storage.database import Database, sqlite_url_for
from support.cli import Cli
from support.postgres import PostgresCluster
from support.server import serve

POSTGRES_TEMPLATE = "runas_template"

# Property tests explore new examples on every developer run; CI replays a fixed sequence so a
# submission is not failed by a counterexample unrelated to it (print_blob makes any failure
# reproducible with @reproduce_failure).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _migrate(url: str) -> None:
    db = Database(url)
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's throwaway PostgreSQL cluster (started on first use)."""
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_template(postgres_cluster: PostgresCluster) -> str:
    """Name of a database migrated to head, to be copied (never connected to by tests)."""
    postgres_cluster.execute(f'CREATE DATABASE "{POSTGRES_TEMPLATE}" TEMPLATE template0')
    _migrate(postgres_cluster.url(POSTGRES_TEMPLATE))
    return POSTGRES_TEMPLATE


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster, postgres_template: str) -> Iterator[str]:
    """URL of a fresh migrated PostgreSQL database, dropped after the test."""
    name = postgres_cluster.create_database(template=postgres_template)
    try:
        yield postgres_cluster.url(name)
    finally:
        postgres_cluster.drop_database(name)


# -- SQLite --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head, to be copied."""
    directory = tmp_path_factory.mktemp("sqlite-template")
    _migrate(sqlite_url_for(directory))
    path = directory / "runas.db"
    # Every connection is closed, so SQLite has checkpointed and removed the WAL: the main file
    # alone is the whole database.
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a fresh migrated SQLite database in the test's ``tmp_path``."""
    directory = tmp_path / "sqlite"
    directory.mkdir()
    shutil.copyfile(sqlite_template, directory / "runas.db")
    return sqlite_url_for(directory)


# -- both ----------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """URL of a fresh migrated database; the test runs once per backend."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    """A :class:`Database` on a fresh migrated database; disposed after the test."""
    db = Database(db_url)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a database with no tables at all, on each backend."""
    if request.param == "sqlite":
        directory = tmp_path / "empty"
        directory.mkdir()
        yield sqlite_url_for(directory)
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    name = cluster.create_database(prefix="empty")
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


# -- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli(
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli_mode: str,
    request: pytest.FixtureRequest,
) -> Cli:
    """The ``runas`` CLI on an initialised management group, on SQLite and on PostgreSQL;
    in modules marked ``cli_modes("local", "remote")`` also as the client of a real server."""
    runner = Cli(tmp_path / "runas-data", db_url, monkeypatch, capsys)
    runner.ok("init", "--name", "test")
    if cli_mode == "remote":
        serve(runner, request)
    return runner


@pytest.fixture
def sqlite_cli(
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """The CLI on SQLite only, for behaviour that does not depend on the database."""
    runner = Cli(tmp_path / "runas-data", sqlite_url, monkeypatch, capsys)
    runner.ok("init", "--name", "test")
    return runner


# -- the CLI, local and remote ---------------------------------------------------------------
#
# A module marked ``pytestmark = pytest.mark.cli_modes("local", "remote")`` runs each test that
# uses ``cli`` twice: once in-process on the data directory, once as the client of a real
# ``runas server`` process on the same data directory and database (test ids ``[local-…]`` /
# ``[remote-…]``; remote cases carry the ``server`` marker, so ``-m "not server"`` skips them).


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cli_modes(*modes): run the module's CLI tests in these modes (local, remote)"
    )
    config.addinivalue_line("markers", "server: starts a real runas server process")
    config.addinivalue_line("markers", "agents: starts real runas agent processes")
    # asyncssh (2.24.1) names cryptography's DSA classes when it is imported, and cryptography
    # 51 deprecates DSA with a warning on that access: with filterwarnings = error, a fresh
    # virtualenv (the newest cryptography) could not even collect the ssh probe's tests. The
    # ssh probe never offers or accepts DSA keys; only this one warning is let through.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:DSA is deprecated:cryptography.utils.CryptographyDeprecationWarning",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("cli_modes")
    if marker is None or "cli_mode" not in metafunc.fixturenames:
        return
    metafunc.parametrize(
        "cli_mode",
        [
            pytest.param(mode, id=mode, marks=[pytest.mark.server] if mode == "remote" else [])
            for mode in marker.args
        ],
        indirect=True,
    )


@pytest.fixture
def cli_mode(request: pytest.FixtureRequest) -> str:
    """How ``cli`` runs: "local" unless the module asks for more (see ``cli_modes``)."""
    mode: str = getattr(request, "param", "local")
    return mode
