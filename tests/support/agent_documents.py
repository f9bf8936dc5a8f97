"""Configuration documents as a management server sends them, with real sealed bundles."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from runas.crypto.sealing import Bundle, BundleEntry, seal_bundle


def workflow(
    name: str = "Contoso.Check",
    obj: str = "System.Computer:a",
    *,
    account: Mapping[str, Any] | None = None,
    program: str = "/bin/true",
    args: Sequence[str] = (),
    interval_s: float = 60,
    spread_s: float = 0,
    timeout_s: float = 30,
    runs: bool = True,
    probe_type: str = "command",
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "workflow": name,
        "kind": "monitor",
        "object": obj,
        "object_id": 7,
        "properties": dict(properties or {}),
        "probe": {"type": probe_type, "config": {"program": program, "args": list(args)}},
        "schedule": {"interval_s": interval_s, "spread_s": spread_s, "timeout_s": timeout_s},
        "runs": runs,
        "outcome": "resolved",
        "detail": "",
        "account": dict(account) if account is not None else None,
    }


def account(
    account_id: int = 3, version: int = 2, *, name: str = "sql-a", user: str = "svc-sql"
) -> dict[str, Any]:
    return {
        "id": account_id,
        "name": name,
        "type": "simple",
        "secret_version": version,
        "public": {"user": user},
    }


def document(
    public_key: bytes,
    *,
    agent: str = "a",
    epoch: int = 1,
    workflows: Sequence[Mapping[str, Any]] = (),
    secrets: Mapping[tuple[int, int], str] | None = None,
    bundle_epoch: int | None = None,
) -> dict[str, Any]:
    """A config document; ``secrets`` maps (account id, version) to a simple account's
    password, sealed to ``public_key``."""
    entries = tuple(
        BundleEntry(aid, ver, "simple", {"password": password})
        for (aid, ver), password in (secrets or {}).items()
    )
    sealed = seal_bundle(
        public_key, Bundle(agent, epoch if bundle_epoch is None else bundle_epoch, entries)
    )
    return {
        "agent": agent,
        "epoch": epoch,
        "etag": f'"{epoch}.0"',
        "workflows": [dict(w) for w in workflows],
        "bundle": base64.b64encode(sealed).decode(),
    }
