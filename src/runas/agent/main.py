"""The agent's main loop: identity, enrolment, configuration, workflows, reports.

::

    load_identity (data dir, keys)            ─┐
    approved? no → enrol every poll_interval   │  AgentRevoked (403 agent-removed /
    load the cached configuration (resume)     │  agent-not-approved) from any call:
    start the scheduler thread                 │  stop the workflows, erase the secrets
    loop until stop:                           │  (memory and cache), drop the certificate
      every poll_interval: GET config (ETag)   │  and go back to enrolment
        then GET tasks (runas.agent.tasks)     │
      every report_interval: POST reports     ─┘

Threads: the calling thread runs this loop (talking to the servers); one thread runs the
:class:`~runas.agent.scheduler.Scheduler` loop; its pool runs the workflows. Results go into a
bounded in-memory queue; every ``report_interval`` they are cut into reports (grouped by the
configuration epoch they ran under, at most :data:`MAX_RESULTS_PER_REPORT` each, each with a
fresh ``report_id``) and put in an outbox, sent in order. A report that could not be sent
stays in the outbox with its ``report_id`` and is sent again next time: the server stores a
report once however often it arrives. A report the server refuses with a 4xx is dropped (it
would be refused forever). Both queues are bounded; what overflows is dropped and counted in
the log, so an agent cut off from its servers for days does not run out of memory.

**Self-discovery.** On start and after each new configuration, the next report carries a
``discovery`` payload with the agent's own ``System.Computer`` object (key ``name`` = agent id;
properties ``os`` and ``domain``, both declared by the class in ``packs/builtin/system.yaml``).

Stop (``stop_event``, set by SIGTERM/SIGINT in :mod:`runas.agent.cli`): no new runs start, runs
in flight finish (each has its timeout), one last attempt sends what is queued, and the
secrets are dropped from memory. The cache stays, so the next start resumes at once.
"""

from __future__ import annotations

import collections
import logging
import os
import platform
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from runas import __version__
from runas.agent.client import AgentRevoked, ManagementClient, ServersUnavailable
from runas.agent.config import ConfigStore, WorkflowEntry
from runas.agent.identity import AgentIdentity, load_identity
from runas.agent.probes.command import ProbeResult, ProbeState
from runas.agent.scheduler import UNAVAILABLE_MESSAGE, Scheduler
from runas.agent.settings import AgentSettings
from runas.agent.tasks import TaskRunner
from runas.agent.worker import Worker, resolve_action_user
from runas.crypto.ca import agent_id_of, make_csr
from runas.errors import DecryptionError, InvalidInput, RunAsError
from runas.logs import configure_file_logging, detach

_log = logging.getLogger("runas.agent")

DISCOVERY_SOURCE = "runas.agent"
COMPUTER_CLASS = "System.Computer"
MAX_QUEUED_RESULTS = 10_000
MAX_RESULTS_PER_REPORT = 500
MAX_OUTBOX = 200
#: how long the final flush on stop may take
FINAL_FLUSH_S = 5.0

ClientFactory = Callable[[AgentSettings, AgentIdentity], ManagementClient]


def _event(name: str, **fields: Any) -> None:
    _log.info(name, extra={"fields": fields})


def _warn(name: str, **fields: Any) -> None:
    _log.warning(name, extra={"fields": fields})


def operating_system() -> str:
    """A readable OS name: ``PRETTY_NAME`` of /etc/os-release, else ``platform``'s."""
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                name = line.partition("=")[2].strip().strip('"')
                if name:
                    return name
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}".strip()


def self_discovery(agent_id: str) -> dict[str, Any]:
    """The discovery payload of the agent's own computer object."""
    properties: dict[str, str] = {"os": operating_system()}
    _, dot, domain = agent_id.partition(".")
    if dot and domain:
        properties["domain"] = domain
    return {
        "source": DISCOVERY_SOURCE,
        "computer": agent_id,
        "objects": [{"class": COMPUTER_CLASS, "key": {"name": agent_id}, "properties": properties}],
    }


def default_client(settings: AgentSettings, identity: AgentIdentity) -> ManagementClient:
    approved = identity.approved
    return ManagementClient(
        settings.servers,
        ca_file=settings.ca_file,
        cert_file=identity.cert_file if approved else None,
        key_file=identity.key_file if approved else None,
    )


@dataclass
class _Outgoing:
    """Results waiting to be reported, and reports waiting to be sent."""

    results: collections.deque[tuple[int, dict[str, Any]]] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_QUEUED_RESULTS)
    )
    outbox: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_OUTBOX)
    )
    discovery: dict[str, Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    dropped: int = 0

    def put(self, epoch: int, result: dict[str, Any]) -> None:
        with self.lock:
            if len(self.results) == self.results.maxlen:
                self.dropped += 1
            self.results.append((epoch, result))

    def cut(self, epoch: int) -> None:
        """Turn queued results (and a pending discovery) into reports in the outbox."""
        with self.lock:
            batches: dict[int, list[dict[str, Any]]] = {}
            while self.results:
                result_epoch, result = self.results.popleft()
                batches.setdefault(result_epoch, []).append(result)
            discovery, self.discovery = self.discovery, None
            if discovery is not None and epoch not in batches:
                batches[epoch] = []
            for report_epoch, results in sorted(batches.items()):
                chunks = [
                    results[i : i + MAX_RESULTS_PER_REPORT]
                    for i in range(0, len(results), MAX_RESULTS_PER_REPORT)
                ] or [[]]
                for chunk in chunks:
                    report: dict[str, Any] = {
                        "report_id": str(uuid.uuid4()),
                        "epoch": report_epoch,
                        "results": chunk,
                        "discovery": None,
                    }
                    if discovery is not None and report_epoch == epoch:
                        report["discovery"], discovery = discovery, None
                    if len(self.outbox) == self.outbox.maxlen:
                        self.dropped += len(self.outbox[0]["results"])
                    self.outbox.append(report)

    def clear(self) -> None:
        with self.lock:
            self.results.clear()
            self.outbox.clear()
            self.discovery = None


class Agent:
    """One agent process; :func:`run_agent` is the way to run it."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        stop_event: threading.Event,
        client_factory: ClientFactory = default_client,
        clock: Callable[[], float] = time.monotonic,
        log_to_file: bool = True,
    ) -> None:
        #: False for an agent embedded in a management server: it logs through the server's
        #: handlers instead of adding its own file to the process's "runas" logger
        self.log_to_file = log_to_file
        self.settings = settings
        self.stop_event = stop_event
        self._client_factory = client_factory
        self._clock = clock
        self.outgoing = _Outgoing()
        self.identity: AgentIdentity | None = None
        self.store: ConfigStore | None = None
        self.scheduler: Scheduler | None = None
        self.worker: Worker | None = None
        self.client: ManagementClient | None = None
        self.tasks: TaskRunner | None = None

    def __repr__(self) -> str:
        return f"Agent(id={self.settings.agent_id!r})"

    # -- pieces -----------------------------------------------------------------------------

    def _read_token(self) -> str | None:
        path = self.settings.enrolment_token_file
        if path is None:
            return None
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            _warn("agent.token_unreadable", path=str(path), error=err.strerror or "")
            return None
        return token or None

    def _check_certificate(self, pem: bytes) -> bool:
        assert self.identity is not None
        try:
            certificate = x509.load_pem_x509_certificate(pem)
            same_key = certificate.public_key() == self.identity.tls_key.public_key()
            named = agent_id_of(certificate) == self.identity.agent_id
        except (ValueError, RunAsError):
            return False
        return same_key and named

    def _enrol(self, client: ManagementClient) -> bool:
        """Enrol until approved (True) or stopped (False)."""
        identity = self.identity
        assert identity is not None
        csr = make_csr(identity.tls_key, identity.agent_id)
        last_status = ""
        while not self.stop_event.is_set():
            try:
                answer = client.enrol(
                    agent_id=identity.agent_id,
                    hpke_public_key=identity.keys.public_bytes(),
                    csr_pem=csr,
                    token=self._read_token(),
                    agent_version=__version__,
                )
            except RunAsError as err:
                _warn("agent.enrol_failed", error=type(err).__name__, detail=str(err))
            else:
                if answer.status == "approved" and answer.certificate is not None:
                    if self._check_certificate(answer.certificate):
                        identity.save_certificate(answer.certificate)
                        _event("agent.approved", server=client.current)
                        return True
                    _warn("agent.certificate_refused", reason="not for this agent's key")
                elif answer.status != last_status:
                    _event("agent.enrolment", status=answer.status)
                last_status = answer.status
            self.stop_event.wait(self.settings.poll_interval)
        return False

    def _run_entry(self, entry: WorkflowEntry) -> None:
        assert self.worker is not None
        assert self.store is not None
        config = self.store.config
        epoch = config.epoch if config else 0
        self.outgoing.put(epoch, self.worker.run(entry))

    def _unavailable(self, entry: WorkflowEntry) -> None:
        assert self.worker is not None
        assert self.store is not None
        config = self.store.config
        probe = ProbeResult(ProbeState.UNKNOWN, UNAVAILABLE_MESSAGE, None)
        result = self.worker.result(entry, datetime.now(UTC), probe)
        self.outgoing.put(config.epoch if config else 0, result)

    def _apply(self, workflows: tuple[WorkflowEntry, ...]) -> None:
        assert self.scheduler is not None
        self.scheduler.configure(workflows)
        with self.outgoing.lock:
            self.outgoing.discovery = self_discovery(self.settings.agent_id)

    def _poll(self, client: ManagementClient) -> None:
        store = self.store
        assert store is not None
        try:
            fetched = client.fetch_config(store.etag)
        except AgentRevoked:
            raise
        except RunAsError as err:
            _warn("agent.poll_failed", error=type(err).__name__, detail=str(err))
            return
        if fetched is None:
            return
        try:
            config = store.accept(fetched.document, fetched.etag)
        except (InvalidInput, DecryptionError) as err:
            _warn("agent.config_refused", error=type(err).__name__, detail=str(err))
            return
        _event(
            "agent.configured",
            epoch=config.epoch,
            workflows=len(config.workflows),
            accounts=len(store.secrets),
        )
        self._apply(config.workflows)

    def _send(self, client: ManagementClient, *, deadline: float | None = None) -> None:
        store = self.store
        assert store is not None
        self.outgoing.cut(store.config.epoch if store.config else 0)
        if self.outgoing.dropped:
            _warn("agent.results_dropped", count=self.outgoing.dropped)
            self.outgoing.dropped = 0
        while True:
            if deadline is not None and self._clock() > deadline:
                return
            with self.outgoing.lock:
                if not self.outgoing.outbox:
                    return
                report = self.outgoing.outbox[0]
            try:
                client.send_report(report)
            except (AgentRevoked, ServersUnavailable):
                raise
            except RunAsError as err:
                _warn("agent.report_refused", error=type(err).__name__, detail=str(err))
            with self.outgoing.lock:
                if self.outgoing.outbox and self.outgoing.outbox[0] is report:
                    self.outgoing.outbox.popleft()

    def _serve(self, client: ManagementClient) -> None:
        """Poll and report until stopped; AgentRevoked propagates."""
        now = self._clock()
        next_poll = now
        next_report = now
        while not self.stop_event.is_set():
            now = self._clock()
            if now >= next_poll:
                self._poll(client)
                if self.tasks is not None:  # after the configuration: it may bring their bundle
                    self.tasks.poll(client)
                next_poll = self._clock() + self.settings.poll_interval
            if now >= next_report:
                try:
                    if self.tasks is not None:  # task results waiting since a failed post
                        self.tasks.flush(client)
                    self._send(client)
                except ServersUnavailable as err:
                    _warn("agent.report_deferred", detail=str(err))
                next_report = self._clock() + self.settings.report_interval
            self.stop_event.wait(max(0.0, min(next_poll, next_report) - self._clock()))

    def _revoked(self, err: AgentRevoked, client: ManagementClient) -> None:
        assert self.scheduler is not None
        assert self.store is not None
        assert self.identity is not None
        _warn("agent.revoked", kind=err.kind, detail=str(err))
        self.scheduler.configure(())
        self.store.erase()
        self.outgoing.clear()
        if self.tasks is not None:
            self.tasks.clear()
        self.identity.forget_certificate()
        client.use_certificate(None, None)

    # -- the whole life ---------------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        identity = load_identity(settings.data_dir, settings.agent_id)
        self.identity = identity
        handler = configure_file_logging(settings.resolved_log_file) if self.log_to_file else None
        scheduler_thread: threading.Thread | None = None
        client: ManagementClient | None = None
        try:
            _event("agent.start", agent=identity.agent_id, pid=os.getpid(), version=__version__)
            action_user = resolve_action_user(settings.action_user)
            store = ConfigStore(identity)
            self.store = store
            self.worker = Worker(
                identity.agent_id,
                secrets=lambda: store.secrets,
                handoff=settings.handoff,
                action_user=action_user,
                known_hosts=lambda: store.config.known_hosts if store.config else (),
            )
            self.scheduler = Scheduler(
                identity.agent_id,
                self._run_entry,
                max_workers=settings.max_parallel,
                clock=self._clock,
                on_unavailable=self._unavailable,
            )
            # Tasks run in the scheduler's pool, beside the workflows (runas.agent.tasks).
            self.tasks = TaskRunner(
                identity.agent_id,
                worker=self.worker,
                secrets=lambda: store.secrets,
                keys=identity.keys,
                submit=self.scheduler.submit_call,
            )
            if identity.approved:
                cached = store.load_cached()
                if cached is not None:
                    _event("agent.resumed", epoch=cached.epoch, workflows=len(cached.workflows))
                    self._apply(cached.workflows)
            else:
                identity.erase_secrets()  # a cache without a certificate is a leftover
            scheduler_thread = threading.Thread(
                target=self.scheduler.run,
                args=(self.stop_event,),
                name="runas-scheduler",
                daemon=True,
            )
            scheduler_thread.start()
            client = self._client_factory(settings, identity)
            self.client = client
            while not self.stop_event.is_set():
                if not identity.approved:
                    if not self._enrol(client):
                        break
                    client.use_certificate(identity.cert_file, identity.key_file)
                with self.outgoing.lock:
                    self.outgoing.discovery = self_discovery(identity.agent_id)
                try:
                    self._serve(client)
                except AgentRevoked as err:
                    self._revoked(err, client)
        finally:
            self._shutdown(client, scheduler_thread)
            _event("agent.stop", agent=identity.agent_id)
            detach(handler)

    def _shutdown(
        self, client: ManagementClient | None, scheduler_thread: threading.Thread | None
    ) -> None:
        self.stop_event.set()
        if self.scheduler is not None:
            self.scheduler.stop(wait=True)
        if scheduler_thread is not None:
            scheduler_thread.join(timeout=10)
        if client is not None:
            if self.identity is not None and self.identity.approved and self.store is not None:
                try:
                    self._send(client, deadline=self._clock() + FINAL_FLUSH_S)
                except RunAsError as err:
                    _warn("agent.final_report_failed", error=type(err).__name__)
                if self.tasks is not None:
                    self.tasks.flush(client)
            client.close()
        if self.store is not None:
            self.store.secrets.clear()


def run_agent(
    settings: AgentSettings,
    *,
    stop_event: threading.Event,
    client_factory: ClientFactory = default_client,
) -> None:
    """Run the agent until ``stop_event`` is set. Raises ``ConfigurationError`` (one line)
    when it cannot start: data directory, keys, CA file, action user."""
    Agent(settings, stop_event=stop_event, client_factory=client_factory).run()


__all__ = ["DISCOVERY_SOURCE", "Agent", "operating_system", "run_agent", "self_discovery"]
