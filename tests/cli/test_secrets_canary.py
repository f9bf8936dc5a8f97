"""Secrets never leave runas in clear (domain.md §11, promise 5).

Canary secrets — unique random strings — are planted through the CLI for every account type and
every secret channel, then every read command and secret update runs. The canaries, in clear and
in the encodings a careless line of code would use (base64, hex, URL-encoding), must then be
absent from everything runas wrote: its output, its log, and the database (the SQLite file bytes,
and every row of every table on both backends).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import make_url

from support.cli import Cli
from support.db import every_row

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INSTANCE_A = "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"
PROFILE = "Contoso.SQL.MonitoringProfile"


class Canaries:
    """Fresh canary secrets, remembered so that every one of them can be searched for."""

    def __init__(self) -> None:
        self.planted: list[bytes] = []
        #: the random part of each canary, searched for on its own: it survives any encoding
        #: that keeps ASCII letters and digits (JSON, URL-encoding, repr, escaping)
        self.cores: list[bytes] = []

    def text(self, label: str) -> str:
        # The punctuation makes the URL-encoded and JSON forms differ from the raw one.
        core = secrets.token_hex(12)
        value = f"cAnArY:{label}:{core} +/=&%é"
        self.planted.append(value.encode())
        self.cores.append(core.encode())
        return value

    def blob(self, label: str) -> bytes:
        core = secrets.token_hex(12).encode()
        value = b"\x00\xffBIN:" + label.encode() + b":" + core + b"\x01"
        self.planted.append(value)
        self.cores.append(core)
        return value

    def forms(self) -> set[bytes]:
        out: set[bytes] = set()
        for raw in self.planted:
            out |= _forms(raw)
        for core in self.cores:
            out |= _core_forms(core)
        return out


def _forms(raw: bytes) -> set[bytes]:
    forms = {
        raw,
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        raw.hex().encode(),
        raw.hex().upper().encode(),
        urllib.parse.quote(raw).encode(),
        urllib.parse.quote_plus(raw).encode(),
    }
    try:
        decoded = raw.decode()
    except UnicodeDecodeError:
        pass
    else:
        forms.add(json.dumps(decoded).strip('"').encode())
        forms.add(repr(decoded).strip("'").encode())
    return forms


def _core_forms(core: bytes) -> set[bytes]:
    """The core as it appears inside an encoding of a larger text that holds it (a JSON
    document of secrets, say): in clear, as hex, and as base64 at each of the three alignments
    (only the characters that depend on the core alone are kept)."""
    forms = {core, core.hex().encode(), core.hex().upper().encode()}
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * pad + core)
            forms.add(encoded[4 if pad else 0 : -4])
    return forms


def _leaks(forms: Iterable[bytes], haystack: bytes) -> list[bytes]:
    return sorted(f for f in forms if f in haystack)


def _table_dump(db_url: str) -> bytes:
    """Every row of every table (alembic's included), values rendered as text or raw bytes."""
    parts: list[bytes] = []
    for rows in every_row(db_url).values():
        for row in rows:
            for value in row:
                if isinstance(value, bytes | bytearray | memoryview):
                    parts.append(bytes(value))
                else:
                    parts.append(str(value).encode())
                    parts.append(repr(value).encode())
    return b"\n".join(parts)


def _sqlite_files(db_url: str) -> bytes:
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite":
        return b""
    path = Path(str(url.database))
    return b"".join(
        p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def test_leak_search_finds_every_encoding() -> None:
    """The detector itself: a search that never matches would make every test below pass."""
    canaries = Canaries()
    secret = canaries.text("self").encode()
    for encoded in (
        secret,
        base64.b64encode(secret),
        secret.hex().encode(),
        urllib.parse.quote(secret).encode(),
        json.dumps(secret.decode()).encode(),
    ):
        assert _leaks(canaries.forms(), b"log line: " + encoded + b" end")
    # inside an encoded document, at any offset
    for prefix in (b"", b"{", b'{"', b'{"p'):
        document = prefix + json.dumps({"password": secret.decode()}).encode()
        for encoded in (base64.b64encode(document), document.hex().encode()):
            assert _leaks(canaries.forms(), encoded), prefix
    assert not _leaks(canaries.forms(), b"nothing to see here")


def _plant_every_type(cli: Cli, canaries: Canaries, tmp_path: Path) -> list[str]:
    """One account of every type, each secret given through the channel users would use."""

    def stdin(name: str, *args: str) -> None:
        cli.ok("account", "add", name, *args, "--stdin", stdin=canaries.text(name) + "\n")

    def stdin_json(name: str, values: dict[str, str], *args: str) -> None:
        cli.ok("account", "add", name, *args, "--stdin-json", stdin=json.dumps(values))

    stdin("c-windows", "--type", "windows", "--domain", "corp.contoso.com", "--user", "sqlmon")
    stdin("c-action", "--type", "action", "--domain", "corp.contoso.com", "--user", "agent")
    stdin("c-basic", "--type", "basic", "--user", "web")
    stdin("c-digest", "--type", "digest", "--user", "web")
    stdin("c-simple", "--type", "simple", "--user", "sa")
    stdin("c-community", "--type", "community-string")
    stdin("c-unix-mon", "--type", "unix-monitoring", "--user", "mon", "--elevation", "sudo")
    stdin("c-unix-pw", "--type", "unix-maintenance", "--user", "ops", "--elevation", "sudo")

    cert = tmp_path / "cert.bin"
    cert.write_bytes(canaries.blob("binary"))
    cli.ok("account", "add", "c-binary", "--type", "binary", "--secret-file", f"data={cert}")

    stdin_json(
        "c-snmpv3",
        {"auth_key": canaries.text("auth"), "priv_key": canaries.text("priv")},
        "--type", "snmpv3", "--user", "snmp", "--auth-protocol", "SHA-256",
        "--priv-protocol", "AES",
    )  # fmt: skip
    key = tmp_path / "id_ed25519"
    key.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + canaries.blob("ssh") + b"\n")
    stdin_json(
        "c-unix-key",
        {"passphrase": canaries.text("passphrase")},
        "--type", "unix-maintenance", "--user", "ops", "--elevation", "privileged",
        "--secret-file", f"ssh_key={key}",
    )  # fmt: skip
    stdin_json(
        "c-unix-su",
        {"password": canaries.text("unix-su-pw"), "su_password": canaries.text("su")},
        "--type", "unix-maintenance", "--user", "ops", "--elevation", "su",
    )  # fmt: skip
    return [
        "c-windows", "c-action", "c-basic", "c-digest", "c-simple", "c-community", "c-unix-mon",
        "c-unix-pw", "c-binary", "c-snmpv3", "c-unix-key", "c-unix-su",
    ]  # fmt: skip


def _read_everything(cli: Cli, accounts: list[str]) -> None:
    for json_flag in ((), ("--json",)):
        cli.ok("account", "list", *json_flag)
        for name in accounts:
            cli.ok("account", "show", name, *json_flag)
        for name in ("c-windows", "c-simple", "c-action"):
            cli.ok("distribution", "get", name, *json_flag)
            cli.ok("distribution", "suggest", name, *json_flag)
        cli.ok("profile", "list", *json_flag)
        cli.ok("profile", "show", PROFILE, *json_flag)
        cli.ok("profile", "show", "System.DefaultActionAccount", *json_flag)
        for workflow in ("Contoso.SQL.DatabaseDiscovery", "Contoso.SQL.InstanceAvailability"):
            cli.ok("explain", "--workflow", workflow, "--object", INSTANCE_A, *json_flag)
        cli.ok("explain", "--profile", PROFILE, "--object", INSTANCE_A, *json_flag)
        for computer in ("a.contoso.com", "b.contoso.com"):
            cli.ok("config", "show", computer, *json_flag)
        cli.ok("key", "list", *json_flag)
        cli.ok("pack", "list", *json_flag)
        cli.ok("pack", "show", "Contoso.SQL", *json_flag)
        cli.ok("object", "list", *json_flag)
        cli.ok("object", "show", INSTANCE_A, *json_flag)
        cli.ok("group", "list", *json_flag)
        cli.ok("account", "types", *json_flag)
    cli.ok("pack", "show", "Contoso.SQL", "--yaml")


def _assert_no_leak(cli: Cli, canaries: Canaries) -> None:
    forms = canaries.forms()
    places = {
        "CLI output": "\n".join(cli.outputs).encode(),
        "log file": (cli.data_dir / "runas.log").read_bytes(),
        "database rows": _table_dump(cli.db_url),
        "SQLite files": _sqlite_files(cli.db_url),
    }
    found = {where: _leaks(forms, blob) for where, blob in places.items()}
    assert not any(found.values()), f"canary secrets leaked: {found}"
    # The places searched are not empty: the test looked where runas writes.
    assert places["log file"]
    assert places["database rows"]
    assert cli.outputs


def test_canary_secrets_never_leave_in_clear(cli: Cli, tmp_path: Path) -> None:
    canaries = Canaries()
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    accounts = _plant_every_type(cli, canaries, tmp_path)

    cli.ok("profile", "associate", PROFILE, "c-windows", "--object", INSTANCE_A)
    cli.ok("profile", "associate", PROFILE, "c-simple")
    cli.ok("profile", "associate", "System.DefaultActionAccount", "c-action")
    cli.ok("distribution", "set", "c-windows", "--more-secure", "--computer", "a.contoso.com")
    cli.ok("distribution", "set", "c-simple", "--less-secure")
    cli.ok("distribution", "suggest", "c-simple", "--apply")

    # New secret versions, through each channel.
    for name in ("c-windows", "c-basic", "c-community", "c-unix-mon"):
        cli.ok("account", "update", name, "--new-secret", "--stdin", stdin=canaries.text(name))
    cli.ok(
        "account", "update", "c-snmpv3", "--stdin-json",
        stdin=json.dumps({"auth_key": canaries.text("auth2"), "priv_key": canaries.text("priv2")}),
    )  # fmt: skip
    cli.ok(
        "account", "update", "c-unix-su", "--stdin-json",
        stdin=json.dumps({"password": canaries.text("pw2"), "su_password": canaries.text("su2")}),
    )  # fmt: skip
    cert = tmp_path / "cert2.bin"
    cert.write_bytes(canaries.blob("binary2"))
    cli.ok("account", "update", "c-binary", "--secret-file", f"data={cert}")
    # Public changes decrypt the current version to validate it: nothing of it may surface.
    for name in accounts:
        cli.ok("account", "update", name, "--description", f"checked {name}")

    # Refused input that carries a secret: the refusal must not echo it.
    leaked_flag = canaries.text("flag")
    cli.fails("account", "add", "x", "--type", "basic", "--user", "u", "--password", leaked_flag)
    cli.fails("account", "add", "x", "--type", "basic", "--user", "u", f"--password={leaked_flag}")
    cli.fails("account", "update", "c-basic", "--password", leaked_flag)
    cli.fails(
        "account", "add", "x", "--type", "basic", "--user", "u", "--stdin-json",
        stdin=json.dumps({"community": canaries.text("wrong-name")}),
    )  # fmt: skip
    cli.fails(
        "account", "add", "x", "--type", "snmpv3", "--user", "u", "--stdin-json",
        stdin=json.dumps({"auth_key": canaries.text("no-proto")}),
    )  # fmt: skip
    # a new version holding a password and a passphrase but no key: refused by validation
    cli.fails(
        "account", "update", "c-unix-key", "--stdin-json",
        stdin=json.dumps({"password": canaries.text("both"), "passphrase": canaries.text("pp")}),
    )  # fmt: skip
    cli.fails("account", "add", "c-basic", "--type", "basic", "--user", "u", "--stdin",
              stdin=canaries.text("duplicate"))  # fmt: skip
    cli.fails("account", "add", "x", "--type", "snmpv3", "--user", "u", "--auth-protocol", "SHA",
              "--stdin", stdin="short")  # fmt: skip

    # Rotation re-wraps every data key. Every version is still stored: reading now shows
    # whatever any version could leak.
    cli.ok("key", "rotate", "--json")
    cli.ok("key", "rotate")
    _read_everything(cli, accounts)
    _assert_no_leak(cli, canaries)


def _runas_script() -> Path:
    script = Path(sys.executable).parent / "runas"
    assert script.exists(), f"the runas console script is not installed next to {sys.executable}"
    return script


def _process_view(pid: int, expect: bytes) -> bytes:
    """The command line and environment of a running process, once it has exec'd (Linux)."""
    proc_dir = Path(f"/proc/{pid}")
    if not proc_dir.exists():
        return b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cmdline = (proc_dir / "cmdline").read_bytes()
        if expect in cmdline:
            return cmdline + (proc_dir / "environ").read_bytes()
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never showed {expect!r} in its command line")


def test_console_script_takes_the_secret_on_stdin_never_on_the_command_line(
    sqlite_cli: Cli,
) -> None:
    cli = sqlite_cli
    canary = Canaries().text("subprocess")
    argv = [str(_runas_script()), "account", "add", "sub", "--type", "simple", "--user", "sa",
            "--stdin"]  # fmt: skip
    env = {**os.environ, "RUNAS_DATA_DIR": str(cli.data_dir), "RUNAS_DATABASE_URL": cli.db_url}
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as proc:
        # While it runs (it waits for its standard input), what other users can see of it.
        visible = _process_view(proc.pid, b"account\x00add\x00sub")
        out, err = proc.communicate(canary.encode() + b"\n", timeout=60)
    assert proc.returncode == 0, err.decode()
    assert not any(canary in a for a in argv)
    assert canary.encode() not in visible
    assert canary.encode() not in out + err
    show = cli.ok("account", "show", "sub", "--json")
    assert json.loads(show.out)["secret_version"] == 1
    assert canary not in show.out


def test_console_script_refuses_a_password_flag_without_echoing_it(sqlite_cli: Cli) -> None:
    canary = Canaries().text("flag")
    env = {
        **os.environ,
        "RUNAS_DATA_DIR": str(sqlite_cli.data_dir),
        "RUNAS_DATABASE_URL": sqlite_cli.db_url,
    }
    base = [str(_runas_script()), "account", "add", "flagged", "--type", "simple", "--user", "sa"]
    for flag in (["--password", canary], [f"--password={canary}"]):
        done = subprocess.run(
            [*base, *flag], capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL
        )
        assert done.returncode == 1
        lines = done.stderr.decode().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("runas: error: --password is not accepted"), lines[0]
        assert canary.encode() not in done.stdout + done.stderr
        assert b"Traceback" not in done.stderr
    sqlite_cli.fails("account", "show", "flagged")  # nothing was created
    assert canary.encode() not in (sqlite_cli.data_dir / "runas.log").read_bytes()
