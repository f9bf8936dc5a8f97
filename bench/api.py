"""The management server's API under load, side by side with a minimal FastAPI app (issue 3).

    apt-get install -y wrk                     # the load generator (Debian package)
    .venv/bin/python bench/api.py              # ~2 minutes; --duration 5 --clients 1,8,64

What it does, in one run on one machine:

1. makes a management group the way an operator does (``runas init``, the first administrator
   with ``runas user add --password-stdin``) on SQLite in a temporary data directory (or
   ``--database-url``), starts ``runas server`` as a process of its own, logs in, and seeds it
   through the API: the examples/ pack and discovery snapshot, a few accounts, an association;
2. starts bench/hello_app.py, served the same way (uvicorn, one process, same options);
3. drives each with ``wrk`` (a separate process, loopback only, bounded duration) at 1, 8 and
   64 concurrent clients (one wrk thread per connection) for:

   * ``GET /api/v1/accounts``
   * ``GET /api/v1/explain?object=…&workflow=…``
   * an association change: each client alternates ``POST`` and ``DELETE
     /api/v1/profiles/{id}/associations`` on an account of its own
   * ``GET /api/v1/me`` (authentication alone: what every request pays before its own work)
   * the hello app's ``GET /hello`` (``async def``) and ``GET /hello-sync`` (``def``, the
     threadpool path every runas route takes)

and prints requests/s and p99 latency per case next to the hello app's at the same
concurrency, with the ratio. Any non-2xx answer or socket error is counted and shown: a
figure with errors in it is not a throughput figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
WORKFLOW = "Contoso.SQL.InstanceAvailability"
INSTANCE_A = "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"
ADMIN = "bench-admin"
PASSWORD = "a benchmark password, long enough"
CLI = "import sys; from runas.cli.main import main; sys.argv[0] = 'runas'; main()"

#: appended to every wrk script: one machine-readable line at the end of the run
DONE_LUA = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""

#: each wrk thread (one connection) owns the account bench-<n> and alternates POST / DELETE
ASSOCIATION_LUA = r"""
local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
function init(args)
  associated = false
  account = "bench-" .. id
  body = '{"account": "' .. account .. '", "target_kind": "all"}'
  -- wrk.format does not add the -H headers to a request given its own headers
  auth = "Bearer " .. BENCH_TOKEN
end
function request()
  if not associated then
    return wrk.format("POST", "/api/v1/profiles/PROFILE/associations",
                      {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
  end
  return wrk.format("DELETE", "/api/v1/profiles/PROFILE/associations?account=" .. account
                    .. "&target_kind=all", {["Authorization"] = auth})
end
-- the next request follows from the answer to the last one (201/409: there, 200/404: gone)
function response(status, headers, body)
  if status == 201 or status == 409 then
    associated = true
  elseif status == 200 or status == 404 then
    associated = false
  end
end
"""


@dataclass
class Process:
    url: str
    popen: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(command: list[str], env: dict[str, str], log: Path) -> Process:
    """Start a server that prints ``… listening on URL`` first, and wait until it answers."""
    with log.open("ab") as err:
        popen = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=err)
    assert popen.stdout is not None
    line = popen.stdout.readline().decode().strip()
    if " listening on " not in line:
        popen.kill()
        raise SystemExit(f"{command[-1]} did not start: {line!r}; see {log}")
    url = line.rsplit(" ", 1)[-1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return Process(url, popen)
        except httpx.TransportError:
            time.sleep(0.05)
    popen.kill()
    raise SystemExit(f"{url} does not answer; see {log}")


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[Process]:
    process = start(command, env, log)
    try:
        yield process
    finally:
        process.stop()


def runas(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"runas {' '.join(args)} failed: {done.stderr.strip()}")


def seed(url: str, token: str, pool: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
        pack = (EXAMPLES / "packs" / "contoso-sql.yaml").read_text()
        r = c.post("/api/v1/packs", json={"text": pack, "source": "contoso-sql.yaml"})
        r.raise_for_status()
        snapshot = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
        c.post("/api/v1/discovery", json=snapshot).raise_for_status()
        names = [f"sql-{i:02d}" for i in range(20)] + [f"bench-{i}" for i in range(1, pool + 1)]
        for name in names:
            account = {
                "name": name,
                "type": "windows",
                "fields": {"domain": "contoso.com", "user": name},
                "secrets": {"password": f"pw-{name}"},
            }
            c.post("/api/v1/accounts", json=account).raise_for_status()
        c.post(
            f"/api/v1/profiles/{PROFILE}/associations",
            json={"account": "sql-00", "target_kind": "object", "target": INSTANCE_A},
        ).raise_for_status()
        c.put(
            "/api/v1/distribution/sql-00", json={"mode": "more-secure", "add": ["a.contoso.com"]}
        ).raise_for_status()


def dissociate_pool(url: str, token: str, clients: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
        for i in range(1, clients + 1):
            params = {"account": f"bench-{i}", "target_kind": "all"}
            r = c.delete(f"/api/v1/profiles/{PROFILE}/associations", params=params)
            if r.status_code not in (200, 404):
                r.raise_for_status()


@dataclass(frozen=True)
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(url: str, script: Path, clients: int, seconds: float, token: str | None) -> Figures:
    # The token goes in a 0600 copy of the script, never on wrk's command line or in its
    # environment (both are readable by other users of the machine).
    with_token = script.with_name(f"{script.stem}-run.lua")
    with_token.unlink(missing_ok=True)
    fd = os.open(with_token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    prefix = f'BENCH_TOKEN = "{token or ""}"\n'
    if token is not None:
        prefix += 'wrk.headers["Authorization"] = "Bearer " .. BENCH_TOKEN\n'
    with os.fdopen(fd, "w") as f:
        f.write(prefix + script.read_text())
    command = ["wrk", "-t", str(clients), "-c", str(clients), "-d", f"{seconds:g}s",
               "--timeout", "10s", "-s", str(with_token)]  # fmt: skip
    try:
        done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    finally:
        with_token.unlink(missing_ok=True)
    out = done.stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    data = json.loads(line.removeprefix("BENCH "))
    return Figures(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["non2xx"] + data["socket_errors"],
    )


def profiler(
    directory: Path | None, server: Process, label: str, clients: int, seconds: float
) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server for the length of one case (flame-graph input, one line
    per stack), or None when not asked for."""
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    name = "".join(ch if ch.isalnum() else "-" for ch in label).strip("-")
    out = directory / f"{name}-{clients}.txt"
    spy = str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "--pid", str(server.popen.pid), "--duration", str(int(seconds)),
               "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def script(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.lua"
    path.write_text(body + DONE_LUA)
    return path


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    return (
        f"{cpu}, {os.cpu_count()} CPUs; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; "
        f"wrk {wrk_version[1] if len(wrk_version) > 1 else '?'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="runas server API vs a minimal FastAPI app")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--clients", default="1,8,64", help="concurrency levels")
    parser.add_argument("--database-url", help="default: SQLite in the temporary data dir")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    parser.add_argument(
        "--cases", help="only the runas cases whose label contains one of these (comma list)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record each runas case with py-spy (in the venv) into this directory",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    levels = [int(x) for x in args.clients.split(",")]
    work = Path(tempfile.mkdtemp(prefix="runas-bench-api-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNAS_")}
    env.update(RUNAS_DATA_DIR=str(work / "data"), RUNAS_PORT="0", PYTHONUNBUFFERED="1")
    if args.database_url:
        env["RUNAS_DATABASE_URL"] = args.database_url
    print(f"machine: {machine()}")
    print(f"work dir: {work}; {args.duration:g} s per case; clients {levels}")
    try:
        runas(env, "init", "--name", "bench")
        runas(env, "user", "add", ADMIN, "--role", "administrator", "--password-stdin",
              stdin=PASSWORD + "\n")  # fmt: skip
        server_cmd = [sys.executable, "-c", CLI, "server"]
        hello_cmd = [sys.executable, str(ROOT / "bench" / "hello_app.py"), "--port", "0"]
        with (
            running(server_cmd, env, work / "server.log") as server,
            running(hello_cmd, env, work / "hello.log") as hello,
        ):
            r = httpx.post(server.url + "/api/v1/login", json={"name": ADMIN, "password": PASSWORD})
            r.raise_for_status()
            token = r.json()["token"]
            seed(server.url, token, max(levels))
            explain_query = urlencode({"object": INSTANCE_A, "workflow": WORKFLOW}, quote_via=quote)
            check = httpx.get(
                f"{server.url}/api/v1/explain?{explain_query}",
                headers={"Authorization": f"Bearer {token}"},
            )
            check.raise_for_status()
            assert check.json()["account"]["name"] == "sql-00", check.text
            get = 'wrk.method = "GET"\n'
            scripts = {
                "accounts": script(work, "accounts", get),
                "explain": script(work, "explain", get),
                "association": script(
                    work, "association", ASSOCIATION_LUA.replace("PROFILE", PROFILE)
                ),
                "me": script(work, "me", get),
                "hello": script(work, "hello", get),
            }
            runas_cases = {
                "GET /api/v1/accounts": ("/api/v1/accounts", scripts["accounts"]),
                "GET /api/v1/explain": (f"/api/v1/explain?{explain_query}", scripts["explain"]),
                "association POST/DELETE": ("/", scripts["association"]),
                "GET /api/v1/me": ("/api/v1/me", scripts["me"]),
            }
            if args.cases:
                wanted = args.cases.split(",")
                runas_cases = {k: v for k, v in runas_cases.items() if any(w in k for w in wanted)}
            hello_cases = {"hello (async)": "/hello", "hello (sync def)": "/hello-sync"}
            # Warm both up (imports, pools, caches) before anything is measured.
            wrk(hello.url + "/hello", scripts["hello"], 8, 1, None)
            wrk(server.url + "/api/v1/accounts", scripts["accounts"], 8, 1, token)
            results: dict[tuple[str, int], Figures] = {}
            for clients in levels:
                for label, path in hello_cases.items():
                    results[label, clients] = wrk(
                        hello.url + path, scripts["hello"], clients, args.duration, None
                    )
                for label, (path, lua) in runas_cases.items():
                    spy = profiler(args.profile, server, label, clients, args.duration)
                    results[label, clients] = wrk(
                        server.url + path, lua, clients, args.duration, token
                    )
                    if spy is not None:
                        spy.wait()
                    # Let the server finish what the last case left queued (a slow case at 64
                    # clients leaves up to 64 requests behind) before the next one is measured.
                    time.sleep(1)
                    if lua == scripts["association"]:
                        # A client stopped after its POST leaves an association behind,
                        # which the next run's first POST would find (409).
                        dissociate_pool(server.url, token, clients)
        report(results, levels, [*hello_cases, *runas_cases])
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(results: dict[tuple[str, int], Figures], levels: list[int], labels: list[str]) -> None:
    print()
    print("| case | clients | req/s | p50 ms | p99 ms | errors | vs hello async | vs hello sync |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label in labels:
        for clients in levels:
            f = results[label, clients]
            base = results["hello (async)", clients].rps
            base_sync = results["hello (sync def)", clients].rps
            print(
                f"| {label} | {clients} | {f.rps:,.0f} | {f.p50_ms:.1f} | {f.p99_ms:.1f} | "
                f"{f.errors} | {f.rps / base:.0%} | {f.rps / base_sync:.0%} |"
            )


if __name__ == "__main__":
    main()
