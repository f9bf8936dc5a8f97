"""What an agent receives: its workflows with the account each resolves to, and one sealed
bundle holding exactly the secrets meant for it (docs/agents.md, domain.md §11).

The bundle holds an account's secret only if the account is **distributed** to the agent's
computer (more secure: approved there; less secure: every agent) **and used** by one of the
workflows that run there. Resolution decides "used" (``explain.computer_config``): a workflow
whose account is not distributed does not run, and its account's secret is not sent. Every
secret decrypted for a bundle is audited (``account:secret-use``, purpose names the agent).

A configuration is a function of the resolution epoch (every change that can alter it bumps
the epoch, approvals and removals of agents included), so its ETag is the epoch and a server
keeps the last one it built per agent (:class:`AgentConfigCache`): an unchanged poll costs a
dictionary lookup.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from runas.crypto.sealing import Bundle, BundleEntry, seal_bundle
from runas.domain.classes import ClassHierarchy
from runas.domain.model import ObjectRecord
from runas.domain.resolution import Outcome, resolve_workflow
from runas.runtime import UnitOfWork
from runas.services import accounts, explain
from runas.services.resolution_memory import EpochView, NeedsDatabase, ResolutionMemory
from runas.services.secret_memory import PlaintextMemory
from runas.storage.tables import AgentRow


@dataclass(frozen=True)
class BuiltConfig:
    agent_id: str
    epoch: int
    etag: str
    body: bytes
    #: (account id, secret version) of each secret in the bundle
    delivered: tuple[tuple[int, int], ...]
    #: (account id, version, field names, account name) of each secret sealed into it, to be
    #: audited
    uses: tuple[tuple[int, int, tuple[str, ...], str], ...] = ()
    #: the agent's last contact as read when building (last_seen_at, last_seen_from,
    #: last_epoch): whether the delivery must note it again is decided without reading it again
    seen: tuple[datetime | None, str | None, int | None] | None = None


def etag_of(epoch: int) -> str:
    return f'"{epoch}"'


def _schedule(raw: dict[str, Any] | None) -> dict[str, float] | None:
    if not raw:
        return None
    return {
        "interval_s": float(raw["interval_seconds"]),
        "spread_s": float(raw.get("spread_seconds", 0)),
        "timeout_s": float(raw.get("timeout_seconds", 300)),
    }


def _properties(h: ClassHierarchy, record: ObjectRecord) -> dict[str, Any]:
    """The object's properties with its key properties by name (``{instance}`` in a probe's
    arguments): what discovery said about it, nothing secret."""
    keys = dict(zip(h.key_properties(record.class_id), record.key, strict=False))
    return {**dict(record.properties or {}), **keys}


class AgentKeys(Protocol):
    """What a configuration needs of an agent: an :class:`~runas.storage.tables.AgentRow`
    or the :class:`~runas.services.resolution_memory.AgentSnapshot` a view holds."""

    @property
    def id(self) -> str: ...
    @property
    def hpke_public_key(self) -> bytes: ...
    @property
    def last_seen_at(self) -> datetime | None: ...
    @property
    def last_seen_from(self) -> str | None: ...
    @property
    def last_epoch(self) -> int | None: ...


def build(
    uow: UnitOfWork,
    agent: AgentKeys,
    *,
    memory: ResolutionMemory,
    plaintexts: PlaintextMemory | None = None,
) -> BuiltConfig:
    """The configuration document of ``agent`` as of this transaction's epoch (which may be
    read-only: the secrets' uses are audited by :func:`record_delivery`).

    Resolution reads the server's :class:`ResolutionMemory` view of the epoch (content,
    workflows and their schedules, the associated accounts, the trusted SSH host keys), so a
    configuration costs the objects of one computer, its accounts' approvals there, and the
    secrets it carries: decrypted once per epoch for every agent when ``plaintexts`` is
    given (:mod:`runas.services.secret_memory`), each use still audited per agent."""
    s = uow.session

    def decrypt(account_id: int, version: int) -> dict[str, str]:
        return accounts.decrypt_unaudited(uow, account_id, version)

    return _build(memory.view(s), s, agent, plaintexts, decrypt)


def build_for(
    uow: UnitOfWork,
    agent_id: str,
    serial: str,
    *,
    check: Callable[[AgentRow | None], AgentRow],
    memory: ResolutionMemory,
    plaintexts: PlaintextMemory | None = None,
) -> BuiltConfig:
    """:func:`build` for the agent ``agent_id`` presenting the certificate ``serial``: the
    agent as the epoch's view knows it (read with the view's other agents, see
    :class:`EpochView`) when that is approved with this certificate, else its row as
    ``check`` passes it (``check`` raises for a removed or unapproved agent; a renewed
    certificate, which does not bump the epoch, is found in the row)."""
    s = uow.session
    known = memory.view(s).agent(s, agent_id)
    agent: AgentKeys
    if known is not None and known.status == "approved" and known.cert_serial == serial:
        agent = known
    else:
        agent = check(s.get(AgentRow, agent_id))
    return build(uow, agent, memory=memory, plaintexts=plaintexts)


def build_known(
    memory: ResolutionMemory,
    epoch: int,
    agent_id: str,
    serial: str,
    plaintexts: PlaintextMemory,
) -> BuiltConfig | None:
    """The configuration of the agent ``agent_id`` presenting the certificate ``serial``,
    built from memory alone at ``epoch`` (which the caller vouches for), or None when
    something must be read — the view is not at that epoch or does not hold everything yet,
    a secret is not in ``plaintexts``, or the agent's row as the view knows it does not
    match the certificate (then the database decides): the caller calls :func:`build`."""
    view = memory.view_if_current(epoch)
    if view is None:
        return None
    try:
        agent = view.agent(None, agent_id)
        if agent is None or agent.status != "approved" or agent.cert_serial != serial:
            return None
        return _build(view, None, agent, plaintexts, None)
    except NeedsDatabase:
        return None


def _build(
    view: EpochView,
    s: Session | None,
    agent: AgentKeys,
    plaintexts: PlaintextMemory | None,
    decrypt: Callable[[int, int], dict[str, str]] | None,
) -> BuiltConfig:
    """:func:`build` given the epoch's view; ``s`` None (and ``decrypt`` None): from memory,
    raising :class:`NeedsDatabase` for anything the view or ``plaintexts`` lacks."""
    epoch = view.epoch
    objects = view.objects_of(s, agent.id)
    workflows: list[dict[str, Any]] = []
    entries: list[BundleEntry] = []
    uses: list[tuple[int, int, tuple[str, ...], str]] = []
    if objects:
        computer = next((o for o in objects if o.host_id is None), None)
        cat = view.catalog_for(s, agent.id, computer_record=computer)
        h = cat.hierarchy
        runs_as: dict[int, int] = {}  # account id -> secret version, for the bundle
        task_accounts: set[int] = set()
        planned = []
        for record in objects:
            for w in view.applicable(record.class_id):
                res = resolve_workflow(w, record, cat)
                own = res.outcome is Outcome.ACCOUNT and res.account is not None
                if own and res.runs and res.account is not None:
                    runs_as[res.account.id] = res.account.secret_version
                if w.kind.value == "task":
                    # Tasks run on demand (services/tasks.py), not from the configuration; the
                    # account a task resolves to is in the bundle so that a run started with
                    # the predefined account finds its secret here.
                    if own and res.runs and res.account is not None:
                        task_accounts.add(res.account.id)
                    continue
                planned.append((record, w, res, own))
        acc_rows = view.accounts_public(
            s,
            {r.account.id for _, _, r, own in planned if own and r.account} | task_accounts,
        )
        for o, w, res, own in planned:
            account = None
            if own and res.account is not None:
                a = acc_rows[res.account.id]
                account = {
                    "id": a.id,
                    "name": a.name,
                    "type": a.type,
                    "secret_version": a.secret_version,
                    "public": dict(a.public),
                }
            workflows.append(
                {
                    "workflow": w.id,
                    "kind": w.kind.value,
                    "object": o.full_name,
                    "object_id": o.id,
                    "properties": _properties(h, o),
                    "probe": {"type": w.probe_type, "config": dict(w.probe_config or {})},
                    "schedule": _schedule(view.schedules.get(w.id)),
                    "runs": res.runs,
                    "outcome": res.outcome.value,
                    "detail": explain.describe_outcome(res),
                    "account": account,
                }
            )
        for account_id, version in sorted(runs_as.items()):
            # Recorded by record_delivery before the configuration leaves the server.
            fields = _secret_fields(epoch, account_id, version, plaintexts, decrypt)
            entries.append(BundleEntry(account_id, version, acc_rows[account_id].type, fields))
            uses.append((account_id, version, tuple(sorted(fields)), acc_rows[account_id].name))
    bundle = Bundle(agent.id, epoch, tuple(entries))
    sealed = seal_bundle(agent.hpke_public_key, bundle)
    etag = etag_of(epoch)
    doc = {
        "agent": agent.id,
        "epoch": epoch,
        "etag": etag,
        "workflows": workflows,
        "bundle": base64.b64encode(sealed).decode("ascii"),
        # Public data, the same for every agent of the group: the SSH host keys it trusts.
        "known_hosts": view.known_hosts(s),
    }
    body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return BuiltConfig(
        agent.id,
        epoch,
        etag,
        body,
        tuple(e.key for e in bundle.entries),
        tuple(uses),
        (agent.last_seen_at, agent.last_seen_from, agent.last_epoch),
    )


def _secret_fields(
    epoch: int,
    account_id: int,
    version: int,
    plaintexts: PlaintextMemory | None,
    decrypt: Callable[[int, int], dict[str, str]] | None,
) -> dict[str, str]:
    def read() -> dict[str, str]:
        if decrypt is None:  # built from memory: the database must decrypt it
            raise NeedsDatabase
        return decrypt(account_id, version)

    if plaintexts is None:
        return read()
    return plaintexts.fields(epoch, account_id, version, read)


def record_delivery(uow: UnitOfWork, built: BuiltConfig) -> None:
    """Audit each secret in ``built`` (``account:secret-use``): in a transaction of its own
    that must commit before the configuration is sent — if it cannot be written, the agent
    gets an error, not the secrets."""
    for account_id, version, fields, name in built.uses:
        accounts.record_secret_use(
            uow,
            account_id,
            version,
            purpose=f"configuration of agent {built.agent_id}",
            fields=list(fields),
            name=name,
        )


class AgentConfigCache:
    """The last configuration built per agent. Thread-safe; entries of an older epoch are
    ignored by readers (:meth:`get` is given the epoch the caller vouches for)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, BuiltConfig] = {}

    def get(self, agent_id: str, epoch: int) -> BuiltConfig | None:
        found = self._entries.get(agent_id)
        return found if found is not None and found.epoch == epoch else None

    def put(self, built: BuiltConfig) -> None:
        with self._lock:
            current = self._entries.get(built.agent_id)
            if current is None or current.epoch <= built.epoch:
                self._entries[built.agent_id] = built

    def forget(self, agent_id: str) -> None:
        with self._lock:
            self._entries.pop(agent_id, None)
