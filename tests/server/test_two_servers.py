"""Two real ``runas server`` processes on one PostgreSQL database (issue 3, item 7).

The management group is made the way an operator makes one: ``runas init`` on the database
with a data directory whose keyring both servers share, the first administrator with the local
``runas user add … --password-stdin``, then a login over HTTP. Each server is a process of its
own on a loopback port; nothing is shared between them but the database and the keyring file.

What holds:

* both serve every request, with the same answers, whichever one issued the token;
* a change made through one (an account, an association, distribution, a token revoked) is
  served by the other within one second;
* concurrent edits of one account or one profile are refused with 409 rather than lost;
* the audit chain stays intact when both servers write to it at the same time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from server.conftest import DISCOVERY, INSTANCE_A, PACK, PROFILE
from support.fleet import run_cli
from support.server import ServerProcess, login_token

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.server]

ADMIN = "admin"
PASSWORD = "two servers, one database"
#: the issue's promise: a change through one server is served by the other within this
VISIBLE_WITHIN_S = 1.0
INSTANCE_B = "Contoso.SQL.Instance:b.contoso.com;MSSQLSERVER"
PROBLEM = "application/problem+json"
CONFLICT = "urn:runas:problem:conflict"


def _runas(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = run_cli(args, env=env, stdin=stdin, timeout=120)
    assert done.returncode == 0, f"runas {' '.join(args)}: {done.stderr}"
    return done.stdout


def _account(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "windows",
        "fields": {"domain": "contoso.com", "user": name},
        "secrets": {"password": f"pw-{name}"},
    }


@dataclass
class Group:
    """One management group, two servers, an administrator's client on each."""

    a: httpx.Client
    b: httpx.Client
    servers: list[ServerProcess]

    def logs(self) -> str:
        return "".join(s.output() for s in self.servers)


@pytest.fixture
def group(postgres_url: str, tmp_path: Path) -> Iterator[Group]:
    data_dir = tmp_path / "runas-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNAS_")}
    env.update(RUNAS_DATA_DIR=str(data_dir), RUNAS_DATABASE_URL=postgres_url)
    _runas(env, "init", "--name", "two-servers")
    _runas(env, "user", "add", ADMIN, "--role", "administrator", "--password-stdin",
           stdin=PASSWORD + "\n")  # fmt: skip
    servers: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            log = tmp_path / f"server-{name}.log"
            servers.append(ServerProcess.start(data_dir=data_dir, db_url=postgres_url, log=log))
        # One login, through server a: the session token is a row in the shared database.
        token = login_token(servers[0].url, ADMIN, PASSWORD)
        headers = {"Authorization": f"Bearer {token}"}
        with (
            httpx.Client(base_url=servers[0].url, headers=headers, timeout=30) as a,
            httpx.Client(base_url=servers[1].url, headers=headers, timeout=30) as b,
        ):
            _seed(a)
            yield Group(a, b, servers)
    finally:
        for server in servers:
            server.stop()


def _seed(c: httpx.Client) -> None:
    r = c.post("/api/v1/packs", json={"text": PACK, "source": "contoso-sql.yaml"})
    assert r.status_code == 201, r.text
    r = c.post("/api/v1/discovery", json=yaml.safe_load(DISCOVERY))
    assert r.status_code == 200, r.text
    for name in ("sql-a", "sql-b"):
        assert c.post("/api/v1/accounts", json=_account(name)).status_code == 201
    r = c.post(
        f"/api/v1/profiles/{PROFILE}/associations",
        json={"account": "sql-a", "target_kind": "object", "target": INSTANCE_A},
    )
    assert r.status_code == 201, r.text


def _served_within(check: Callable[[], bool]) -> float:
    """Seconds until ``check`` holds, polling; fails if it does not within the promise."""
    start = time.monotonic()
    deadline = start + VISIBLE_WITHIN_S
    while not check():
        assert time.monotonic() < deadline, f"not served within {VISIBLE_WITHIN_S} s"
        time.sleep(0.01)
    return time.monotonic() - start


def _all_at_once(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """Send the requests from threads released together, so they overlap on the servers."""
    barrier = threading.Barrier(len(calls))
    results: list[httpx.Response | BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as err:  # re-raised below, in the test's thread
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    out: list[httpx.Response] = []
    for r in results:
        if not isinstance(r, httpx.Response):
            raise AssertionError(f"request failed: {r!r}")
        out.append(r)
    return out


def _is_conflict(r: httpx.Response) -> bool:
    return (
        r.status_code == 409
        and r.headers["content-type"].startswith(PROBLEM)
        and r.json()["type"] == CONFLICT
    )


def _explained_account(c: httpx.Client, obj: str) -> str | None:
    r = c.get("/api/v1/explain", params={"object": obj, "profile": PROFILE})
    assert r.status_code == 200, r.text
    account = r.json()["account"]
    return None if account is None else str(account["name"])


def _verify(c: httpx.Client) -> dict[str, Any]:
    r = c.get("/api/v1/audit/verify")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- (a) both serve every request ---------------------------------------------------------


def test_both_servers_serve_every_request_with_the_same_answers(group: Group) -> None:
    paths = [
        "/api/v1/me",
        "/api/v1/accounts",
        "/api/v1/accounts/sql-a",
        "/api/v1/distribution/sql-a",
        "/api/v1/profiles",
        f"/api/v1/profiles/{PROFILE}",
        f"/api/v1/explain?object={INSTANCE_A}&profile={PROFILE}",
        "/api/v1/computers/a.contoso.com/config",
        "/api/v1/packs",
        "/api/v1/objects",
        "/api/v1/keys",
        "/api/v1/users",
        "/api/v1/audit/verify",
    ]
    for path in paths:
        ra, rb = group.a.get(path), group.b.get(path)
        assert (ra.status_code, rb.status_code) == (200, 200), (path, ra.text, rb.text)
        assert ra.json() == rb.json(), path
        assert ra.headers.get("etag") == rb.headers.get("etag"), path
    # Changes go through either: b creates, a changes, b removes.
    assert group.b.post("/api/v1/accounts", json=_account("via-b")).status_code == 201
    r = group.a.patch("/api/v1/accounts/via-b", json={"description": "through a"})
    assert r.status_code == 200, r.text
    assert group.b.delete("/api/v1/accounts/via-b").status_code == 200
    for c in (group.a, group.b):
        assert c.get("/readyz").status_code == 200
        assert c.get("/api/v1/accounts/via-b").status_code == 404
    assert '"internal error"' not in group.logs()


# -- (b) a change through one is served by the other within a second ------------------------


def test_a_change_through_one_server_is_served_by_the_other_within_a_second(
    group: Group,
) -> None:
    a, b = group.a, group.b
    # Warm both servers' views first, so that a cache, if any, holds the old state.
    assert b.get("/api/v1/accounts/fresh").status_code == 404
    assert _explained_account(a, INSTANCE_B) != "fresh"
    assert b.get("/api/v1/distribution/sql-b").json()["computers"] == []

    assert a.post("/api/v1/accounts", json=_account("fresh")).status_code == 201
    _served_within(lambda: b.get("/api/v1/accounts/fresh").status_code == 200)

    r = b.post(
        f"/api/v1/profiles/{PROFILE}/associations",
        json={"account": "fresh", "target_kind": "object", "target": INSTANCE_B},
    )
    assert r.status_code == 201, r.text
    _served_within(lambda: _explained_account(a, INSTANCE_B) == "fresh")

    r = a.put("/api/v1/distribution/sql-b", json={"mode": "more-secure", "add": ["b.contoso.com"]})
    assert r.status_code == 200, r.text
    _served_within(
        lambda: b.get("/api/v1/distribution/sql-b").json()["computers"] == ["b.contoso.com"]
    )

    r = b.delete(
        f"/api/v1/profiles/{PROFILE}/associations",
        params={"account": "fresh", "target_kind": "object", "target": INSTANCE_B},
    )
    assert r.status_code == 200, r.text
    _served_within(lambda: _explained_account(a, INSTANCE_B) != "fresh")


def test_a_token_revoked_through_one_server_is_refused_by_the_other_within_a_second(
    group: Group,
) -> None:
    token = login_token(group.servers[1].url, ADMIN, PASSWORD)
    headers = {"Authorization": f"Bearer {token}"}
    # Used on both (so a server that remembers principals has this one in memory)...
    assert group.a.get("/api/v1/me", headers=headers).status_code == 200
    assert group.b.get("/api/v1/me", headers=headers).status_code == 200
    # ...ended through b, refused by a.
    assert group.b.post("/api/v1/logout", headers=headers).status_code in (200, 204)
    _served_within(lambda: group.a.get("/api/v1/me", headers=headers).status_code == 401)


# -- (c) no lost update ----------------------------------------------------------------------


def test_concurrent_edits_of_one_account_one_wins_the_other_gets_409(group: Group) -> None:
    a, b = group.a, group.b
    for round_ in range(5):
        etag = a.get("/api/v1/accounts/sql-b").headers["etag"]
        ra, rb = _all_at_once(
            partial(a.patch, "/api/v1/accounts/sql-b", json={"description": f"a{round_}"},
                    headers={"If-Match": etag}),
            partial(b.patch, "/api/v1/accounts/sql-b", json={"description": f"b{round_}"},
                    headers={"If-Match": etag}),
        )  # fmt: skip
        statuses = sorted((ra.status_code, rb.status_code))
        assert statuses == [200, 409], (ra.text, rb.text)
        winner, loser = (ra, rb) if ra.status_code == 200 else (rb, ra)
        assert _is_conflict(loser), loser.text
        # The winner's change is what both servers now serve; the loser's is nowhere.
        for c in (a, b):
            shown = c.get("/api/v1/accounts/sql-b")
            assert shown.json()["description"] == winner.json()["description"]
            assert shown.headers["etag"] == winner.headers["etag"] != etag
    # Without If-Match, truly concurrent edits of different fields both land: each one is
    # applied to the row as the other left it (the row is locked while it changes).
    ra, rb = _all_at_once(
        lambda: a.patch("/api/v1/accounts/sql-b", json={"description": "both"}),
        lambda: b.patch("/api/v1/accounts/sql-b", json={"fields": {"user": "renamed"}}),
    )
    assert (ra.status_code, rb.status_code) == (200, 200), (ra.text, rb.text)
    final = b.get("/api/v1/accounts/sql-b").json()
    assert final["description"] == "both"
    assert final["fields"]["user"] == "renamed"


def _associations(c: httpx.Client) -> set[tuple[str, str | None]]:
    r = c.get(f"/api/v1/profiles/{PROFILE}")
    assert r.status_code == 200, r.text
    return {(x["account"], x["target"]) for x in r.json()["associations"]}


def test_concurrent_association_changes_on_one_profile_are_never_lost(group: Group) -> None:
    a, b = group.a, group.b
    # With If-Match (the profile's ETag): of two changes based on the same version, one wins.
    etag = b.get(f"/api/v1/profiles/{PROFILE}").headers["etag"]
    ra, rb = _all_at_once(
        lambda: a.post(
            f"/api/v1/profiles/{PROFILE}/associations",
            json={"account": "sql-a", "target_kind": "object", "target": INSTANCE_B},
            headers={"If-Match": etag},
        ),
        lambda: b.post(
            f"/api/v1/profiles/{PROFILE}/associations",
            json={"account": "sql-b", "target_kind": "object", "target": INSTANCE_B},
            headers={"If-Match": etag},
        ),
    )
    assert sorted((ra.status_code, rb.status_code)) == [201, 409], (ra.text, rb.text)
    winner, loser = (ra, rb) if ra.status_code == 201 else (rb, ra)
    assert _is_conflict(loser), loser.text
    expected = {("sql-a", INSTANCE_A), (winner.json()["account"], INSTANCE_B)}
    assert _associations(a) == _associations(b) == expected
    assert b.get(f"/api/v1/profiles/{PROFILE}").headers["etag"] != etag
    # A stale If-Match on a removal is refused too, and removes nothing.
    r = a.request(
        "DELETE",
        f"/api/v1/profiles/{PROFILE}/associations",
        params={"account": "sql-a", "target_kind": "object", "target": INSTANCE_A},
        headers={"If-Match": etag},
    )
    assert _is_conflict(r), r.text
    assert _associations(b) == expected

    # Without If-Match: changes sent at the same time through both servers either land or are
    # refused with 409, never half-applied and never silently dropped.
    for i in range(6):
        name = f"acc-{i}"
        assert a.post("/api/v1/accounts", json=_account(name)).status_code == 201
    for i in range(0, 6, 2):
        first, second = f"acc-{i}", f"acc-{i + 1}"
        path = f"/api/v1/profiles/{PROFILE}/associations"
        ra, rb = _all_at_once(
            partial(a.post, path, json={"account": first, "target_kind": "object",
                                        "target": INSTANCE_A}),
            partial(b.post, path, json={"account": second, "target_kind": "object",
                                        "target": INSTANCE_A}),
        )  # fmt: skip
        for r, name in ((ra, first), (rb, second)):
            assert r.status_code == 201 or _is_conflict(r), r.text
            if r.status_code == 201:
                expected.add((name, INSTANCE_A))
        assert _associations(a) == _associations(b) == expected
    assert _verify(a)["ok"]


# -- (d) the audit chain under concurrent changes from both servers --------------------------


def test_the_audit_chain_stays_intact_under_concurrent_changes_from_both_servers(
    group: Group,
) -> None:
    a, b = group.a, group.b
    before = _verify(a)["records"]
    per_server = 6

    def work(c: httpx.Client, tag: str) -> Callable[[], httpx.Response]:
        def run() -> httpx.Response:
            last: httpx.Response | None = None
            for i in range(per_server):
                name = f"{tag}-{i}"
                last = c.post("/api/v1/accounts", json=_account(name))
                assert last.status_code == 201, last.text
                last = c.patch(f"/api/v1/accounts/{name}", json={"description": tag})
                assert last.status_code == 200, last.text
                last = c.put(
                    f"/api/v1/distribution/{name}", json={"mode": "more-secure",
                                                          "add": ["a.contoso.com"]}
                )  # fmt: skip
                assert last.status_code == 200, last.text
            assert last is not None
            return last

        return run

    _all_at_once(work(a, "a1"), work(b, "b1"), work(a, "a2"), work(b, "b2"))
    for c in (a, b):
        verdict = _verify(c)
        assert verdict["ok"], verdict
        # Every change wrote its record: 4 workers x 6 accounts x 3 changes.
        assert verdict["records"] - before >= 4 * per_server * 3
    assert _verify(a) == _verify(b)
    created = a.get("/api/v1/audit", params={"action": "account:create", "limit": 1000})
    assert created.status_code == 200, created.text
    names = {r["target"] for r in created.json()}
    assert {f"{t}-{i}" for t in ("a1", "b1", "a2", "b2") for i in range(per_server)} <= names
