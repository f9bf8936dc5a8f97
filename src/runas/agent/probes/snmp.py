"""The ``snmp`` probe: SNMP GETs and walks with the workflow's Run As account (pysnmp).

How the credential is handed over (docs/probes/snmp.md), by account type:

* ``community-string`` — SNMPv2c: ``community`` goes in every request's community field, the
  only place SNMPv2c has for it (in clear on the wire: that is the protocol; use snmpv3 where
  that matters);
* ``snmpv3`` — the User-based Security Model (RFC 3414): ``user`` (and ``context`` as the
  contextName); ``auth_key``/``priv_key`` are pass phrases that pysnmp localises to the agent's
  engine ID and uses to sign (HMAC) and encrypt the request. The pass phrases never travel.
  No auth protocol → noAuthNoPriv, auth only → authNoPriv, both → authPriv.

Each run builds a fresh ``SnmpEngine`` and closes it afterwards, so no USM key learnt for one
account lingers for the next. pysnmp is imported on first run (docs/probes/README.md) and
runs its asyncio API in a private event loop on the worker thread.

What maps to what:

* SNMPv3 reports usmStatsWrongDigests, usmStatsUnknownUserNames, usmStatsDecryptionErrors,
  usmStatsUnsupportedSecLevels, and an ``authorizationError`` (the agent's access control
  refused the user) → ``logon-failed``, the message names the report;
* no answer at all to the first request: SNMP agents *silently drop* a request with a wrong
  community (and net-snmp one it cannot decrypt, i.e. a wrong privacy key), so a timeout alone
  proves nothing. The probe then sends one unauthenticated SNMPv3 engine-ID discovery request
  (RFC 3414 §4), which any live SNMPv3-capable agent answers with a report. Answered → the
  agent is alive and ignored our credential → ``logon-failed``; unanswered → ``unknown``
  (unreachable). An agent that speaks SNMPv1/v2c only cannot be told apart from an
  unreachable one: it stays ``unknown``.
* unreachable, a timeout after the agent did answer, a protocol error, a missing OID →
  ``unknown``; otherwise the state comes from the thresholds on the numeric values.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from runas.agent.probes.base import ProbeContext
from runas.agent.probes.result import ProbeResult, ProbeState, logon_failed, unknown
from runas.domain.accounts import AccountType
from runas.errors import InvalidInput

DEFAULT_PORT = 161
#: seconds per request attempt, and attempts after the first, unless the config says otherwise
DEFAULT_REQUEST_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 1
#: rows a walk reads at most per column (a runaway table must not eat the run's time)
DEFAULT_MAX_ROWS = 1000
#: OIDs fetched in one GET request (agents refuse oversized PDUs with tooBig)
_GET_BATCH = 20
_BULK_REPETITIONS = 25
#: sysUpTime.0: what a config that asks for nothing fetches (proves the logon, nothing more)
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
_OID = re.compile(r"\.?([0-2](?:\.\d+)+)")
_PERF_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
#: share of the run's time the credentialed request may use, so that the engine-ID discovery
#: that tells "refused" from "unreachable" still fits when it times out
_REQUEST_SHARE = 0.6
_MARGIN_S = 0.05
#: characters of an agent's text value shown in a message
_TEXT_LIMIT = 400

#: pysnmp's names, resolved on first run (pysnmp is imported lazily)
AUTH_PROTOCOLS: Mapping[str, str] = {
    "MD5": "usmHMACMD5AuthProtocol",
    "SHA": "usmHMACSHAAuthProtocol",
    "SHA-224": "usmHMAC128SHA224AuthProtocol",
    "SHA-256": "usmHMAC192SHA256AuthProtocol",
    "SHA-384": "usmHMAC256SHA384AuthProtocol",
    "SHA-512": "usmHMAC384SHA512AuthProtocol",
}
#: AES-192/AES-256 are the Blumenthal key extension, as net-snmp names them (its Reeder variant
#: is "AES-256-C", which this catalogue does not offer); 3DES is Reeder's 3DES-EDE
PRIV_PROTOCOLS: Mapping[str, str] = {
    "DES": "usmDESPrivProtocol",
    "3DES": "usm3DESEDEPrivProtocol",
    "AES": "usmAesCfb128Protocol",
    "AES-192": "usmAesBlumenthalCfb192Protocol",
    "AES-256": "usmAesBlumenthalCfb256Protocol",
}
#: pysnmp error indications that are USM reports about the credential → the report's name
_USM_REPORTS: Mapping[str, str] = {
    "WrongDigest": "usmStatsWrongDigests",
    "UnknownUserName": "usmStatsUnknownUserNames",
    "DecryptionError": "usmStatsDecryptionErrors",
    "UnsupportedSecurityLevel": "usmStatsUnsupportedSecLevels",
}


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    warning: float | None
    critical: float | None
    #: True: the value is bad when it is *at or below* the limits (free space), else at or above
    below: bool = False

    def state_of(self, value: float) -> ProbeState:
        def hit(limit: float | None) -> bool:
            if limit is None:
                return False
            return value <= limit if self.below else value >= limit

        if hit(self.critical):
            return ProbeState.CRITICAL
        if hit(self.warning):
            return ProbeState.WARNING
        return ProbeState.HEALTHY

    def describe(self, state: ProbeState) -> str:
        limit = self.critical if state is ProbeState.CRITICAL else self.warning
        return f"{'<=' if self.below else '>='} {limit:g}"


@dataclass(frozen=True)
class SnmpConfig:
    host: str
    port: int
    #: OIDs to GET, in order (perf and message OIDs included)
    get: tuple[str, ...]
    #: perf name -> scalar OID
    perf: Mapping[str, str]
    #: column name -> OID of the subtree to walk (each numeric row is perf ``name.<index>``)
    walk: Mapping[str, str]
    thresholds: Mapping[str, Threshold]
    message_oid: str | None
    request_timeout_s: float
    retries: int
    max_rows: int


_KEYS = frozenset(
    {"host", "port", "get", "perf", "walk", "thresholds", "message_oid", "timeout", "retries",
     "max_rows"}
)  # fmt: skip


def _oid(value: Any, what: str) -> str:
    text = str(value).strip() if isinstance(value, str | int) else ""
    match = _OID.fullmatch(text)
    if match is None:
        # MIB names would need MIB files on every agent; numeric OIDs need nothing.
        raise InvalidInput(f"snmp probe: {what} must be a numeric OID such as 1.3.6.1.2.1.1.3.0")
    return match.group(1)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"snmp probe: {what} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"snmp probe: {what} must be a number") from None
    if not math.isfinite(number):
        raise InvalidInput(f"snmp probe: {what} must be a finite number")
    return number


def _whole(value: Any, what: str, low: int, high: int) -> int:
    number = _number(value, what)
    if number != int(number) or not low <= number <= high:
        raise InvalidInput(f"snmp probe: {what} must be a whole number from {low} to {high}")
    return int(number)


def _named_oids(value: Any, what: str) -> dict[str, str]:
    if isinstance(value, str):
        return {_oid(value, what): _oid(value, what)}
    if not isinstance(value, Mapping) or not value:
        raise InvalidInput(f"snmp probe: {what} must be an OID or a mapping of name -> OID")
    out: dict[str, str] = {}
    for name, oid in value.items():
        if not isinstance(name, str) or not _PERF_NAME.fullmatch(name):
            raise InvalidInput(f"snmp probe: {what} names must be identifiers (ifInOctets)")
        out[name] = _oid(oid, f"{what} {name!r}")
    return out


def _threshold(name: str, value: Any) -> Threshold:
    if not isinstance(value, Mapping) or set(value) - {"warning", "critical", "below"}:
        raise InvalidInput(
            f"snmp probe: threshold {name!r} takes warning, critical and below (true/false)"
        )
    warning = None if value.get("warning") is None else _number(value["warning"], name)
    critical = None if value.get("critical") is None else _number(value["critical"], name)
    below = value.get("below", False)
    if isinstance(below, str) and below in ("true", "false"):
        below = below == "true"  # a {placeholder} renders as text
    if not isinstance(below, bool):
        raise InvalidInput(f"snmp probe: threshold {name!r} 'below' must be true or false")
    if warning is None and critical is None:
        raise InvalidInput(f"snmp probe: threshold {name!r} needs warning and/or critical")
    if (
        warning is not None
        and critical is not None
        and ((critical > warning) if below else (critical < warning))
    ):
        raise InvalidInput(
            f"snmp probe: threshold {name!r}: critical must be "
            f"{'at or below' if below else 'at or above'} warning"
        )
    return Threshold(warning, critical, below)


def parse_config(config: Mapping[str, Any]) -> SnmpConfig:
    """The probe's configuration (placeholders already filled); InvalidInput names the key."""
    unknown_keys = sorted(set(config) - _KEYS)
    if unknown_keys:
        raise InvalidInput(
            f"snmp probe: unknown key {', '.join(map(repr, unknown_keys))} "
            f"(known: {', '.join(sorted(_KEYS))})"
        )
    host = config.get("host")
    if not isinstance(host, str) or not host.strip():
        raise InvalidInput("snmp probe: host is required")
    port = _whole(config.get("port", DEFAULT_PORT), "port", 1, 65535)
    raw_get = config.get("get", [])
    if isinstance(raw_get, str):
        raw_get = [raw_get]
    if not isinstance(raw_get, list | tuple):
        raise InvalidInput("snmp probe: get must be a list of OIDs")
    get = [_oid(o, "every OID in get") for o in raw_get]
    perf = _named_oids(config["perf"], "perf") if config.get("perf") is not None else {}
    walk = _named_oids(config["walk"], "walk") if config.get("walk") is not None else {}
    message_oid = _oid(config["message_oid"], "message_oid") if config.get("message_oid") else None
    raw_thresholds = config.get("thresholds") or {}
    if not isinstance(raw_thresholds, Mapping):
        raise InvalidInput("snmp probe: thresholds must map perf names to {warning, critical}")
    thresholds = {str(name): _threshold(str(name), t) for name, t in raw_thresholds.items()}
    for name in thresholds:
        if name not in perf and name not in walk:
            raise InvalidInput(
                f"snmp probe: threshold {name!r} names no perf or walk value (known: "
                f"{', '.join(sorted({*perf, *walk})) or 'none'})"
            )
    for oid in (*perf.values(), *([message_oid] if message_oid else [])):
        if oid not in get:
            get.append(oid)
    if not get and not walk:
        get = [SYS_UPTIME]
    return SnmpConfig(
        host=host.strip(),
        port=port,
        get=tuple(dict.fromkeys(get)),
        perf=perf,
        walk=walk,
        thresholds=thresholds,
        message_oid=message_oid,
        request_timeout_s=_number(config.get("timeout", DEFAULT_REQUEST_TIMEOUT_S), "timeout"),
        retries=_whole(config.get("retries", DEFAULT_RETRIES), "retries", 0, 10),
        max_rows=_whole(config.get("max_rows", DEFAULT_MAX_ROWS), "max_rows", 1, 1_000_000),
    )


# -- the credential ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """What the account gives the SNMP request. Secrets stay out of the repr."""

    version: str  # "v2c" or "v3"
    #: the identity for messages: "community" or the user name with its security level
    label: str
    community: str = field(default="", repr=False)
    user: str = ""
    context: str = ""
    auth_protocol: str | None = None
    auth_key: str | None = field(default=None, repr=False)
    priv_protocol: str | None = None
    priv_key: str | None = field(default=None, repr=False)

    @property
    def level(self) -> str:
        if self.priv_protocol:
            return "authPriv"
        return "authNoPriv" if self.auth_protocol else "noAuthNoPriv"


class _Refused(Exception):
    """The account cannot be used (internal: becomes an ``unknown`` result, never escapes)."""


def credential_of(fields: Mapping[str, Any], account_type: str) -> Credential:
    if account_type == AccountType.COMMUNITY_STRING.value:
        community = fields.get("community")
        if not isinstance(community, str) or not community:
            raise _Refused("the community-string account has no community")
        return Credential("v2c", "the community string", community=community)
    if account_type == AccountType.SNMPV3.value:
        user = fields.get("user")
        if not isinstance(user, str) or not user:
            raise _Refused("the snmpv3 account has no user name")
        auth_protocol = fields.get("auth_protocol") or None
        priv_protocol = fields.get("priv_protocol") or None
        auth_key = fields.get("auth_key") or None
        priv_key = fields.get("priv_key") or None
        if auth_protocol is not None and str(auth_protocol).upper() not in AUTH_PROTOCOLS:
            raise _Refused(
                f"SNMPv3 authentication protocol {auth_protocol!r} is not supported by this "
                f"probe (supported: {', '.join(AUTH_PROTOCOLS)})"
            )
        if priv_protocol is not None and str(priv_protocol).upper() not in PRIV_PROTOCOLS:
            raise _Refused(
                f"SNMPv3 privacy protocol {priv_protocol!r} is not supported by this probe "
                f"(supported: {', '.join(PRIV_PROTOCOLS)})"
            )
        if (auth_protocol is None) != (auth_key is None) or (priv_protocol is None) != (
            priv_key is None
        ):
            raise _Refused("the snmpv3 account has a protocol without its key or the reverse")
        if priv_protocol is not None and auth_protocol is None:
            raise _Refused("the snmpv3 account has privacy without authentication")
        cred = Credential(
            "v3",
            "",
            user=user,
            context=str(fields.get("context") or ""),
            auth_protocol=str(auth_protocol).upper() if auth_protocol else None,
            auth_key=auth_key,
            priv_protocol=str(priv_protocol).upper() if priv_protocol else None,
            priv_key=priv_key,
        )
        context = f", context {cred.context!r}" if cred.context else ""
        return replace(cred, label=f"user {user!r} ({cred.level}{context})")
    raise _Refused(
        f"the snmp probe needs a community-string or snmpv3 account, not {account_type!r}"
        + (" (the workflow has no Run As account here)" if account_type == "none" else "")
    )


# -- one run ----------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """What the SNMP exchange gave; texts here come from pysnmp's fixed descriptions, the
    config or the agent's values, never from the credential."""

    values: dict[str, Any] = field(default_factory=dict)
    #: walk column name -> [(index suffix, value)]
    rows: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    #: the agent answered at least one request
    answered: bool = False
    #: the first request timed out with no answer at all
    silent: bool = False
    report: str | None = None
    error: str | None = None
    truncated: list[str] = field(default_factory=list)


def _error_text(indication: Any) -> str:
    return str(indication) or type(indication).__name__


async def _exchange(cred: Credential, cfg: SnmpConfig, deadline: float) -> _Outcome:
    from pysnmp.hlapi.v3arch import asyncio as hl  # first use only
    from pysnmp.proto import rfc1905

    out = _Outcome()
    engine = hl.SnmpEngine()
    try:
        if cred.version == "v2c":
            auth: Any = hl.CommunityData(cred.community, mpModel=1)  # noqa: S508 - the account's choice
        else:
            auth = hl.UsmUserData(
                cred.user,
                authKey=cred.auth_key,
                privKey=cred.priv_key,
                authProtocol=getattr(hl, AUTH_PROTOCOLS[cred.auth_protocol])
                if cred.auth_protocol
                else hl.usmNoAuthProtocol,
                privProtocol=getattr(hl, PRIV_PROTOCOLS[cred.priv_protocol])
                if cred.priv_protocol
                else hl.usmNoPrivProtocol,
            )
        target_kind = hl.Udp6TransportTarget if ":" in cfg.host else hl.UdpTransportTarget
        # Every attempt of the first request must fit in its share of the time left (measured
        # now: building the engine takes a while on a loaded machine), so that a silent agent
        # still leaves time to ask whether it is alive at all.
        left = max(0.1, deadline - time.monotonic())
        attempt_s = min(cfg.request_timeout_s, left * _REQUEST_SHARE / (cfg.retries + 1))
        try:
            target = await target_kind.create(
                (cfg.host, cfg.port), timeout=attempt_s, retries=cfg.retries
            )
        except Exception:  # pysnmp wraps resolver errors in PySnmpError
            out.error = f"cannot resolve host {cfg.host!r}"
            return out
        context = hl.ContextData(contextName=cred.context.encode("utf-8"))
        missing = (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)

        def failed(indication: Any, status: Any, index: Any) -> bool:
            if indication:
                name = type(indication).__name__
                if name in _USM_REPORTS:
                    out.report = _USM_REPORTS[name]
                elif name == "RequestTimedOut" and not out.answered:
                    out.silent = True
                else:
                    out.error = _error_text(indication)
                return True
            out.answered = True
            if status:
                text = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
                if text == "authorizationError":
                    out.report = "authorizationError"
                else:
                    out.error = f"the agent answered {text} (index {int(index or 0)})"
                return True
            return False

        for start in range(0, len(cfg.get), _GET_BATCH):
            batch = cfg.get[start : start + _GET_BATCH]
            indication, status, index, binds = await hl.get_cmd(
                engine, auth, target, context,
                *(hl.ObjectType(hl.ObjectIdentity(oid)) for oid in batch),
                lookupMib=False,
            )  # fmt: skip
            if failed(indication, status, index):
                return out
            for oid, (_, value) in zip(batch, binds, strict=False):
                out.values[oid] = None if isinstance(value, missing) else value

        for name, column in cfg.walk.items():
            rows: list[tuple[str, Any]] = []
            out.rows[name] = rows
            prefix = column + "."
            walker = hl.bulk_walk_cmd(
                engine, auth, target, context, 0, _BULK_REPETITIONS,
                hl.ObjectType(hl.ObjectIdentity(column)),
                lookupMib=False, lexicographicMode=False,
            )  # fmt: skip
            async with contextlib.aclosing(walker):
                async for indication, status, index, binds in walker:
                    if failed(indication, status, index):
                        return out
                    for oid, value in binds:
                        text = str(oid)
                        if text.startswith(prefix) and not isinstance(value, missing):
                            rows.append((text[len(prefix) :], value))
                    if len(rows) >= cfg.max_rows:
                        del rows[cfg.max_rows :]
                        out.truncated.append(name)
                        break
        return out
    finally:
        engine.close_dispatcher()


# -- is anybody there? ------------------------------------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _integer(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def _octets(data: bytes) -> bytes:
    return _tlv(0x04, data)


def _sequence(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def discovery_request(msg_id: int) -> bytes:
    """An SNMPv3 engine-ID discovery request (RFC 3414 §4): a reportable, unauthenticated
    GET with an empty engine ID, user name and varbind list. It carries no credential."""
    header = _sequence(_integer(msg_id), _integer(65507), _octets(b"\x04"), _integer(3))
    usm = _sequence(
        _octets(b""), _integer(0), _integer(0), _octets(b""), _octets(b""), _octets(b"")
    )
    pdu = _tlv(0xA0, _integer(msg_id) + _integer(0) + _integer(0) + _sequence())
    return _sequence(_integer(3), header, _octets(usm), _sequence(_octets(b""), _octets(b""), pdu))


def _read_tlv(data: bytes, at: int) -> tuple[int, bytes, int]:
    """(tag, content, offset after it) of the BER element at ``at``; ValueError if malformed."""
    if at + 2 > len(data):
        raise ValueError("short")
    tag, size, at = data[at], data[at + 1], at + 2
    if size & 0x80:
        count = size & 0x7F
        if not 0 < count <= 4 or at + count > len(data):
            raise ValueError("bad length")
        size, at = int.from_bytes(data[at : at + count], "big"), at + count
    if at + size > len(data):
        raise ValueError("short")
    return tag, data[at : at + size], at + size


def _is_v3_answer(data: bytes, msg_id: int) -> bool:
    """``data`` is an SNMPv3 message (``SEQUENCE {version 3, SEQUENCE {msgID ...} ...}``)
    answering ``msg_id``. Only the header is read: the report inside needs no parsing."""
    try:
        tag, message, _ = _read_tlv(data, 0)
        if tag != 0x30:
            return False
        tag, version, after = _read_tlv(message, 0)
        if tag != 0x02 or int.from_bytes(version, "big", signed=True) != 3:
            return False
        tag, header, _ = _read_tlv(message, after)
        if tag != 0x30:
            return False
        tag, answered_id, _ = _read_tlv(header, 0)
        return tag == 0x02 and int.from_bytes(answered_id, "big", signed=True) == msg_id
    except ValueError:
        return False


def agent_answers_discovery(host: str, port: int, timeout_s: float) -> bool:
    """Whether an SNMPv3 agent answers engine-ID discovery at host:port within timeout_s."""
    deadline = time.monotonic() + timeout_s
    msg_id = int.from_bytes(os.urandom(3), "big") + 1
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except (OSError, IndexError):
        return False
    with socket.socket(family, kind, proto) as sock:
        try:
            sock.connect(address)
            sock.send(discovery_request(msg_id))
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if _is_v3_answer(sock.recv(65535), msg_id):
                    return True
        except OSError:  # timeout, ICMP port unreachable (connection refused), no route
            return False
    return False


# -- what it means ----------------------------------------------------------------------------


def _number_of(value: Any) -> float | None:
    from pyasn1.type import univ  # first use only

    if isinstance(value, univ.Integer):  # Integer32, Counter32/64, Gauge32, TimeTicks
        return float(int(value))
    if isinstance(value, univ.OctetString):
        try:  # agents give some gauges as text (UCD laLoad "0.42")
            number = float(bytes(value).decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return None
        return number if math.isfinite(number) else None
    return None


def _text_of(value: Any) -> str:
    from pyasn1.type import univ  # first use only

    # A plain OCTET STRING (sysDescr) is text; subtypes (IpAddress) print themselves.
    if type(value) is univ.OctetString or type(value).__name__ == "OctetString":
        text = bytes(value).decode("utf-8", "replace")
    else:
        text = str(value.prettyPrint())
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


_WORSE = {
    ProbeState.HEALTHY: 0,
    ProbeState.WARNING: 1,
    ProbeState.CRITICAL: 2,
    ProbeState.UNKNOWN: 3,
}


def interpret(cfg: SnmpConfig, cred: Credential, out: _Outcome) -> ProbeResult:
    """The result of a complete exchange (no report, no error)."""
    perf: dict[str, float] = {}
    problems: list[str] = []
    for name, oid in cfg.perf.items():
        value = out.values.get(oid)
        number = None if value is None else _number_of(value)
        if value is None:
            problems.append(f"no value at {oid} ({name})")
        elif number is None:
            problems.append(f"{name} ({oid}) is not a number")
        else:
            perf[name] = number
    missing = [
        oid for oid in cfg.get if out.values.get(oid) is None and oid not in cfg.perf.values()
    ]
    problems.extend(f"no value at {oid}" for oid in missing)
    row_names: dict[str, str] = {}
    for name, rows in out.rows.items():
        for suffix, value in rows:
            number = _number_of(value)
            if number is not None:
                perf[f"{name}.{suffix}"] = number
                row_names[f"{name}.{suffix}"] = name
        if not rows:
            problems.append(f"the walk of {name} ({cfg.walk[name]}) found nothing")

    state = ProbeState.HEALTHY
    breaches: list[str] = []
    for perf_name, number in perf.items():
        threshold = cfg.thresholds.get(perf_name) or cfg.thresholds.get(
            row_names.get(perf_name, "")
        )
        if threshold is None:
            continue
        verdict = threshold.state_of(number)
        if verdict is not ProbeState.HEALTHY:
            breaches.append(f"{perf_name} = {number:g} {threshold.describe(verdict)}")
            if _WORSE[verdict] > _WORSE[state]:
                state = verdict
    if problems:
        state = ProbeState.UNKNOWN

    values = len(out.values) + sum(len(rows) for rows in out.rows.values())
    summary = f"{values} value{'s' if values != 1 else ''} from {cfg.host}:{cfg.port} " + (
        "(SNMPv2c)" if cred.version == "v2c" else f"(SNMPv3 {cred.level})"
    )
    if cfg.message_oid and out.values.get(cfg.message_oid) is not None:
        summary = _text_of(out.values[cfg.message_oid]).strip() or summary
    parts = [*problems, *breaches]
    if out.truncated:
        parts.append(f"walk cut at {cfg.max_rows} rows: {', '.join(out.truncated)}")
    message = "; ".join([*parts, summary]) if parts else summary
    return ProbeResult(state, message, None, perf=perf)


class SnmpProbe:
    """The ``snmp`` probe in the registry's shape (:mod:`runas.agent.probes.base`)."""

    type = "snmp"

    def run(self, context: ProbeContext) -> ProbeResult:
        start = time.monotonic()
        cfg = parse_config(context.config)
        document = context.document.to_dict()
        try:
            cred = credential_of(document.get("fields", {}), str(document.get("type")))
        except _Refused as err:
            return unknown(str(err), duration_s=time.monotonic() - start)
        budget = max(0.2, context.timeout_s - _MARGIN_S)
        deadline = start + budget
        where = f"{cfg.host}:{cfg.port}"

        def done(result: ProbeResult) -> ProbeResult:
            return ProbeResult(
                result.state,
                result.message,
                None,
                perf=result.perf,
                auth_failure=result.auth_failure,
                duration_s=time.monotonic() - start,
                timed_out=result.timed_out,
            )

        from pysnmp.error import PySnmpError  # first use only

        try:
            out = asyncio.run(
                asyncio.wait_for(_exchange(cred, cfg, deadline), deadline - time.monotonic())
            )
        except PySnmpError as err:
            # Its text may show what it was given (a UsmUserData): the class name only.
            return done(
                unknown(f"SNMP agent {where}: pysnmp refused the request ({type(err).__name__})")
            )
        except TimeoutError:
            return done(
                ProbeResult(
                    ProbeState.UNKNOWN,
                    f"SNMP agent {where} did not finish within {context.timeout_s:g} s",
                    None,
                    timed_out=True,
                )
            )
        if out.report is not None:
            return done(
                logon_failed(
                    f"SNMP agent {where} refused {cred.label}: {out.report}"
                    + (" (the agent's access control refused the user)"
                       if out.report == "authorizationError" else "")
                )
            )  # fmt: skip
        if out.error is not None:
            return done(unknown(f"SNMP agent {where}: {out.error}"))
        if out.silent:
            left = deadline - time.monotonic()
            if left <= 0.01:
                return done(
                    unknown(
                        f"no answer from SNMP agent {where} within {context.timeout_s:g} s, "
                        "and no time left to ask whether it is there at all"
                    )
                )
            if agent_answers_discovery(cfg.host, cfg.port, left):
                what = (
                    "community refused"
                    if cred.version == "v2c"
                    else "request dropped (wrong privacy key, unknown context or no access)"
                )
                return done(
                    logon_failed(
                        f"no answer to {cred.label} from SNMP agent {where} while the agent "
                        f"answers SNMPv3 discovery: {what}"
                    )
                )
            return done(unknown(f"SNMP agent {where} is unreachable: no answer to any request"))
        return done(interpret(cfg, cred, out))


PROBE = SnmpProbe()

__all__ = [
    "AUTH_PROTOCOLS",
    "PRIV_PROTOCOLS",
    "PROBE",
    "Credential",
    "SnmpConfig",
    "SnmpProbe",
    "Threshold",
    "agent_answers_discovery",
    "credential_of",
    "discovery_request",
    "interpret",
    "parse_config",
]
