"""A throwaway PostgreSQL cluster for the test suite.

``PostgresCluster.start()`` runs ``initdb`` into a fresh directory under /tmp and starts
``postgres`` listening on 127.0.0.1 only, on a free port, with durability switched off (fsync,
synchronous_commit, full_page_writes: the data is thrown away anyway) and ``trust``
authentication (loopback only, superuser ``postgres``). ``stop()`` stops it and removes the
directory. PostgreSQL refuses to run as root, so when the suite runs as root the server runs as
the ``postgres`` OS user (via ``runuser``).

Binaries are looked up under /usr/lib/postgresql/<version>/bin, newest first, or in
``$RUNAS_TEST_PG_BIN`` when set. The cluster directory goes to /dev/shm when it has room, else
/tmp (``$RUNAS_TEST_PG_DIR`` overrides).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
START_TIMEOUT_S = 30
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "timezone": "UTC",
    # Keep the WAL small: the cluster may live in memory (/dev/shm).
    "max_wal_size": "64MB",
    "min_wal_size": "32MB",
}
#: Free space wanted before putting the cluster in /dev/shm (Docker's default is only 64 MB).
_SHM_MIN_FREE = 1 << 30


class PostgresUnavailable(RuntimeError):
    """The test cluster cannot be started; the message says why and what to do."""


def find_bin_dir() -> Path:
    override = os.environ.get("RUNAS_TEST_PG_BIN")
    candidates = [override] if override else []

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (looked for initdb and pg_ctl in "
        "$RUNAS_TEST_PG_BIN and /usr/lib/postgresql/*/bin). Install them "
        "(apt-get install postgresql) or deselect these tests with -m 'not postgres'."
    )


def _parent_dir() -> str:
    """Where the cluster directory goes: ``$RUNAS_TEST_PG_DIR``, else /dev/shm when it is big
    enough (CREATE DATABASE is about ten times faster in memory than on an overlay disk), else
    /tmp. Both are world-traversable, as the ``postgres`` user needs when we run as root."""
    override = os.environ.get("RUNAS_TEST_PG_DIR")
    if override:
        return override
    shm = Path("/dev/shm")
    try:
        if (
            shm.is_dir()
            and os.access(shm, os.W_OK)
            and shutil.disk_usage(shm).free >= _SHM_MIN_FREE
        ):
            return str(shm)
    except OSError:
        pass
    return "/tmp"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class PostgresCluster:
    bin_dir: Path
    base_dir: Path
    port: int = 0
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    def url(self, dbname: str) -> str:
        """A SQLAlchemy URL for ``dbname`` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def start(cls) -> PostgresCluster:
        bin_dir = find_bin_dir()
        base_dir = Path(tempfile.mkdtemp(prefix="runas-pg-", dir=_parent_dir()))
        cluster = cls(bin_dir=bin_dir, base_dir=base_dir)
        try:
            cluster._initdb()
            cluster._start_server()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def stop(self) -> None:
        """Stop the server (if running) and remove its directory. Safe to call twice."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(
                    "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", check=False
                )
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            # The server's OS user must own its files and reach them: mkdtemp made 0700 root.
            user = pwd.getpwnam(SUPERUSER)
            os.chown(self.base_dir, user.pw_uid, user.pw_gid)
        result = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            check=False,
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def _start_server(self) -> None:
        options = [f"-c {name}={value}" for name, value in _SERVER_SETTINGS.items()]
        last_error = ""
        for _attempt in range(3):  # another process may grab the free port before we bind it
            self.port = _free_port()
            opts = " ".join(
                [*options, f"-p {self.port}", f"-c unix_socket_directories={self.base_dir}"]
            )
            result = self._run(
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                opts,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                check=False,
            )
            if result.returncode == 0:
                self._wait_until_ready()
                return
            last_error = _tail(self.log_file)
            if "Address already in use" not in last_error:
                break
        raise PostgresUnavailable(
            f"PostgreSQL did not start (pg_ctl exit {result.returncode}). "
            f"Server log tail:\n{last_error}"
        )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.conninfo(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(
                        f"PostgreSQL on port {self.port} not ready after {START_TIMEOUT_S}s: "
                        f"{exc}\nServer log tail:\n{_tail(self.log_file)}"
                    ) from None
                time.sleep(0.05)

    def _run(self, program: str, *args: str, check: bool) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        return subprocess.run(
            command,
            cwd=self.base_dir,  # the server's user may not be able to enter the caller's cwd
            capture_output=True,
            text=True,
            check=check,
            timeout=START_TIMEOUT_S + 30,
        )

    # -- databases --------------------------------------------------------------------------

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) as the superuser."""
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, template: str = "template0", prefix: str = "test") -> str:
        """Create a new database as a copy of ``template``; return its name."""
        name = f"{prefix}_{next(self._names)}"
        # FILE_COPY: copying the small template file by file beats WAL-logging every page.
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
