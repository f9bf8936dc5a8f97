"""The agent's configuration: typed, its secrets opened in memory, its cache on disk.

:func:`parse_config` turns the document of ``GET /agent/v1/config`` (``docs/agents.md``) into
frozen dataclasses; anything malformed raises :class:`~runas.errors.InvalidInput` naming the
field, never a value.

:class:`ConfigStore` accepts a parsed configuration:

1. its ``epoch`` must not be lower than the configuration epoch the agent holds, and the
   bundle's epoch — read with ``manifest_of`` *before* decrypting — not lower than the bundle
   epoch it holds (a replayed older bundle could bring back a revoked secret);
2. the bundle is opened with the agent's HPKE key (``open_bundle`` authenticates its epoch,
   agent id and entries);
3. the document as received — the bundle still sealed inside — is written atomically, 0600,
   to ``config.json``, and the epochs to ``state.json``.

Only then do the new :class:`Secrets` replace the old ones. A restarted agent (even after
``kill -9``) calls :meth:`ConfigStore.load_cached` and runs its last configuration at once,
before any server answers. The cache holds one document, so a configuration that drops an
account drops its secret from the cache as it replaces the file, and from memory as the old
:class:`Secrets` is cleared. Python cannot wipe immutable strings; dropping every reference is
the most it can do, and the secrets never reach a file in clear.

The configuration epoch and the bundle epoch are checked separately and not required to be
equal: a server may reuse the bundle sealed at an earlier epoch when only non-secret parts of
the configuration changed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from runas.agent.identity import AgentIdentity, erase_secrets, write_private
from runas.agent.scrub import Scrubber
from runas.crypto.sealing import Bundle, BundleEntry, manifest_of, open_bundle
from runas.errors import InvalidInput, RunAsError

_log = logging.getLogger("runas.agent.config")

CACHE_FORMAT = 1


# -- the typed configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRef:
    """Which account version a workflow uses; ``public`` holds its non-secret fields."""

    id: int
    name: str
    type: str
    secret_version: int
    public: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Schedule:
    interval_s: float
    spread_s: float = 0.0
    timeout_s: float = 60.0


@dataclass(frozen=True)
class Probe:
    type: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowEntry:
    """One workflow for one object on this agent."""

    workflow: str
    kind: str
    object: str
    object_id: int | None
    properties: Mapping[str, Any]
    probe: Probe
    schedule: Schedule
    runs: bool
    outcome: str
    detail: str
    account: AccountRef | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.workflow, self.object)


@dataclass(frozen=True)
class AgentConfig:
    agent: str
    epoch: int
    etag: str | None
    workflows: tuple[WorkflowEntry, ...]
    #: the bundle as received, still sealed
    bundle: bytes = field(repr=False)
    #: SSH host keys the management group trusts (OpenSSH known_hosts lines; public data)
    known_hosts: tuple[str, ...] = ()

    @property
    def bundle_epoch(self) -> int:
        return manifest_of(self.bundle).epoch


def _freeze(value: Any) -> Any:
    """Dicts and lists as read-only mappings and tuples, so entries compare and hash safely."""
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class _Fields:
    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise InvalidInput(f"configuration: {where} must be an object")
        self.data: dict[str, Any] = data
        self.where = where

    def _bad(self, key: str, expected: str) -> InvalidInput:
        return InvalidInput(f"configuration: {self.where}.{key} must be {expected}")

    def text(self, key: str, *, optional: bool = False) -> str:
        value = self.data.get(key)
        if value is None and optional:
            return ""
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def integer(self, key: str, *, optional: bool = False) -> int | None:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if type(value) is not int or value < 0:
            raise self._bad(key, "a non-negative integer")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self._bad(key, "a non-negative number")
        return float(value)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return value


def _account(data: object, where: str) -> AccountRef | None:
    if data is None:
        return None
    f = _Fields(data, where)
    public = f.mapping("public")
    if not all(isinstance(v, str) for v in public.values()):
        raise InvalidInput(f"configuration: {where}.public values must be strings")
    account_id = f.integer("id")
    version = f.integer("secret_version")
    assert account_id is not None
    assert version is not None
    return AccountRef(
        id=account_id,
        name=f.text("name"),
        type=f.text("type"),
        secret_version=version,
        public=MappingProxyType(dict(public)),
    )


def _workflow(data: object, index: int) -> WorkflowEntry:
    where = f"workflows[{index}]"
    f = _Fields(data, where)
    probe = _Fields(f.data.get("probe"), f"{where}.probe")
    schedule = _Fields(f.data.get("schedule"), f"{where}.schedule")
    interval = schedule.number("interval_s")
    if interval <= 0:
        raise InvalidInput(f"configuration: {where}.schedule.interval_s must be positive")
    timeout = schedule.number("timeout_s", min(60.0, interval))
    runs = f.data.get("runs", True)
    if not isinstance(runs, bool):
        raise InvalidInput(f"configuration: {where}.runs must be true or false")
    return WorkflowEntry(
        workflow=f.text("workflow"),
        kind=f.text("kind", optional=True),
        object=f.text("object"),
        object_id=f.integer("object_id", optional=True),
        properties=_freeze(f.mapping("properties")),
        probe=Probe(probe.text("type"), _freeze(probe.mapping("config"))),
        schedule=Schedule(
            interval_s=interval,
            spread_s=schedule.number("spread_s", 0.0),
            timeout_s=timeout if timeout > 0 else min(60.0, interval),
        ),
        runs=runs,
        outcome=f.text("outcome", optional=True),
        detail=f.text("detail", optional=True),
        account=_account(f.data.get("account"), f"{where}.account"),
    )


def parse_config(
    document: Mapping[str, Any], *, agent_id: str, etag: str | None = None
) -> AgentConfig:
    """A typed configuration from the server's document (``InvalidInput`` if malformed)."""
    f = _Fields(dict(document), "document")
    agent = f.text("agent")
    if agent != agent_id:
        raise InvalidInput("configuration: it is addressed to another agent")
    epoch = f.integer("epoch")
    assert epoch is not None
    workflows = f.data.get("workflows", [])
    if not isinstance(workflows, list):
        raise InvalidInput("configuration: workflows must be a list")
    entries = tuple(_workflow(item, i) for i, item in enumerate(workflows))
    keys = [entry.key for entry in entries]
    if len(set(keys)) != len(keys):
        raise InvalidInput("configuration: a workflow is listed twice for the same object")
    try:
        bundle = base64.b64decode(f.text("bundle"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("configuration: bundle is not base64") from None
    known_hosts = f.data.get("known_hosts", [])
    if not isinstance(known_hosts, list) or not all(
        isinstance(line, str) and "\n" not in line for line in known_hosts
    ):
        raise InvalidInput("configuration: known_hosts must be a list of single lines")
    body_etag = f.data.get("etag")
    return AgentConfig(
        agent=agent,
        epoch=epoch,
        etag=etag or (body_etag if isinstance(body_etag, str) else None),
        workflows=entries,
        bundle=bundle,
        known_hosts=tuple(known_hosts),
    )


# -- secrets in memory -------------------------------------------------------------------------


class Secrets:
    """The opened bundle: secret fields by (account id, version). Never shows a value; keeps
    one :class:`Scrubber` over every secret it holds (built once, shared by all runs)."""

    __slots__ = ("_entries", "_lock", "_scrubber", "epoch")

    def __init__(self, entries: Iterable[BundleEntry] = (), *, epoch: int = 0) -> None:
        self._entries: dict[tuple[int, int], BundleEntry] = {e.key: e for e in entries}
        self._lock = threading.Lock()
        self._scrubber: Scrubber | None = None
        self.epoch = epoch

    @classmethod
    def of(cls, bundle: Bundle) -> Secrets:
        return cls(bundle.entries, epoch=bundle.epoch)

    def __repr__(self) -> str:
        return f"Secrets(epoch={self.epoch}, accounts={len(self._entries)}, values=<hidden>)"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self._entries)

    def __reduce__(self) -> Any:
        raise TypeError("Secrets cannot be pickled")

    def keys(self) -> frozenset[tuple[int, int]]:
        return frozenset(self._entries)

    def get(self, account_id: int, version: int) -> BundleEntry | None:
        return self._entries.get((account_id, version))

    def values(self) -> list[str]:
        """Every secret value held (for scrubbing)."""
        return [value for entry in self._entries.values() for value in entry.fields.values()]

    def scrubber(self) -> Scrubber:
        with self._lock:
            if self._scrubber is None:
                self._scrubber = Scrubber(self.values())
            return self._scrubber

    def clear(self) -> None:
        """Drop every secret (removal, a configuration that no longer holds them)."""
        with self._lock:
            self._entries = {}
            self._scrubber = None


# -- the store --------------------------------------------------------------------------------


class StaleConfiguration(InvalidInput):
    """A configuration or bundle older than the one the agent holds."""

    code = "stale-configuration"


class ConfigStore:
    """Accepts configurations, holds the current one and its secrets, keeps the cache."""

    def __init__(self, identity: AgentIdentity) -> None:
        self._identity = identity
        self._lock = threading.Lock()
        self.config: AgentConfig | None = None
        self.secrets = Secrets()

    def __repr__(self) -> str:
        epoch = self.config.epoch if self.config else None
        return f"ConfigStore(agent={self._identity.agent_id!r}, epoch={epoch})"

    @property
    def identity(self) -> AgentIdentity:
        return self._identity

    @property
    def held_epoch(self) -> int:
        return int(self._identity.state.get("config_epoch", 0))

    @property
    def held_bundle_epoch(self) -> int:
        return int(self._identity.state.get("bundle_epoch", 0))

    @property
    def etag(self) -> str | None:
        return self.config.etag if self.config else None

    def _open(self, config: AgentConfig) -> Secrets:
        if config.epoch < self.held_epoch:
            raise StaleConfiguration(
                f"configuration epoch {config.epoch} is older than the held {self.held_epoch}"
            )
        bundle_epoch = config.bundle_epoch  # DecryptionError if not a bundle at all
        if bundle_epoch < self.held_bundle_epoch:
            raise StaleConfiguration(
                f"bundle epoch {bundle_epoch} is older than the held {self.held_bundle_epoch}"
            )
        bundle = open_bundle(self._identity.keys, config.bundle, agent_id=config.agent)
        return Secrets.of(bundle)

    def accept(self, document: Mapping[str, Any], etag: str | None = None) -> AgentConfig:
        """Parse, check, open and cache a configuration document; it becomes current.

        Raises ``InvalidInput`` (malformed), :class:`StaleConfiguration` or
        ``DecryptionError``; the current configuration is then kept as it was.
        """
        config = parse_config(document, agent_id=self._identity.agent_id, etag=etag)
        with self._lock:
            secrets = self._open(config)
            cached = {"format": CACHE_FORMAT, "etag": config.etag, "document": dict(document)}
            write_private(self._identity.cache_file, json.dumps(cached).encode())
            self._identity.update_state(config_epoch=config.epoch, bundle_epoch=secrets.epoch)
            self._install(config, secrets)
        return config

    def load_cached(self) -> AgentConfig | None:
        """Resume with the cached configuration (None if there is none or it is unusable;
        an unusable cache is erased)."""
        path = self._identity.cache_file
        if not path.exists():
            return None
        try:
            cached = json.loads(path.read_bytes())
            if not isinstance(cached, dict) or cached.get("format") != CACHE_FORMAT:
                raise InvalidInput("unknown cache format")
            document = cached["document"]
            etag = cached.get("etag")
            config = parse_config(
                document, agent_id=self._identity.agent_id, etag=etag if etag else None
            )
            with self._lock:
                secrets = self._open(config)
                self._install(config, secrets)
        except (OSError, ValueError, KeyError, TypeError, RunAsError) as err:
            _log.warning("agent.cache_discarded", extra={"fields": {"reason": type(err).__name__}})
            erase_secrets(self._identity.data_dir)
            return None
        return config

    def _install(self, config: AgentConfig, secrets: Secrets) -> None:
        old = self.secrets
        self.config = config
        self.secrets = secrets
        if old is not secrets:
            old.clear()

    def erase(self) -> None:
        """Forget the configuration and every secret, in memory and in the cache (removal).
        The held epochs stay: a re-enrolled agent still refuses older bundles."""
        with self._lock:
            self.secrets.clear()
            self.secrets = Secrets()
            self.config = None
            erase_secrets(self._identity.data_dir)


__all__ = [
    "AccountRef",
    "AgentConfig",
    "ConfigStore",
    "Probe",
    "Schedule",
    "Secrets",
    "StaleConfiguration",
    "WorkflowEntry",
    "parse_config",
]
