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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from runas.crypto.sealing import Bundle, BundleEntry, seal_bundle
from runas.domain.classes import ClassHierarchy
from runas.domain.resolution import Outcome, resolve_workflow
from runas.runtime import UnitOfWork
from runas.services import accounts, convert, explain
from runas.services.resolution_memory import ResolutionMemory
from runas.services.secret_memory import PlaintextMemory
from runas.storage.tables import AgentRow, ObjectRow


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


def _properties(h: ClassHierarchy, row: ObjectRow) -> dict[str, Any]:
    """The object's properties with its key properties by name (``{instance}`` in a probe's
    arguments): what discovery said about it, nothing secret."""
    keys = dict(zip(h.key_properties(row.class_id), row.key_values, strict=False))
    return {**dict(row.properties or {}), **keys}


def build(
    uow: UnitOfWork,
    agent: AgentRow,
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
    view = memory.view(s)
    epoch = view.epoch
    objects = list(
        s.scalars(
            select(ObjectRow).where(ObjectRow.computer_name == agent.id).order_by(ObjectRow.id)
        )
    )
    workflows: list[dict[str, Any]] = []
    entries: list[BundleEntry] = []
    uses: list[tuple[int, int, tuple[str, ...], str]] = []
    if objects:
        computer_row = next((o for o in objects if o.host_id is None), None)
        cat = view.catalog_for(s, agent.id, computer_row=computer_row)
        h = cat.hierarchy
        runs_as: dict[int, int] = {}  # account id -> secret version, for the bundle
        task_accounts: set[int] = set()
        planned = []
        for o in objects:
            record = convert.object_record(o)
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
                planned.append((o, w, res, own))
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
            fields = _secret_fields(uow, epoch, account_id, version, plaintexts)
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
    uow: UnitOfWork,
    epoch: int,
    account_id: int,
    version: int,
    plaintexts: PlaintextMemory | None,
) -> dict[str, str]:
    def decrypt() -> dict[str, str]:
        return accounts.decrypt_unaudited(uow, account_id, version)

    if plaintexts is None:
        return decrypt()
    return plaintexts.fields(epoch, account_id, version, decrypt)


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
