"""Tasks on the agent: fetch what operators asked for, run it at once, post each result.

A task is a workflow of kind ``task``: it has no schedule, an operator starts it for some
targets (``runas task start``) and the server hands each target to the agent of its computer
as a *task document* (docs/agents.md, "Tasks"). At every configuration poll the agent's main
loop calls :meth:`TaskRunner.poll`, which

1. sends the results still waiting from earlier runs (a result that could not be sent —
   every server unreachable or answering 5xx — is kept and sent again at the next poll, as
   reports are; a 4xx is the server's considered answer and drops it);
2. fetches ``GET /agent/v1/tasks`` (the server marks what it serves delivered, so a doc comes
   once; the runner also remembers the targets it started lately, so a doc served twice after
   a server fail-over does not run twice);
3. hands each doc to the worker pool at once — beside the scheduled workflows, not in a slot,
   so the workflows' no-overlap rule does not hold a task back.

Each run goes the workflows' way (:class:`~runas.agent.worker.Worker`) with a
:class:`~runas.agent.config.WorkflowEntry` built from the doc: kind ``task``, a schedule whose
timeout is the task's, and properties = the object's properties overlaid with the task's
parameter values, so a ``{name}`` placeholder takes a parameter's value first. The credential:

* ``account`` set: a predefined Run As account, whose secret must be in the agent's bundle
  (if this agent does not hold that version the result is ``unknown`` and says so);
* ``credentials`` set: credentials an operator typed in for this run, sealed to this agent
  alone with :func:`~runas.crypto.sealing.seal_once` (purpose ``task-credentials``, run id
  ``<run>:<target>``). They are opened only when the run starts, become a credential document
  of type ``windows`` (with a domain) or ``simple``, and every reference to them is dropped
  when the run ends: they are never written to disk, logged, or kept in anything the runner
  holds after the run (Python cannot overwrite an immutable string; dropping every reference
  is the most it can do, as for the bundle);
* both null: the action account.

The result posted (``POST /agent/v1/tasks/{target}/result``) carries the probe's state,
message and exit code, and ``output`` = its stdout followed by its stderr, scrubbed of every
secret the agent holds *and* of the supplied ones, then cut at 64 KiB. A doc whose deadline has
passed when its turn comes is reported ``unknown`` "deadline passed" and does not run.
"""

from __future__ import annotations

import base64
import binascii
import collections
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

from runas.agent.client import AgentRevoked, ServersUnavailable
from runas.agent.config import AccountRef, Probe, Schedule, Secrets, WorkflowEntry
from runas.agent.handoff import CredentialDocument, credential_document
from runas.agent.probes.result import ProbeResult, ProbeState
from runas.agent.scrub import Scrubber
from runas.agent.worker import Worker
from runas.crypto.sealing import AgentKeyPair, open_once
from runas.errors import DecryptionError, InvalidInput, NotFound, RunAsError

_log = logging.getLogger("runas.agent.tasks")

#: the purpose label supplied credentials are sealed under (docs/agents.md, Tasks)
CREDENTIALS_PURPOSE = "task-credentials"
#: the output posted is cut at this many bytes (UTF-8)
OUTPUT_LIMIT = 64 * 1024
DEADLINE_PASSED = "deadline passed"
#: the name a credential document of supplied credentials carries (``RUNAS_ACCOUNT``); id and
#: secret version are 0, which no Run As account has
SUPPLIED_ACCOUNT_NAME = "supplied-credentials"
#: results waiting to be sent; beyond this the oldest is dropped (and logged)
MAX_PENDING_RESULTS = 1_000
#: targets remembered as started, so a doc served twice runs once
MAX_REMEMBERED = 10_000
#: the longest a task may run when its document gives no usable timeout
DEFAULT_TIMEOUT_S = 300.0


class TaskClient(Protocol):
    """What the runner needs of :class:`~runas.agent.client.ManagementClient`."""

    def fetch_tasks(self) -> list[Any]: ...

    def send_task_result(self, target: int, result: Mapping[str, Any]) -> bool: ...


#: runs a call in the worker pool; False when the pool no longer takes work
Submit = Callable[[Callable[[], None]], bool]


def _inline(call: Callable[[], None]) -> bool:
    call()
    return True


# -- the document ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuppliedCredentials:
    """Credentials typed in for one task run, still sealed to this agent."""

    type: str
    user: str
    domain: str | None
    sealed: bytes = field(repr=False)

    @property
    def display(self) -> str:
        return f"{self.domain}\\{self.user}" if self.domain else self.user


@dataclass(frozen=True)
class TaskDoc:
    """One task for one target object (the server's task document, checked)."""

    run: str
    target: int
    task: str
    object: str
    properties: Mapping[str, Any]
    parameters: Mapping[str, Any]
    probe: Probe
    timeout_s: float
    deadline: datetime
    account: AccountRef | None
    credentials: SuppliedCredentials | None

    @property
    def run_id(self) -> str:
        """The run id supplied credentials are sealed under: ``<run>:<target>``."""
        return f"{self.run}:{self.target}"

    def entry(self) -> WorkflowEntry:
        """The workflow entry the worker runs; parameters shadow properties of the same name."""
        overlaid = {**self.properties, **self.parameters}
        return WorkflowEntry(
            workflow=self.task,
            kind="task",
            object=self.object,
            object_id=None,
            properties=MappingProxyType(overlaid),
            probe=self.probe,
            schedule=Schedule(interval_s=self.timeout_s, timeout_s=self.timeout_s),
            runs=True,
            outcome="task",
            detail="",
            account=self.account,
        )


def _bad(what: str, expected: str) -> InvalidInput:
    return InvalidInput(f"task document: {what} must be {expected}")


def _text(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise _bad(where + key, "a non-empty string")
    return value


def _mapping(data: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _bad(where + key, "an object")
    return value


def _count(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _bad(what, "a non-negative integer")
    return value


def target_of(data: object) -> int | None:
    """The target id of a document, if it can be read (to report a malformed one)."""
    if isinstance(data, dict):
        target = data.get("target")
        if type(target) is int and target >= 0:
            return target
    return None


def _deadline(value: object) -> datetime:
    if not isinstance(value, str):
        raise _bad("deadline", "an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad("deadline", "an ISO 8601 time") from None
    # A time without an offset is UTC, as every time the server writes.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _account(value: object) -> AccountRef | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("account", "null or an object")
    public = _mapping(value, "public", "account.")
    if not all(isinstance(v, str) for v in public.values()):
        raise _bad("account.public values", "strings")
    return AccountRef(
        id=_count(value.get("id"), "account.id"),
        name=_text(value, "name", "account."),
        type=_text(value, "type", "account."),
        secret_version=_count(value.get("secret_version"), "account.secret_version"),
        public=MappingProxyType(dict(public)),
    )


def _credentials(value: object) -> SuppliedCredentials | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("credentials", "null or an object")
    kind = _text(value, "type", "credentials.")
    if kind not in ("windows", "simple"):
        raise _bad("credentials.type", "windows or simple")
    domain = value.get("domain")
    if domain is not None and (not isinstance(domain, str) or not domain):
        raise _bad("credentials.domain", "null or a non-empty string")
    try:
        sealed = base64.b64decode(_text(value, "sealed", "credentials."), validate=True)
    except (binascii.Error, ValueError):
        raise _bad("credentials.sealed", "base64") from None
    return SuppliedCredentials(kind, _text(value, "user", "credentials."), domain, sealed)


def parse_task(data: object) -> TaskDoc:
    """A checked :class:`TaskDoc` (``InvalidInput`` naming what is wrong, never a value)."""
    if not isinstance(data, dict):
        raise InvalidInput("task document: must be an object")
    target = target_of(data)
    if target is None:
        raise _bad("target", "a non-negative integer")
    probe = data.get("probe")
    if not isinstance(probe, dict):
        raise _bad("probe", "an object")
    timeout = data.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise _bad("timeout_s", "a positive number")
    account = _account(data.get("account"))
    credentials = _credentials(data.get("credentials"))
    if account is not None and credentials is not None:
        raise InvalidInput("task document: account and credentials are exclusive")
    return TaskDoc(
        run=_text(data, "run"),
        target=target,
        task=_text(data, "task"),
        object=_text(data, "object"),
        properties=_mapping(data, "properties"),
        parameters=_mapping(data, "parameters"),
        probe=Probe(_text(probe, "type", "probe."), _mapping(probe, "config", "probe.")),
        timeout_s=float(timeout),
        deadline=_deadline(data.get("deadline")),
        account=account,
        credentials=credentials,
    )


# -- results -------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _cut_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _unknown_result(message: str, at: datetime) -> dict[str, Any]:
    return {
        "state": ProbeState.UNKNOWN.value,
        "message": message,
        "exit_code": None,
        "timed_out": False,
        "output": "",
        "started_at": _iso(at),
        "duration_s": 0.0,
        "auth_failure": None,
        "scrubbed": 0,
    }


def joined_output(probe: ProbeResult) -> str:
    """stdout, then stderr on a line of its own."""
    stdout, stderr = probe.stdout, probe.stderr
    if stdout and stderr and not stdout.endswith("\n"):
        stdout += "\n"
    return stdout + stderr


# -- the runner ----------------------------------------------------------------------------------


class TaskRunner:
    """See the module docstring. ``submit`` runs a call in the agent's worker pool (None: at
    once, in the calling thread — for tests); ``secrets`` returns what the agent holds now (the
    worker's); ``keys`` (the agent's HPKE key pair) opens supplied credentials."""

    def __init__(
        self,
        agent_id: str,
        *,
        worker: Worker,
        secrets: Callable[[], Secrets],
        keys: AgentKeyPair,
        submit: Submit | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        output_limit: int = OUTPUT_LIMIT,
        max_pending: int = MAX_PENDING_RESULTS,
    ) -> None:
        self._agent_id = agent_id
        self._worker = worker
        self._secrets = secrets
        self._keys = keys
        self._submit = submit or _inline
        self._clock = clock
        self._output_limit = output_limit
        self._lock = threading.Lock()
        #: results not sent yet, oldest first: (target, result)
        self._pending: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(
            maxlen=max_pending
        )
        self._started: collections.deque[int] = collections.deque(maxlen=MAX_REMEMBERED)
        self._started_set: set[int] = set()
        #: results dropped because too many were waiting (logged at the next poll)
        self.dropped = 0
        self._unsupported_logged = False

    def __repr__(self) -> str:
        return f"TaskRunner(agent={self._agent_id!r}, pending={len(self._pending)})"

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def clear(self) -> None:
        """Forget what waits to be sent (the agent was removed: it speaks for nobody now)."""
        with self._lock:
            self._pending.clear()

    # -- the poll ---------------------------------------------------------------------------

    def poll(self, client: TaskClient) -> int:
        """Send waiting results, fetch the task documents and start each; returns how many
        were started. Only :class:`~runas.agent.client.AgentRevoked` escapes."""
        self.flush(client)
        try:
            documents = client.fetch_tasks()
        except AgentRevoked:
            raise
        except RunAsError as err:
            if isinstance(err, NotFound):  # a server without tasks (older, or mid-upgrade)
                if not self._unsupported_logged:
                    _log.info("agent.tasks_unsupported", extra={"fields": {"detail": str(err)}})
                    self._unsupported_logged = True
                return 0
            # An outage is already logged as a warning by the configuration poll just before.
            log = _log.info if isinstance(err, ServersUnavailable) else _log.warning
            log(
                "agent.tasks_poll_failed",
                extra={"fields": {"error": type(err).__name__, "detail": str(err)}},
            )
            return 0
        self._unsupported_logged = False
        started = 0
        for data in documents:
            started += self._take(client, data)
        return started

    def _take(self, client: TaskClient, data: object) -> int:
        try:
            doc = parse_task(data)
        except InvalidInput as err:
            target = target_of(data)
            _log.warning(
                "agent.task_refused",
                extra={"fields": {"target": target, "detail": str(err)}},
            )
            if target is not None and self._first_start(target):
                self._finish(client, target, _unknown_result(str(err), self._clock()))
            return 0
        if not self._first_start(doc.target):
            _log.info("agent.task_repeated", extra={"fields": {"target": doc.target}})
            return 0
        _log.info(
            "agent.task_start",
            extra={"fields": {"run": doc.run, "target": doc.target, "task": doc.task}},
        )
        if not self._submit(lambda: self._run_and_post(client, doc)):
            result = _unknown_result("the agent stopped before the task could run", self._clock())
            self._queue(doc.target, result)
            return 0
        return 1

    def _first_start(self, target: int) -> bool:
        with self._lock:
            if target in self._started_set:
                return False
            if len(self._started) == self._started.maxlen:
                self._started_set.discard(self._started[0])
            self._started.append(target)
            self._started_set.add(target)
            return True

    def _run_and_post(self, client: TaskClient, doc: TaskDoc) -> None:
        target = doc.target
        try:
            result = self.run(doc)
        except Exception as err:  # a bug must not kill the pool thread or lose the target
            _log.error(
                "agent.task_failed",
                extra={"fields": {"target": target, "error": type(err).__name__}},
            )
            result = _unknown_result(
                f"the agent failed to run the task ({type(err).__name__})", self._clock()
            )
        del doc  # the sealed credentials go with it
        _log.info("agent.task_done", extra={"fields": {"target": target, "state": result["state"]}})
        self._finish(client, target, result)

    # -- one run -----------------------------------------------------------------------------

    def run(self, doc: TaskDoc) -> dict[str, Any]:
        """Run ``doc`` now and return its result (the body of the result post)."""
        now = self._clock()
        if now >= doc.deadline:
            return _unknown_result(DEADLINE_PASSED, now)
        entry = doc.entry()
        document = self._open(doc) if doc.credentials is not None else None
        if isinstance(document, str):
            return _unknown_result(document, now)
        try:
            started, probe = self._worker.execute(entry, document=document)
            extra = document.secret_values() if document is not None else ()
            reported = self._worker.result(entry, started, probe, extra_secrets=extra)
            output, hits = self._scrubbed_output(probe, extra)
        finally:
            # Supplied credentials live only for the run: no reference survives it here.
            document = None
            extra = ()
        return {
            "state": reported["state"],
            "message": reported["message"],
            "exit_code": reported["exit_code"],
            "timed_out": reported["timed_out"],
            "output": output,
            "started_at": reported["started_at"],
            "duration_s": reported["duration_s"],
            "auth_failure": reported["auth_failure"],
            "scrubbed": reported["scrubbed"] + hits,
        }

    def _open(self, doc: TaskDoc) -> CredentialDocument | str:
        """The credential document of the supplied credentials, or why there is none."""
        supplied = doc.credentials
        assert supplied is not None
        try:
            fields = open_once(
                self._keys,
                supplied.sealed,
                agent_id=self._agent_id,
                purpose=CREDENTIALS_PURPOSE,
                run_id=doc.run_id,
            )
        except (DecryptionError, InvalidInput):
            return "the supplied credentials could not be opened by this agent"
        if set(fields) != {"password"}:
            return "the supplied credentials are not a password"
        public = {"user": supplied.user, "domain": supplied.domain}
        try:
            return credential_document(
                supplied.type,
                public,
                {"password": fields["password"]},
                account_name=SUPPLIED_ACCOUNT_NAME,
                account_id=0,
                secret_version=0,
            )
        except InvalidInput as err:  # names a field, never a value
            return f"the supplied credentials: {err}"

    def _scrubbed_output(self, probe: ProbeResult, extra: tuple[str, ...]) -> tuple[str, int]:
        """stdout + stderr scrubbed of every secret held and supplied, then cut. The probe
        scrubbed each stream before cutting it; joining them may put a secret together again
        across the seam, so the whole is scrubbed once more before the final cut."""
        held = self._secrets()
        scrubber = Scrubber([*held.values(), *extra]) if extra else held.scrubber()
        text, hits = scrubber.scrub(joined_output(probe))
        return _cut_bytes(text, self._output_limit), hits

    # -- sending -----------------------------------------------------------------------------

    def _finish(self, client: TaskClient, target: int, result: dict[str, Any]) -> None:
        """Post at once; what cannot be sent now waits for the next poll."""
        with self._lock:
            waiting = bool(self._pending)
        if waiting:  # keep the order: older results go first, from the poll
            self._queue(target, result)
            return
        if not self._send(client, target, result):
            self._queue(target, result)

    def _queue(self, target: int, result: dict[str, Any]) -> None:
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
            self._pending.append((target, result))

    def _send(self, client: TaskClient, target: int, result: dict[str, Any]) -> bool:
        """True when done with it (accepted, ignored or refused); False to try again."""
        try:
            accepted = client.send_task_result(target, result)
        except (AgentRevoked, ServersUnavailable) as err:
            _log.info(
                "agent.task_result_deferred",
                extra={"fields": {"target": target, "error": type(err).__name__}},
            )
            return False
        except RunAsError as err:
            _log.warning(
                "agent.task_result_refused",
                extra={
                    "fields": {"target": target, "error": type(err).__name__, "detail": str(err)}
                },
            )
            return True
        except Exception as err:  # a client closed under us (re-enrolment): try again later
            _log.info(
                "agent.task_result_deferred",
                extra={"fields": {"target": target, "error": type(err).__name__}},
            )
            return False
        if not accepted:
            _log.info("agent.task_result_ignored", extra={"fields": {"target": target}})
        return True

    def flush(self, client: TaskClient) -> int:
        """Send waiting results in order until one cannot be sent; returns how many went."""
        if self.dropped:
            _log.warning("agent.task_results_dropped", extra={"fields": {"count": self.dropped}})
            self.dropped = 0
        sent = 0
        while True:
            with self._lock:
                if not self._pending:
                    return sent
                target, result = self._pending[0]
            if not self._send(client, target, result):
                return sent
            with self._lock:
                if self._pending and self._pending[0][1] is result:
                    self._pending.popleft()
            sent += 1


__all__ = [
    "CREDENTIALS_PURPOSE",
    "DEADLINE_PASSED",
    "OUTPUT_LIMIT",
    "SUPPLIED_ACCOUNT_NAME",
    "SuppliedCredentials",
    "TaskClient",
    "TaskDoc",
    "TaskRunner",
    "joined_output",
    "parse_task",
    "target_of",
]
