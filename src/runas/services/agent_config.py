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
from typing import Any

from sqlalchemy import select

from runas.crypto.sealing import Bundle, BundleEntry, seal_bundle
from runas.domain.classes import ClassHierarchy
from runas.domain.resolution import Outcome, resolve_workflow
from runas.runtime import UnitOfWork
from runas.services import accounts, convert, explain, ssh_hosts
from runas.services.resolution_memory import ResolutionMemory
from runas.storage.tables import AccountRow, AgentRow, ObjectRow, WorkflowRow


@dataclass(frozen=True)
class BuiltConfig:
    agent_id: str
    epoch: int
    etag: str
    body: bytes
    #: (account id, secret version) of each secret in the bundle
    delivered: tuple[tuple[int, int], ...]
    #: (account id, version, field names) of each secret decrypted into it, to be audited
    uses: tuple[tuple[int, int, tuple[str, ...]], ...] = ()


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


def build(uow: UnitOfWork, agent: AgentRow, *, memory: ResolutionMemory) -> BuiltConfig:
    """The configuration document of ``agent`` as of this transaction's epoch (which may be
    read-only: the secrets' uses are audited by :func:`record_delivery`).

    Resolution reads the server's :class:`ResolutionMemory` view of the epoch (content,
    workflows, the computer's accounts and approvals), so a configuration costs the objects of
    one computer, the accounts it uses, and the decryption of their secrets."""
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
    uses: list[tuple[int, int, tuple[str, ...]]] = []
    if objects:
        cat = view.catalog_for(s, agent.id)
        h = cat.hierarchy
        wf_rows = {r.id: r for r in s.scalars(select(WorkflowRow))}
        runs_as: dict[int, int] = {}  # account id -> secret version, for the bundle
        task_accounts: set[int] = set()
        planned = []
        for o in objects:
            record = convert.object_record(o)
            for w in sorted(
                explain.applicable(list(view.workflows.values()), h, record.class_id),
                key=lambda w: w.id,
            ):
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
        acc_rows = {
            r.id: r
            for r in s.scalars(
                select(AccountRow).where(
                    AccountRow.id.in_(
                        {r.account.id for _, _, r, own in planned if own and r.account}
                        | task_accounts
                    )
                )
            )
        }
        for o, w, res, own in planned:
            account = None
            if own and res.account is not None:
                a = acc_rows[res.account.id]
                account = {
                    "id": a.id,
                    "name": a.name,
                    "type": a.type,
                    "secret_version": a.current_version,
                    "public": dict(a.public_fields),
                }
            row = wf_rows[w.id]
            workflows.append(
                {
                    "workflow": w.id,
                    "kind": w.kind.value,
                    "object": o.full_name,
                    "object_id": o.id,
                    "properties": _properties(h, o),
                    "probe": {"type": w.probe_type, "config": dict(w.probe_config or {})},
                    "schedule": _schedule(row.schedule),
                    "runs": res.runs,
                    "outcome": res.outcome.value,
                    "detail": explain.describe_outcome(res),
                    "account": account,
                }
            )
        for account_id, version in sorted(runs_as.items()):
            # Recorded by record_delivery before the configuration leaves the server.
            fields = accounts.decrypt_unaudited(uow, account_id, version)
            entries.append(BundleEntry(account_id, version, acc_rows[account_id].type, fields))
            uses.append((account_id, version, tuple(sorted(fields))))
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
        "known_hosts": ssh_hosts.known_hosts(s),
    }
    body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return BuiltConfig(
        agent.id, epoch, etag, body, tuple(e.key for e in bundle.entries), tuple(uses)
    )


def record_delivery(uow: UnitOfWork, built: BuiltConfig) -> None:
    """Audit each secret in ``built`` (``account:secret-use``): in a transaction of its own
    that must commit before the configuration is sent — if it cannot be written, the agent
    gets an error, not the secrets."""
    for account_id, version, fields in built.uses:
        accounts.record_secret_use(
            uow,
            account_id,
            version,
            purpose=f"configuration of agent {built.agent_id}",
            fields=list(fields),
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
