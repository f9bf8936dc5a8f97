"""The ``ldap`` probe: log on to an LDAP directory with a Run As account, search it, and
optionally discover objects from it (docs/probes/ldap.md).

**How the credential is handed over.** Only as an LDAP simple bind (RFC 4513 §5.1.3): the
password goes, inside the BindRequest, on the probe's own TCP connection to the directory —
protected by TLS when ``tls`` is ``start`` (StartTLS before the bind) or ``ldaps``. It is never
put on a command line, in an environment variable, a log line, a message or an exception text;
every text that comes from the peer or from ldap3 is scrubbed before it goes into a result.

**Which name is bound.** A ``simple`` account whose user is a DN binds that DN. Otherwise (a
``windows`` account, ``user`` + FQDN ``domain``, or a ``simple`` account with a plain name,
``DOMAIN\\user`` or a UPN) the probe *searches, then binds*: an anonymous search under
``user_base`` with ``user_filter`` (``{user}``, ``{domain}`` and ``{upn}`` filled in, escaped
per RFC 4515) finds the entry, and its DN is bound with the password. Active Directory binds
logon names itself, but OpenLDAP and most other directories bind DNs only, and a DN built from a
template (``uid={user},ou=...``) breaks as soon as the tree has more than one branch. Where
anonymous search is refused (AD), ``bind_name`` (a template such as ``{upn}``) binds the name
directly instead. In a pack, write ``{{user}}``: single braces are object properties.

**What it reports.** invalidCredentials (49) or inappropriateAuthentication (48) on the bind, or
no entry for the logon name, is ``logon-failed``; an unreachable directory, a timeout, a
refused anonymous search or any other protocol error is ``unknown`` (it proves nothing about
the credential). After the bind: a monitor or rule searches (``base``, ``filter``, ``scope``,
``attributes``) and classifies the number of entries and the response time by ``thresholds``,
or reports that the bind works when no ``base`` is given; a discovery workflow searches
``discover`` and returns one object per entry. Perf: ``connect_ms``, ``bind_ms``, ``search_ms``,
``entries`` (and ``resolve_ms`` when the name was searched).

ldap3 runs synchronously in the worker thread; connect and receive timeouts come from what is
left of ``context.timeout_s`` before each step.
"""

from __future__ import annotations

import contextlib
import math
import re
import ssl
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# ldap3 2.9.1 imports pyasn1 names that pyasn1 0.6 deprecates (tagMap, typeMap): harmless, and
# not ours to fix; a warning per agent start would only teach operators to ignore warnings.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core.exceptions import (
        LDAPException,
        LDAPInvalidDnError,
        LDAPSocketOpenError,
        LDAPSocketReceiveError,
        LDAPStartTLSError,
    )
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

from runas.agent.probes.base import ProbeContext
from runas.agent.probes.result import (
    ProbeResult,
    ProbeState,
    logon_failed,
)
from runas.agent.scrub import Scrubber
from runas.errors import InvalidInput

DEFAULT_USER_FILTER = "(|(sAMAccountName={user})(userPrincipalName={upn})(uid={user}))"
#: the RFC 2696 paged-results control (AD returns at most 1000 entries per page)
_PAGED_RESULTS = "1.2.840.113556.1.4.319"
_PAGE_SIZE = 500
DEFAULT_MAX_OBJECTS = 10_000
#: bind results that mean "this credential was refused"
_REFUSED = {49: "invalidCredentials", 48: "inappropriateAuthentication"}
_SCOPES = {
    "base": ldap3.BASE,
    "one": ldap3.LEVEL,
    "onelevel": ldap3.LEVEL,
    "sub": ldap3.SUBTREE,
    "subtree": ldap3.SUBTREE,
}
_TLS_MODES = ("none", "start", "ldaps")
_LOGIN_TOKEN = re.compile(r"\{(user|domain|upn)\}")
_TUPLE_REPR = re.compile(r"""^[(\['"]+|['",)\]]+$""")
#: OpenSSL's source location, "(_ssl.c:1006)": noise for an operator
_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


# -- configuration ----------------------------------------------------------------------------


def _text(config: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = config.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(f"ldap probe: {key!r} must be text")
    return str(value)


def _number(config: Mapping[str, Any], key: str, where: str) -> float | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidInput(f"ldap probe: {where}.{key} must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"ldap probe: {where}.{key} must be a number")
    return float(value)


def _mapping(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"ldap probe: {key!r} must be a mapping")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"ldap probe: {where} must be a list of attribute names")
    return tuple(value)


def _scope(config: Mapping[str, Any], where: str) -> Any:
    name = (_text(config, "scope", "sub") or "sub").lower()
    if name not in _SCOPES:
        raise InvalidInput(f"ldap probe: {where}scope must be one of base, one, sub")
    return _SCOPES[name]


@dataclass(frozen=True)
class _Thresholds:
    """Bounds on the entry count and the response time (bind + search) of a monitor."""

    entries: Mapping[str, float] = field(default_factory=dict)
    response_ms: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> _Thresholds:
        raw = _mapping(config, "thresholds")
        unknown = sorted(set(raw) - {"entries", "response_ms"})
        if unknown:
            raise InvalidInput(f"ldap probe: unknown thresholds {', '.join(unknown)}")
        out: dict[str, dict[str, float]] = {}
        for name, keys in (
            ("entries", ("critical_below", "warning_below", "warning_above", "critical_above")),
            ("response_ms", ("warning_above", "critical_above")),
        ):
            given = _mapping(raw, name)
            bad = sorted(set(given) - set(keys))
            if bad:
                raise InvalidInput(
                    f"ldap probe: thresholds.{name} knows {', '.join(keys)} (not {bad[0]})"
                )
            out[name] = {
                k: n for k in keys if (n := _number(given, k, f"thresholds.{name}")) is not None
            }
        return cls(out["entries"], out["response_ms"])

    def classify(self, entries: int, response_ms: float) -> tuple[ProbeState, str]:
        """The worst state the numbers reach, and why (empty when healthy)."""
        checks = (
            (ProbeState.CRITICAL, "critical_below", entries, "<", "entries"),
            (ProbeState.CRITICAL, "critical_above", entries, ">", "entries"),
            (ProbeState.WARNING, "warning_below", entries, "<", "entries"),
            (ProbeState.WARNING, "warning_above", entries, ">", "entries"),
        )
        for state, key, value, op, what in checks:
            bound = self.entries.get(key)
            if bound is not None and (value < bound if op == "<" else value > bound):
                return state, f"{value} {what} {op} {bound:g}"
        for state, key in ((ProbeState.CRITICAL, "critical_above"),
                           (ProbeState.WARNING, "warning_above")):  # fmt: skip
            bound = self.response_ms.get(key)
            if bound is not None and response_ms > bound:
                return state, f"response {response_ms:.0f} ms > {bound:g} ms"
        return ProbeState.HEALTHY, ""


@dataclass(frozen=True)
class _Discover:
    base: str
    filter: str
    scope: Any
    class_id: str
    #: object property -> LDAP attribute ("dn" is the entry's DN)
    key: Mapping[str, str]
    properties: Mapping[str, str]
    host: str | None
    max_objects: int

    @classmethod
    def parse(cls, raw: Mapping[str, Any], default_base: str | None) -> _Discover:
        base = _text(raw, "base", default_base)
        class_id = _text(raw, "class")
        if not base or not class_id:
            raise InvalidInput("ldap probe: discover needs a base and a class")
        maps: list[dict[str, str]] = []
        for name in ("key", "properties"):
            given = _mapping(raw, name)
            if not all(isinstance(v, str) and v for v in given.values()):
                raise InvalidInput(f"ldap probe: discover.{name} maps properties to attributes")
            maps.append({str(k): str(v) for k, v in given.items()})
        if not maps[0]:
            raise InvalidInput("ldap probe: discover.key needs at least one property")
        limit = _number(raw, "max_objects", "discover")
        return cls(
            base=base,
            filter=_text(raw, "filter", "(objectClass=*)") or "(objectClass=*)",
            scope=_scope(raw, "discover."),
            class_id=class_id,
            key=maps[0],
            properties=maps[1],
            host=_text(raw, "host"),
            max_objects=int(limit) if limit and limit > 0 else DEFAULT_MAX_OBJECTS,
        )

    @property
    def attributes(self) -> list[str]:
        wanted = {a for a in (*self.key.values(), *self.properties.values()) if a != "dn"}
        return sorted(wanted) or ["1.1"]


@dataclass(frozen=True)
class _Config:
    host: str
    port: int
    tls: str
    ca_file: str | None
    verify: bool
    base: str | None
    filter: str
    scope: Any
    attributes: tuple[str, ...]
    size_limit: int
    user_base: str | None
    user_filter: str
    bind_name: str | None
    thresholds: _Thresholds
    discover: _Discover | None

    @classmethod
    def parse(cls, config: Mapping[str, Any], kind: str) -> _Config:
        host = _text(config, "host")
        if not host:
            raise InvalidInput("ldap probe: 'host' is required")
        # StartTLS unless told otherwise: a simple bind in clear sends the password in clear.
        tls = (_text(config, "tls", "start") or "start").lower()
        if tls not in _TLS_MODES:
            raise InvalidInput(f"ldap probe: 'tls' must be one of {', '.join(_TLS_MODES)}")
        port_text = _text(config, "port", "636" if tls == "ldaps" else "389") or ""
        if not port_text.isdecimal() or not 0 < int(port_text) < 65536:
            raise InvalidInput("ldap probe: 'port' must be a TCP port number")
        verify = config.get("verify", True)
        if not isinstance(verify, bool):
            raise InvalidInput("ldap probe: 'verify' must be true or false")
        size = _number(config, "size_limit", "config")
        base = _text(config, "base")
        raw_discover = config.get("discover")
        if kind == "discovery" and raw_discover is None:
            raise InvalidInput("ldap probe: a discovery workflow needs 'discover'")
        if kind != "discovery" and raw_discover is not None:
            raise InvalidInput("ldap probe: 'discover' is for discovery workflows only")
        if raw_discover is not None and not isinstance(raw_discover, Mapping):
            raise InvalidInput("ldap probe: 'discover' must be a mapping")
        return cls(
            host=host,
            port=int(port_text),
            tls=tls,
            ca_file=_text(config, "ca_file"),
            verify=verify,
            base=base,
            filter=_text(config, "filter", "(objectClass=*)") or "(objectClass=*)",
            scope=_scope(config, ""),
            attributes=_names(config.get("attributes"), "'attributes'"),
            size_limit=int(size) if size and size > 0 else 0,
            user_base=_text(config, "user_base", base),
            user_filter=_text(config, "user_filter", DEFAULT_USER_FILTER) or DEFAULT_USER_FILTER,
            bind_name=_text(config, "bind_name"),
            thresholds=_Thresholds.parse(config),
            discover=None if raw_discover is None else _Discover.parse(raw_discover, base),
        )

    @property
    def where(self) -> str:
        scheme = "ldaps" if self.tls == "ldaps" else "ldap"
        return f"{scheme}://{self.host}:{self.port}"


# -- the logon name -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Login:
    #: how the account names itself, for messages (DOMAIN\user, a UPN, a DN or a name)
    name: str
    user: str
    domain: str
    upn: str
    #: the DN to bind, when the account gives one
    dn: str | None = None

    def fill(self, template: str, escape: Callable[[str], str]) -> str:
        values = {"user": self.user, "domain": self.domain, "upn": self.upn}
        return _LOGIN_TOKEN.sub(lambda m: escape(values[m.group(1)]), template)


def _is_dn(name: str) -> bool:
    if "=" not in name:
        return False
    try:
        return bool(parse_dn(name))
    except (LDAPInvalidDnError, ValueError, IndexError):
        return False


def _login(account_type: str, fields: Mapping[str, Any]) -> _Login:
    user = str(fields.get("user") or "")
    domain = str(fields.get("domain") or "") if account_type == "windows" else ""
    if account_type == "simple" and _is_dn(user):
        return _Login(user, user, "", user, dn=user)
    if "\\" in user:
        domain, user = user.split("\\", 1)
    elif "@" in user:
        user, domain = user.rsplit("@", 1)
    if not user:
        raise InvalidInput("ldap probe: the account has no user name")
    upn = f"{user}@{domain}" if domain else user
    name = f"{domain}\\{user}" if account_type == "windows" and domain else str(fields["user"])
    return _Login(name, user, domain, upn)


# -- the run ------------------------------------------------------------------------------------


class _Timeout(Exception):
    """The run's time is used up (internal: it becomes an ``unknown`` result)."""


@dataclass
class _Run:
    context: ProbeContext
    config: _Config
    scrubber: Scrubber
    deadline: float
    perf: dict[str, float] = field(default_factory=dict)

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0.01:
            raise _Timeout
        return left

    def clean(self, text: str) -> str:
        """Peer or library text, without any secret the agent holds."""
        text = self.scrubber.scrub(text)[0]
        return self.context.scrubber.scrub(text)[0]

    def server(self) -> Any:
        tls = None
        if self.config.tls != "none":
            tls = _VerifiedTls(_tls_context(self.config), self.config.host)
        return ldap3.Server(
            self.config.host,
            port=self.config.port,
            use_ssl=self.config.tls == "ldaps",
            tls=tls,
            get_info=ldap3.NONE,
            connect_timeout=self.remaining(),
        )

    def connect(self, user: str | None = None, password: str | None = None) -> Any:
        """An open connection (TLS started when configured), not bound yet."""
        started = time.monotonic()
        conn = ldap3.Connection(
            self.server(),
            user=user,
            password=password,
            authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
            auto_bind=ldap3.AUTO_BIND_NONE,
            client_strategy=ldap3.SYNC,
            # whole seconds (ldap3 packs it into SO_RCVTIMEO); budget() sets the exact rest
            receive_timeout=max(1, math.ceil(self.remaining())),
            raise_exceptions=False,
            read_only=True,
            auto_referrals=False,
        )
        try:
            conn.open()
        except BaseException:
            _drop_socket(conn)
            raise
        if self.config.tls == "start":
            try:
                self.budget(conn)
                started_tls = conn.start_tls()
            except BaseException:
                _close(conn)
                raise
            if not started_tls:
                _close(conn)
                raise LDAPStartTLSError(f"StartTLS refused ({_describe(conn.result)})")
        self.perf["connect_ms"] = self.perf.get("connect_ms", 0.0) + _ms_since(started)
        return conn

    def budget(self, conn: Any) -> float:
        """Cap the next operation's wait at what is left of the run's time."""
        left = self.remaining()
        if conn.socket is not None:
            conn.socket.settimeout(left)
        return left

    def search(
        self, conn: Any, base: str, filt: str, scope: Any, attributes: list[str], **kw: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        left = self.budget(conn)
        conn.search(
            base, filt, search_scope=scope, attributes=attributes,
            time_limit=max(1, int(left)), **kw,
        )  # fmt: skip
        entries = [r for r in conn.response or () if r.get("type") == "searchResEntry"]
        return dict(conn.result), entries

    # -- steps --------------------------------------------------------------------------------

    def resolve(self, login: _Login) -> str | ProbeResult:
        """The DN to bind for ``login``, or the result that ends the run."""
        if login.dn is not None:
            return login.dn
        if self.config.bind_name:
            return login.fill(self.config.bind_name, lambda v: v)
        base = self.config.user_base
        if not base:
            raise InvalidInput(
                "ldap probe: give 'user_base' (or 'base') to find the account's entry, "
                "or 'bind_name' to bind its name as it is"
            )
        filt = login.fill(self.config.user_filter, escape_filter_chars)
        started = time.monotonic()
        conn = self.connect()
        try:
            result, entries = self.search(conn, base, filt, ldap3.SUBTREE, ["1.1"], size_limit=2)
        finally:
            _close(conn)
        self.perf["resolve_ms"] = _ms_since(started)
        code = result.get("result")
        if code not in (0, 4):  # 4: sizeLimitExceeded, with two entries: ambiguous
            return self.unknown(
                f"cannot look up {login.name} under {base} on {self.config.where} "
                f"({_describe(result)}); where anonymous search is refused, set 'bind_name'"
            )
        if not entries:
            return self.logon_failed(f"user {login.name} was not found under {base}")
        if len(entries) > 1:
            return self.unknown(
                f"more than one entry under {base} matches {login.name}: make 'user_filter' unique"
            )
        return str(entries[0]["dn"])

    def bind(self, dn: str, password: str) -> Any:
        """A connection bound as ``dn``, or the result that ends the run."""
        conn = self.connect(dn, password)
        self.budget(conn)
        started = time.monotonic()
        ok = conn.bind()
        self.perf["bind_ms"] = _ms_since(started)
        if ok:
            return conn
        result = dict(conn.result)
        _close(conn)
        code = result.get("result")
        if code in _REFUSED:
            return self.logon_failed(
                f"{self.config.where} refused the password of {dn} ({_describe(result)})"
            )
        return self.unknown(f"bind as {dn} on {self.config.where} failed ({_describe(result)})")

    def monitor(self, conn: Any, dn: str) -> ProbeResult:
        config = self.config
        if not config.base:
            return self.done(
                ProbeState.HEALTHY,
                f"bound as {dn} on {config.where} in {self.perf['bind_ms']:.0f} ms",
            )
        started = time.monotonic()
        result, entries = self.search(
            conn, config.base, config.filter, config.scope,
            list(config.attributes) or ["1.1"], size_limit=config.size_limit,
        )  # fmt: skip
        self.perf["search_ms"] = _ms_since(started)
        count = len(entries)
        self.perf["entries"] = float(count)
        code = result.get("result")
        if code == 3:  # timeLimitExceeded
            return self.unknown(f"the search under {config.base} did not finish in time")
        if code not in (0, 4):
            return self.done(
                ProbeState.CRITICAL,
                f"bound as {dn}, but the search under {config.base} failed ({_describe(result)})",
            )
        state, why = config.thresholds.classify(
            count, self.perf["bind_ms"] + self.perf["search_ms"]
        )
        limited = " (size limit reached)" if code == 4 else ""
        message = (
            f"bound as {dn} in {self.perf['bind_ms']:.0f} ms; {count} entries{limited} "
            f"under {config.base} in {self.perf['search_ms']:.0f} ms"
        )
        return self.done(state, f"{message}: {why}" if why else message)

    def discover(self, conn: Any, spec: _Discover) -> ProbeResult:
        started = time.monotonic()
        objects: list[dict[str, Any]] = []
        skipped = 0
        cookie: bytes | None = None
        while True:
            result, entries = self.search(
                conn, spec.base, spec.filter, spec.scope, spec.attributes,
                paged_size=_PAGE_SIZE, paged_cookie=cookie,
            )  # fmt: skip
            code = result.get("result")
            if code == 3:
                return self.unknown(f"the discovery search under {spec.base} timed out")
            if code != 0:
                return self.done(
                    ProbeState.CRITICAL,
                    f"the discovery search under {spec.base} failed ({_describe(result)})",
                )
            for entry in entries:
                found = _object_of(entry, spec)
                if found is None:
                    skipped += 1
                else:
                    objects.append(found)
            if len(objects) > spec.max_objects:
                # A partial snapshot would remove the objects it missed: report none.
                return self.unknown(
                    f"more than {spec.max_objects} entries match under {spec.base}; raise "
                    "discover.max_objects or narrow the filter"
                )
            controls = result.get("controls") or {}
            cookie = (controls.get(_PAGED_RESULTS) or {}).get("value", {}).get("cookie")
            if not cookie:
                break
        self.perf["search_ms"] = _ms_since(started)
        self.perf["entries"] = float(len(objects) + skipped)
        message = f"discovered {len(objects)} {spec.class_id} objects under {spec.base}"
        if skipped:
            message += f"; {skipped} entries without {', '.join(spec.key.values())} skipped"
        return self.done(ProbeState.HEALTHY, message, discovery=tuple(objects))

    # -- results ------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.context.timeout_s - (self.deadline - time.monotonic())

    def done(self, state: ProbeState, message: str, **kw: Any) -> ProbeResult:
        return ProbeResult(
            state, self.clean(message), None, perf=dict(self.perf), duration_s=self.elapsed(),
            **kw,
        )  # fmt: skip

    def unknown(self, message: str, *, timed_out: bool = False) -> ProbeResult:
        return ProbeResult(
            ProbeState.UNKNOWN, self.clean(message), None, perf=dict(self.perf),
            duration_s=self.elapsed(), timed_out=timed_out,
        )  # fmt: skip

    def logon_failed(self, message: str) -> ProbeResult:
        return logon_failed(self.clean(message), duration_s=self.elapsed())


def _tls_context(config: _Config) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except OSError as err:
        raise InvalidInput(f"ldap probe: cannot read ca_file: {err.strerror or err}") from None
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _VerifiedTls(ldap3.Tls):  # type: ignore[misc]
    """ldap3's TLS with Python's own certificate and host name checks during the handshake.

    ldap3 2.9.1 switches the context's host name check off and matches the name afterwards
    with ``ssl.match_hostname`` (deprecated, and blind to IP addresses in certificates); here
    the handshake itself fails on a wrong certificate, before any bind is sent."""

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        super().__init__(validate=ssl.CERT_NONE)  # ldap3's own check: off (ours is stricter)
        self._context = context
        self._host = host

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._host,
        )


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 3)


def _describe(result: Mapping[str, Any]) -> str:
    """An LDAP result as ``description: diagnostic`` (AD's diagnostics name the reason)."""
    text = str(result.get("description") or f"result {result.get('result')}")
    diagnostic = str(result.get("message") or "").strip()
    return f"{text}: {diagnostic}" if diagnostic else text


def _first(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _object_of(entry: Mapping[str, Any], spec: _Discover) -> dict[str, Any] | None:
    """The discovery object of one entry; None when it lacks a key attribute."""
    attributes = entry.get("attributes") or {}

    def value(attribute: str) -> str | None:
        if attribute.lower() == "dn":
            return str(entry.get("dn") or "") or None
        return _first(attributes.get(attribute))

    key: dict[str, str] = {}
    for prop, attribute in spec.key.items():
        found = value(attribute)
        if found is None:
            return None
        key[prop] = found
    properties = {p: v for p, a in spec.properties.items() if (v := value(a)) is not None}
    obj: dict[str, Any] = {"class": spec.class_id, "key": key, "properties": properties}
    if spec.host:
        obj["host"] = spec.host
    return obj


class LdapProbe:
    """The ``ldap`` probe in the registry's shape (:mod:`runas.agent.probes.base`)."""

    type = "ldap"

    def run(self, context: ProbeContext) -> ProbeResult:
        started = time.monotonic()
        document = context.document
        if document.type not in ("windows", "simple"):
            what = "no account" if not document.has_credential else f"a {document.type} account"
            return ProbeResult(
                ProbeState.UNKNOWN,
                f"the ldap probe needs a windows or simple account, and was given {what}",
                None,
            )
        config = _Config.parse(context.config, context.kind)
        fields = document.to_dict().get("fields", {})
        password = fields.get("password")
        login = _login(document.type, fields)
        run = _Run(
            context,
            config,
            Scrubber(document.secret_values()),
            started + context.timeout_s,
        )
        if not isinstance(password, str) or not password:
            # A simple bind without a password is an anonymous bind (RFC 4513 §5.1.2): it
            # would "succeed" and prove nothing.
            return run.logon_failed(f"the account of {login.name} has no password")
        try:
            return self._run(run, login, password)
        except _Timeout:
            return run.unknown(
                f"{config.where} did not answer within {context.timeout_s:g} s", timed_out=True
            )
        except LDAPSocketOpenError as err:
            return run.unknown(f"cannot connect to {config.where}: {_reason(err)}")
        except LDAPSocketReceiveError as err:
            timed_out = "timed out" in str(err)
            what = "did not answer in time" if timed_out else f"broke off: {_reason(err)}"
            return run.unknown(f"{config.where} {what}", timed_out=timed_out)
        except LDAPStartTLSError as err:
            return run.unknown(f"StartTLS with {config.where} failed: {_reason(err)}")
        except (LDAPException, OSError) as err:
            return run.unknown(f"LDAP error with {config.where}: {_reason(err)}")

    def _run(self, run: _Run, login: _Login, password: str) -> ProbeResult:
        dn = run.resolve(login)
        if isinstance(dn, ProbeResult):
            return dn
        conn = run.bind(dn, password)
        if isinstance(conn, ProbeResult):
            return conn
        try:
            if run.config.discover is not None:
                return run.discover(conn, run.config.discover)
            return run.monitor(conn, dn)
        finally:
            _close(conn)


def _close(conn: Any) -> None:
    # An unbind on a broken connection fails; the run's result is already decided.
    with contextlib.suppress(LDAPException, OSError):
        conn.unbind()
    _drop_socket(conn)


def _drop_socket(conn: Any) -> None:
    # ldap3 leaves the socket of a failed connect (or a broken connection) open.
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _first_text(value: Any) -> str:
    """ldap3 nests its reasons in tuples (and tuple reprs): the innermost first text."""
    while isinstance(value, list | tuple) and value:
        value = value[0]
    if value in (None, ()):
        return ""
    return _TUPLE_REPR.sub("", _SSL_SOURCE.sub("", str(value))).strip()


def _reason(err: BaseException) -> str:
    text = _first_text(err.args) or str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


PROBE = LdapProbe()

__all__ = ["DEFAULT_USER_FILTER", "PROBE", "LdapProbe"]
