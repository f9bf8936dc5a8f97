"""The probe catalogue: which probe types exist and which account types each can use.

A probe is the way an agent runs a workflow (docs/probes.md). Each one hands a credential to
its peer in the peer's own protocol, so it can only use the account types that protocol knows:
an SNMP agent has no use for a Windows password, PostgreSQL none for an SSH key. The catalogue
is pure data, shared by the pack importer (a workflow whose profile allows an account type its
probe cannot use is refused at import, before any administrator associates an account) and by
the agent, whose probe registry must implement exactly these types.

``command`` runs a program with the typed hand-off and accepts every type: the program reads
the document and branches on its ``type``.
"""

from __future__ import annotations

from collections.abc import Mapping

from runas.domain.accounts import AccountType

#: probe type -> the account types it accepts (None: every type)
PROBE_ACCOUNT_TYPES: Mapping[str, frozenset[AccountType] | None] = {
    "command": None,
    "sql": frozenset({AccountType.SIMPLE, AccountType.BASIC, AccountType.WINDOWS}),
    "http": frozenset({AccountType.BASIC, AccountType.DIGEST, AccountType.BINARY}),
    "ssh": frozenset({AccountType.UNIX_MONITORING, AccountType.UNIX_MAINTENANCE}),
    "ldap": frozenset({AccountType.WINDOWS, AccountType.SIMPLE}),
    "snmp": frozenset({AccountType.COMMUNITY_STRING, AccountType.SNMPV3}),
}


def probe_types() -> tuple[str, ...]:
    return tuple(sorted(PROBE_ACCOUNT_TYPES))


def unusable_types(
    probe_type: str, allowed: tuple[AccountType, ...]
) -> tuple[AccountType, ...] | None:
    """The account types a profile allows (``allowed``; empty = every type) that ``probe_type``
    cannot use; an empty tuple when they all fit, None for an unknown probe type."""
    if probe_type not in PROBE_ACCOUNT_TYPES:
        return None
    accepted = PROBE_ACCOUNT_TYPES[probe_type]
    if accepted is None:
        return ()
    wanted = allowed or tuple(AccountType)
    return tuple(t for t in wanted if t not in accepted)


__all__ = ["PROBE_ACCOUNT_TYPES", "probe_types", "unusable_types"]
