"""Agents against one management server: configuration polls per second (unchanged and
changed), and how long one credential change takes to reach every agent.

    .venv/bin/python bench/agents.py                 # 1,000 and 10,000 agents, ~3-5 minutes
    .venv/bin/python bench/agents.py --agents 1000   # one size

What it does, the operator's way where it matters:

1. a management group in a temporary directory (SQLite): the Contoso SQL packs, N computers
   each hosting one SQL instance, one Run As account associated with the monitoring profile for
   every instance and distributed *less secure* (to every agent), so every agent's bundle
   holds one secret;
2. N agents enrolled and approved through the same service calls the API makes (each with its
   own HPKE key, TLS key and a certificate issued by the group's CA);
3. ``runas server --agent-port 0`` as its own process; simulated agents are asyncio TLS
   connections presenting each agent's own client certificate (real mutual TLS), speaking
   HTTP/1.1 by hand so the load generator stays light;
4. **changed path**: every agent connects (TLS handshake with its certificate) and fetches
   its configuration once (resolution, decryption, HPKE sealing, audit record); agents keep
   their connection between polls, as ``runas agent run`` does;
5. **unchanged path**: 256 agents on kept-alive connections poll with ``If-None-Match`` for
   5 s (304s);
6. **steady state**: every agent polls once more (304). Real agents poll every 30 s
   (``poll_interval``), well inside the listener's 120 s keep-alive, so when an administrator
   changes a credential every agent already holds its connection; the first phase takes
   longer than the keep-alive at 10,000 agents, and this round restores that state (not
   timed);
7. **credential change**: the account's password changes (``runas account update --stdin``);
   every agent polls until it holds the new epoch; the time from the change to the last agent.

``--workdir DIR`` keeps the management group and the agents' certificates in DIR and reuses
them when run again with the same size (a run takes its own copy: the change is not left
behind), which saves the set-up (~75 s at 10,000 agents) when iterating.

Sealing against raw HPKE is ``bench/seal.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CLI = [
    sys.executable,
    "-c",
    "import sys; from runas.cli.main import main; sys.argv[0] = 'runas'; main()",
]
PROFILE = "Contoso.SQL.MonitoringProfile"


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class SimAgent:
    agent_id: str
    context: ssl.SSLContext
    etag: str = ""
    epoch: int = -1
    #: the agent's kept-alive connection, as a real agent keeps it between polls
    streams: Streams | None = None


def runas(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([*CLI, *args], env=env, input=stdin, capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"runas {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def make_group(env: dict[str, str], work: Path, n: int) -> None:
    runas(env, "init", "--name", "bench")
    runas(env, "pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    runas(env, "pack", "import", str(EXAMPLES / "packs" / "contoso-sql-agent.yaml"))
    objects: list[dict[str, object]] = []
    for i in range(n):
        c = f"c{i:05d}.contoso.com"
        objects.append({"class": "System.Computer", "key": {"name": c}})
        objects.append(
            {
                "class": "Contoso.SQL.Instance",
                "host": f"System.Computer:{c}",
                "key": {"instance": "MSSQLSERVER"},
                "properties": {"environment": "test"},
            }
        )
    payload = work / "discovery.json"
    payload.write_text(json.dumps({"source": "bench", "objects": objects}))
    runas(env, "discovery", "submit", str(payload))
    runas(env, "account", "add", "sql", "--type", "windows", "--domain", "contoso.com",
          "--user", "sqlmon", "--stdin", stdin="bench-password-1\n")  # fmt: skip
    runas(env, "profile", "associate", PROFILE, "sql")
    runas(env, "distribution", "set", "sql", "--less-secure")


def enrol_all(env: dict[str, str], n: int) -> dict[str, tuple[bytes, bytes]]:
    """Enrol and approve n agents in-process (the calls the API makes); their cert and key."""
    from runas.crypto.ca import generate_tls_key, make_csr, tls_key_to_pem
    from runas.crypto.sealing import AgentKeyPair
    from runas.runtime import Runtime
    from runas.services import agents
    from runas.settings import load_settings
    from runas.storage.tables import AgentRow

    os.environ.update({k: v for k, v in env.items() if k.startswith("RUNAS_")})
    rt = Runtime(load_settings(), env=env)
    out: dict[str, tuple[bytes, bytes]] = {}
    keys: dict[str, bytes] = {}
    ids = [f"c{i:05d}.contoso.com" for i in range(n)]
    for start in range(0, n, 250):
        with rt.unit_of_work(actor="bench", source="bench") as uow:
            for agent_id in ids[start : start + 250]:
                tls = generate_tls_key()
                keys[agent_id] = tls_key_to_pem(tls)
                req = agents.EnrolRequest(
                    agent_id=agent_id,
                    hpke_public_key=base64.b64encode(
                        AgentKeyPair.generate().public_bytes()
                    ).decode(),
                    csr=make_csr(tls, agent_id).decode(),
                    token=None,
                    agent_version="bench",
                )
                agents.enrol(uow, req)
        with rt.unit_of_work(actor="bench", source="bench") as uow:
            for agent_id in ids[start : start + 250]:
                agents.approve(uow, agent_id)
        with rt.unit_of_work(actor="bench", source="bench", read_only=True) as uow:
            for agent_id in ids[start : start + 250]:
                row = uow.session.get(AgentRow, agent_id)
                if row is None or not row.cert_pem:
                    raise SystemExit(f"{agent_id} was not approved")
                out[agent_id] = (row.cert_pem.encode(), keys[agent_id])
    rt.close()
    return out


def contexts(creds: dict[str, tuple[bytes, bytes]], ca: Path, work: Path) -> list[SimAgent]:
    sims: list[SimAgent] = []
    d = work / "certs"
    d.mkdir(exist_ok=True)
    for agent_id, (cert, key) in creds.items():
        cf, kf = d / f"{agent_id}.crt", d / f"{agent_id}.key"
        cf.write_bytes(cert)
        kf.write_bytes(key)
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cf), str(kf))
        sims.append(SimAgent(agent_id, ctx))
    return sims


async def get_config(
    host: str, port: int, agent: SimAgent, streams: Streams | None = None
) -> tuple[int, Streams]:
    """One poll on the agent's connection; a connection the server closed (idle longer than
    its keep-alive) is opened again, as the real agent's HTTP client does."""
    if streams is not None:
        try:
            return await _poll(agent, streams)
        except (ConnectionError, asyncio.IncompleteReadError, IndexError):
            streams[1].close()
    streams = await asyncio.open_connection(
        host, port, ssl=agent.context, server_hostname="localhost"
    )
    return await _poll(agent, streams)


async def _poll(agent: SimAgent, streams: Streams) -> tuple[int, Streams]:
    reader, writer = streams
    headers = "GET /agent/v1/config HTTP/1.1\r\nHost: localhost\r\n"
    if agent.etag:
        headers += f"If-None-Match: {agent.etag}\r\n"
    writer.write((headers + "\r\n").encode())
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "etag":
            agent.etag = value.strip()
    body = await reader.readexactly(length) if length else b""
    if status == 200:
        agent.epoch = json.loads(body)["epoch"]
    return status, streams


async def fetch_all(host: str, port: int, sims: list[SimAgent], *, until_epoch: int | None = None,
                    concurrency: int = 128) -> float:  # fmt: skip
    """Every agent polls on its kept-alive connection (opened by its first poll) until it
    holds ``until_epoch`` (or once). Returns seconds."""
    queue: asyncio.Queue[SimAgent] = asyncio.Queue()
    for s in sims:
        queue.put_nowait(s)
    started = time.perf_counter()

    async def worker() -> None:
        while True:
            try:
                s = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            status, s.streams = await get_config(host, port, s, s.streams)
            if status not in (200, 304):
                raise SystemExit(f"{s.agent_id}: HTTP {status}")
            if until_epoch is not None and s.epoch < until_epoch:
                queue.put_nowait(s)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def unchanged(host: str, port: int, sims: list[SimAgent], seconds: float) -> float:
    count = 0
    stop = time.perf_counter() + seconds

    async def loop(s: SimAgent) -> None:
        nonlocal count
        while time.perf_counter() < stop:
            status, s.streams = await get_config(host, port, s, s.streams)
            if status != 304:
                raise SystemExit(f"{s.agent_id}: expected 304, got {status}")
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(s) for s in sims))
    return count / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profilers(out: Path | None, server_pid: int) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` of the server (GIL holder) and of this load generator, as raw folded
    stacks in ``out`` (``--profile``); py-spy must be on PATH."""
    if out is None:
        return []
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for name, pid, extra in (("server", server_pid, ["--gil"]), ("loadgen", os.getpid(), [])):
        cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
               "--output", str(out / f"{name}.txt"), "--nonblocking", *extra]  # fmt: skip
        runs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return runs


async def scenario(
    env: dict[str, str],
    host: str,
    port: int,
    sims: list[SimAgent],
    profile: tuple[Path | None, int] = (None, 0),
) -> tuple[float, float, float, float]:
    """One event loop for every phase: the agents' connections live across them."""
    first = await fetch_all(host, port, sims)
    rate_unchanged = await unchanged(host, port, sims[:256], 5.0)
    # Steady state: agents poll every 30 s, so each holds a live connection (see above).
    await fetch_all(host, port, sims)
    epoch = max(s.epoch for s in sims)
    spies = profilers(*profile)
    cpu_before = cpu_seconds(profile[1])
    changed_at = time.perf_counter()
    await asyncio.to_thread(runas, env, "account", "update", "sql", "--stdin",
                            stdin="bench-password-2\n")  # fmt: skip
    propagate = await fetch_all(host, port, sims, until_epoch=epoch + 1)
    total = time.perf_counter() - changed_at
    server_cpu = cpu_seconds(profile[1]) - cpu_before
    print(f"  server CPU during the change: {server_cpu:.1f} s"
          f" ({1000 * server_cpu / len(sims):.1f} ms per agent)")  # fmt: skip
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    for s in sims:
        if s.streams is not None:
            s.streams[1].close()
    return first, rate_unchanged, total, propagate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", default="1000,10000")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep and reuse the set-up here")
    parser.add_argument("--profile", type=Path, help="py-spy the change phase into this directory")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for n in (int(x) for x in args.agents.split(",")):
        run(n, args.keep, args.workdir, args.profile)


def prepared(n: int, saved: Path | None) -> tuple[Path, dict[str, tuple[bytes, bytes]], float]:
    """A fresh work directory holding a management group of n agents and their credentials:
    built now, or copied from ``saved`` (built there first if it is not yet)."""
    work = Path(tempfile.mkdtemp(prefix=f"runas-bench-agents-{n}-"))
    store = saved / str(n) if saved is not None else None
    if store is not None and (store / "creds.json").exists():
        shutil.copytree(store / "data", work / "data")
        raw = json.loads((store / "creds.json").read_text())
        return work, {k: (v[0].encode(), v[1].encode()) for k, v in raw.items()}, 0.0
    env = _env(work)
    t = time.perf_counter()
    make_group(env, work, n)
    creds = enrol_all(env, n)
    setup = time.perf_counter() - t
    if store is not None:
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(work / "data", store / "data")
        raw = {k: [c.decode(), key.decode()] for k, (c, key) in creds.items()}
        (store / "creds.json").write_text(json.dumps(raw))
    return work, creds, setup


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNAS_")}
    env.update(RUNAS_DATA_DIR=str(work / "data"), PYTHONUNBUFFERED="1")
    return env


def run(n: int, keep: bool, saved: Path | None, profile: Path | None) -> None:
    work, creds, setup = prepared(n, saved)
    env = _env(work)
    try:
        with (work / "server.log").open("wb") as log:
            server = subprocess.Popen(
                [*CLI, "server", "--port", "0", "--agent-port", "0"],
                env=env, stdout=subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert server.stdout is not None
        lines = [server.stdout.readline().decode().strip() for _ in range(2)]
        agent_url = lines[1].rsplit(" ", 1)[-1]
        host, port = agent_url.removeprefix("https://").rsplit(":", 1)
        try:
            ca = work / "data" / "agent-listener" / "agent-ca.pem"
            sims = contexts(creds, ca, work)
            first, rate_unchanged, total, propagate = asyncio.run(
                scenario(env, host, int(port), sims, (profile, server.pid))
            )
        finally:
            server.terminate()
            server.wait(30)
        print(f"agents: {n:,} (set-up {setup:.0f} s{', reused' if not setup else ''})")
        print(
            f"  first configuration, every agent (changed path): {first:.1f} s"
            f" = {n / first:,.0f} configs/s"
        )
        print(f"  unchanged polls (304), 256 kept-alive agents:   {rate_unchanged:,.0f} polls/s")
        print(
            f"  credential change reaches every agent:          {total:.1f} s"
            f" (polling {propagate:.1f} s)"
        )
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
