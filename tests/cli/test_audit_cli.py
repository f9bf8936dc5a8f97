"""``runas audit list`` and ``runas audit verify`` as an administrator uses them: what each
command recorded, the filters, a verdict on a trail edited behind runas's back, and no secret
in any record."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from runas.cli.commands.audit import parse_since
from runas.errors import InvalidInput
from runas.storage.database import Database
from runas.storage.tables import AuditRow
from support.cli import Cli
from support.db import every_row

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
LOCAL_ACTOR = "test:admin"  # what the Cli fixture sets as RUNAS_ACTOR

#: the same tests, in-process and as the client of a real server
pytestmark = pytest.mark.cli_modes("local", "remote")


@contextmanager
def db_session(cli: Cli) -> Iterator[Session]:
    db = Database(cli.db_url)
    try:
        with db.session() as s:
            yield s
    finally:
        db.dispose()


def records(cli: Cli, *args: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(cli.ok("audit", "list", "--json", *args).out)
    return out


def populate(cli: Cli) -> int:
    """Five changes; returns the seq of the last record before them."""
    base = records(cli, "--limit", "1")[-1]["seq"]
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    cli.ok("account", "add", "sql", "--type", "simple", "--user", "sa", "--stdin", stdin="pw\n")
    cli.ok("profile", "associate", PROFILE, "sql")
    cli.ok("distribution", "set", "sql", "--more-secure", "--computer", "a.contoso.com")
    return base


def test_init_is_recorded(cli: Cli) -> None:
    got = [(r["seq"], r["action"], r["target"], r["actor"], r["source"]) for r in records(cli)]
    assert got[:2] == [
        (1, "pack:import", "runas.system", LOCAL_ACTOR, "local"),
        (2, "mg:init", "test", LOCAL_ACTOR, "local"),
    ]


def test_each_command_is_recorded_with_actor_action_target_and_source(cli: Cli) -> None:
    base = populate(cli)
    rows = [r for r in records(cli) if r["seq"] > base]
    assert [(r["seq"] - base, r["action"], r["target"]) for r in rows] == [
        (1, "pack:import", "Contoso.SQL"),
        (2, "discovery:submit", "Contoso.SQL.InstanceDiscovery"),
        (3, "account:create", "sql"),
        (4, "association:create", f"{PROFILE}/sql/all"),
        (5, "distribution:set", "sql"),
    ]
    assert {(r["actor"], r["outcome"]) for r in rows} == {(cli.actor, "success")}
    sources = {r["source"] for r in rows}
    assert sources == {"local"} if cli.server_url is None else "local" not in sources
    assert rows[4]["details"] == {
        "mode": "more-secure",
        "previous_mode": "more-secure",
        "added": ["a.contoso.com"],
        "removed": [],
    }
    assert set(rows[0]) == {
        "seq",
        "at",
        "actor",
        "source",
        "action",
        "target",
        "outcome",
        "details",
        "hash",
    }

    table = cli.ok("audit", "list").out
    assert "account:create" in table
    assert "association:create" in table
    assert cli.actor in table


def test_a_refused_command_records_no_change(cli: Cli) -> None:
    base = records(cli, "--limit", "1")[-1]["seq"]
    cli.fails("account", "add", "x", "--type", "basic", "--user", "u", "--stdin", stdin="")
    cli.fails("profile", "associate", PROFILE, "nobody")
    new = [r for r in records(cli) if r["seq"] > base]
    if cli.server_url is None:
        assert new == []
    else:  # the server records the refused attempts, as failures
        assert new
        assert all(r["outcome"] != "success" for r in new)


def test_list_filters(cli: Cli) -> None:
    started = datetime.now(UTC) - timedelta(microseconds=1)
    base = populate(cli)
    since = started.isoformat()

    def seqs(*args: str) -> list[int]:
        return [r["seq"] - base for r in records(cli, "--since", since, *args)]

    assert seqs() == [1, 2, 3, 4, 5]
    assert seqs("--action", "pack") == [1]
    assert seqs("--action", "account:create") == [3]
    assert seqs("--action", "account:create%") == []  # a prefix, not a pattern
    assert seqs("--target", "sql") == [3, 5]
    assert seqs("--target", PROFILE) == [4]
    assert seqs("--actor", cli.actor) == [1, 2, 3, 4, 5]
    assert seqs("--actor", "someone-else") == []
    assert seqs("--limit", "2") == [4, 5]
    assert seqs("--action", "pack", "--target", "runas.system") == []
    assert [r["seq"] for r in records(cli, "--limit", "2")] == [base + 4, base + 5]
    assert records(cli, "--since", "1h", "--action", "mg:init")[0]["target"] == "test"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert records(cli, "--since", tomorrow) == []
    assert cli.ok("audit", "list", "--actor", "someone-else").out.strip() == "(none)"


def test_since_takes_durations_and_dates() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T10:00+02:00", now) == datetime(2024, 5, 1, 8, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="--since 'yesterday'"):
        parse_since("yesterday", now)


def test_bad_since_is_one_line(cli: Cli) -> None:
    assert "--since '3 days'" in cli.fails("audit", "list", "--since", "3 days")


def test_verify_passes_on_an_intact_trail(cli: Cli) -> None:
    base = populate(cli)
    out = cli.ok("audit", "verify").out
    assert out.startswith(f"audit trail intact: {base + 5} record(s)")
    result = json.loads(cli.ok("audit", "verify", "--json").out)
    assert result["ok"] is True
    assert result["records"] == base + 5
    assert result["first_broken"] is None
    assert result["head_hash"] == records(cli)[-1]["hash"]


def _tamper(cli: Cli, how: str, base: int) -> None:
    with db_session(cli) as s:
        if how == "edited":
            s.execute(update(AuditRow).where(AuditRow.seq == base + 3).values(target="other"))
        elif how == "deleted":
            s.execute(delete(AuditRow).where(AuditRow.seq == base + 2))
        elif how == "reordered":
            s.execute(update(AuditRow).where(AuditRow.seq == base + 3).values(seq=-1))
            s.execute(update(AuditRow).where(AuditRow.seq == base + 4).values(seq=base + 3))
            s.execute(update(AuditRow).where(AuditRow.seq == -1).values(seq=base + 4))
        elif how == "truncated":
            s.execute(delete(AuditRow).where(AuditRow.seq >= base + 4))
        else:  # pragma: no cover
            raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "broken_at", "reason"),
    [
        ("edited", 3, "its content does not match its hash (the record was altered)"),
        ("deleted", 2, "record {n} is missing"),
        (
            "reordered",
            3,
            "it does not follow record {p} (records were reordered, replaced or removed)",
        ),
        ("truncated", 4, "records {n} to {last} are missing (the chain head is at {last})"),
    ],
)
def test_verify_names_the_first_broken_record(
    cli: Cli, how: str, broken_at: int, reason: str
) -> None:
    base = populate(cli)
    _tamper(cli, how, base)
    n = base + broken_at
    expected = f"audit trail broken at record {n}: " + reason.format(n=n, p=n - 1, last=base + 5)
    assert cli.fails("audit", "verify") == expected
    result = cli("audit", "verify", "--json")
    assert result.code == 1
    verdict = json.loads(result.out)
    assert (verdict["ok"], verdict["first_broken"]) == (False, n)


def test_no_secret_reaches_the_audit_trail(cli: Cli, tmp_path: Path) -> None:
    cores: list[str] = []

    def canary(label: str) -> str:
        core = secrets.token_hex(12)
        cores.append(core)
        return f"cAnArY:{label}:{core}"

    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("account", "add", "w", "--type", "windows", "--domain", "corp.contoso.com",
           "--user", "svc", "--stdin", stdin=canary("windows") + "\n")  # fmt: skip
    cli.ok("account", "add", "c", "--type", "community-string", "--stdin",
           stdin=canary("community") + "\n")  # fmt: skip
    cli.ok("account", "add", "s", "--type", "snmpv3", "--user", "snmp", "--auth-protocol",
           "SHA-256", "--priv-protocol", "AES", "--stdin-json",
           stdin=json.dumps({"auth_key": canary("auth"), "priv_key": canary("priv")}))  # fmt: skip
    cert = tmp_path / "cert.bin"
    cert.write_bytes(canary("binary").encode())
    cli.ok("account", "add", "b", "--type", "binary", "--secret-file", f"data={cert}")
    for name in ("w", "c", "s", "b"):
        cli.ok("account", "update", name, "--description", "checked")  # decrypts to validate
    cli.ok("account", "update", "w", "--new-secret", "--stdin", stdin=canary("windows2"))
    new_keys = {"auth_key": canary("auth2"), "priv_key": canary("priv2")}
    cli.ok("account", "update", "s", "--stdin-json", stdin=json.dumps(new_keys))
    cli.ok("account", "remove", "c")
    cli.ok("key", "rotate")

    rows = every_row(cli.db_url)["audit_log"]
    dump = "\n".join(repr(row) for row in rows)
    actions = [r["action"] for r in records(cli)]
    assert actions.count("account:secret-use") == 4  # one per validated public update
    assert "account:secret-version" in actions
    assert "key:rotate" in actions
    for core in cores:
        for form in (core, core.encode().hex(), base64.b64encode(core.encode()).decode()[:-4]):
            assert form not in dump, f"a canary secret reached the audit trail as {form!r}"
    assert "cAnArY" not in dump
    assert cli.ok("audit", "verify").out.startswith("audit trail intact")
