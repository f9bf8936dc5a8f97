"""What every probe gets and gives, and the registry the worker picks probes from.

A probe is a callable object with a ``type`` (its name in packs, a key of
:data:`runas.domain.probes.PROBE_ACCOUNT_TYPES`) and ``run(context) -> ProbeResult``. It is
called from a worker thread, once per (workflow, object) run, and must:

* use the credential only the way its peer expects it (a SCRAM exchange, an HTTP
  ``Authorization`` header, an SSH user-auth request, an LDAP bind, SNMP USM keys) — never on a
  command line, in an environment variable, a log line or an exception message;
* report a refused credential as a typed :class:`~runas.agent.probes.result.AuthFailure`
  (``logon-failed``, or ``elevation-failed`` for sudo/su), and anything else the peer does
  (unreachable, timed out, a query error) as a state with a message — never raise for it;
* finish within ``context.timeout_s``.

The worker scrubs every text of the result of every secret the agent holds afterwards; a probe
need not, but must not rely on it either (a secret it formats into a message is still a bug).

Probe modules are imported on first use (:func:`probe_for`): an agent that never runs an SNMP
workflow never imports pysnmp.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from runas.agent.handoff import CredentialDocument, HandOff
from runas.agent.probes.result import ProbeResult
from runas.agent.scrub import Scrubber
from runas.domain.probes import PROBE_ACCOUNT_TYPES
from runas.errors import InvalidInput


@dataclass(frozen=True)
class ProbeContext:
    """One run of one workflow for one object. Nothing here but ``document`` holds a secret."""

    workflow: str
    #: discovery, rule, monitor or task
    kind: str
    #: full name of the object the workflow runs for
    object: str
    #: the agent's computer (its agent id)
    computer: str
    #: the probe's configuration from the pack, ``{property}`` placeholders filled
    config: Mapping[str, Any]
    #: the same, as the pack wrote it (the ``command`` probe fills its arguments itself)
    raw_config: Mapping[str, Any]
    #: the object's properties (non-secret by the class model)
    properties: Mapping[str, Any]
    #: the credential (type ``none`` for the action account)
    document: CredentialDocument = field(repr=False)
    timeout_s: float
    #: every secret the agent holds, for a probe that echoes peer output (scrub before returning)
    scrubber: Scrubber = field(repr=False)
    #: how the ``command`` probe hands the document over
    handoff: HandOff = HandOff.STDIN
    #: (uid, gid) of the action user, when the agent runs as root and the run has no account
    action_user: tuple[int, int] | None = None
    kill_grace_s: float = 2.0
    #: SSH host keys the management group trusts, OpenSSH ``known_hosts`` lines (docs/probes.md)
    known_hosts: tuple[str, ...] = ()


class Probe(Protocol):
    @property
    def type(self) -> str: ...

    def run(self, context: ProbeContext) -> ProbeResult: ...


#: probe type -> the module that defines ``PROBE``
_MODULES: Mapping[str, str] = {name: f"runas.agent.probes.{name}" for name in PROBE_ACCOUNT_TYPES}
_loaded: dict[str, Probe | None] = {}


def probe_for(probe_type: str) -> Probe | None:
    """The probe of ``probe_type``, or None when this agent cannot run it (unknown type, or
    its module or library is missing here)."""
    if probe_type in _loaded:
        return _loaded[probe_type]
    module_name = _MODULES.get(probe_type)
    probe: Probe | None = None
    if module_name is not None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            probe = None
        else:
            probe = getattr(module, "PROBE", None)
    _loaded[probe_type] = probe
    return probe


def available(probe_type: str) -> bool:
    return probe_for(probe_type) is not None


# -- configuration ----------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.-]*)\}|[{}]")


def fill(text: str, parameters: Mapping[str, str], what: str) -> str:
    """``text`` with ``{name}`` placeholders filled from ``parameters`` (``{{``/``}}`` for a
    literal brace). InvalidInput names ``what`` for an unknown name or a lone brace."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None:
            raise InvalidInput(
                f"{what} has an unmatched brace (write {{{{ or }}}} for a literal one)"
            )
        if name not in parameters:
            raise InvalidInput(f"{what} uses unknown parameter {{{name}}}")
        return parameters[name]

    return _PLACEHOLDER.sub(one, text)


def parameters_of(properties: Mapping[str, Any]) -> dict[str, str]:
    """An object's scalar properties as text, for placeholders."""
    out: dict[str, str] = {}
    for name, value in properties.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[name] = str(value)
    return out


def render_config(
    config: Mapping[str, Any], parameters: Mapping[str, str], where: str = "probe config"
) -> dict[str, Any]:
    """A copy of ``config`` with placeholders filled in every string, at any depth."""

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, str):
            return fill(value, parameters, path)
        if isinstance(value, Mapping):
            return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return {k: walk(v, f"{where}.{k}") for k, v in config.items()}


__all__ = [
    "Probe",
    "ProbeContext",
    "available",
    "fill",
    "parameters_of",
    "probe_for",
    "render_config",
]
