"""A throwaway OpenLDAP directory for the ``ldap`` probe's tests, shaped like Active Directory.

:func:`start_slapd` runs Debian's ``/usr/sbin/slapd`` in the foreground (``-d 0``) on
``ldap://127.0.0.1:<free port>/`` with its own ``slapd.conf`` and an ``mdb`` database in a fresh
temporary directory, loaded offline with ``slapadd``. :meth:`Slapd.stop` stops it and removes
the directory; :func:`slapd_running` does both around a ``with`` block, also on failure.

It runs as root (the suite does), so it needs no OS user of its own. It never touches the
system's slapd service, its configuration (/etc/ldap/slapd.d) or its database.

The schema is Debian's core, cosine, inetorgperson and nis plus :data:`AD_SCHEMA`: a few
Active Directory attributes under their AD OIDs (``sAMAccountName``, ``userPrincipalName``,
``dNSHostName``, ``operatingSystem``, ``operatingSystemVersion``) and the classes ``adUser``
(auxiliary, for the logon names) and ``computer``, so the probe meets the directory the way it
would meet AD. Passwords are stored as ``{SSHA}`` hashes computed here: no password is ever on
a command line (no ``slappasswd -s``), in an environment or in a file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
START_TIMEOUT_S = 20.0
SUFFIX = "dc=contoso,dc=com"
DOMAIN = "contoso.com"
USERS_OU = f"ou=Users,{SUFFIX}"
COMPUTERS_OU = f"ou=Computers,{SUFFIX}"

#: Active Directory's attributes and classes the probe is tested with, under AD's own OIDs
AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.619 NAME 'dNSHostName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.363 NAME 'operatingSystem'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.364 NAME 'operatingSystemVersion'
  EQUALITY caseIgnoreMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.7.2.1 NAME 'adUser' SUP top AUXILIARY
  MAY ( sAMAccountName $ userPrincipalName ) )
objectclass ( 1.2.840.113556.1.3.30 NAME 'computer' SUP top STRUCTURAL
  MUST cn
  MAY ( sAMAccountName $ dNSHostName $ operatingSystem $ operatingSystemVersion $
        description ) )
"""


class SlapdUnavailable(RuntimeError):
    """The test directory cannot be started; the message says why and what to do."""


@dataclass(frozen=True)
class DirectoryUser:
    """A person entry ``cn=<name>,ou=Users,...`` with AD logon names and a password."""

    name: str
    password: str = field(repr=False)

    @property
    def dn(self) -> str:
        return f"cn={self.name},{USERS_OU}"

    @property
    def upn(self) -> str:
        return f"{self.name}@{DOMAIN}"


@dataclass(frozen=True)
class DirectoryComputer:
    """A ``computer`` entry ``cn=<NAME>,ou=Computers,...`` as AD keeps one."""

    host_name: str
    operating_system: str
    version: str = ""

    @property
    def cn(self) -> str:
        return self.host_name.split(".", 1)[0].upper()


def ssha(password: str) -> str:
    """The ``{SSHA}`` hash slapd checks a simple bind against (salted SHA-1, RFC 2307 style)."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - slapd's scheme
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _ldif(users: Sequence[DirectoryUser], computers: Sequence[DirectoryComputer]) -> str:
    blocks = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: contoso\n"
        "o: Contoso\n",
        f"dn: {USERS_OU}\nobjectClass: organizationalUnit\nou: Users\n",
        f"dn: {COMPUTERS_OU}\nobjectClass: organizationalUnit\nou: Computers\n",
    ]
    for user in users:
        blocks.append(
            f"dn: {user.dn}\nobjectClass: inetOrgPerson\nobjectClass: adUser\ncn: {user.name}\n"
            f"sn: {user.name}\nuid: {user.name}\nsAMAccountName: {user.name}\n"
            f"userPrincipalName: {user.upn}\nuserPassword: {ssha(user.password)}\n"
        )
    for computer in computers:
        block = (
            f"dn: cn={computer.cn},{COMPUTERS_OU}\nobjectClass: computer\ncn: {computer.cn}\n"
            f"sAMAccountName: {computer.cn}$\ndNSHostName: {computer.host_name}\n"
            f"operatingSystem: {computer.operating_system}\n"
        )
        if computer.version:
            block += f"operatingSystemVersion: {computer.version}\n"
        blocks.append(block)
    return "\n".join(blocks)


def _config(root: Path, tls: bool) -> str:
    includes = "".join(
        f"include {SCHEMA_DIR / name}.schema\n"
        for name in ("core", "cosine", "inetorgperson", "nis")
    )
    # Anonymous users may read everything but passwords (which they may only bind against):
    # the probe resolves a logon name to a DN anonymously, as OpenLDAP's defaults allow.
    return (
        f"{includes}include {root / 'ad.schema'}\n"
        f"pidfile {root / 'slapd.pid'}\nargsfile {root / 'slapd.args'}\n"
        f"modulepath {MODULE_DIR}\nmoduleload back_mdb\n"
        + (
            f"TLSCACertificateFile {root / 'ca.pem'}\n"
            f"TLSCertificateFile {root / 'server.pem'}\n"
            f"TLSCertificateKeyFile {root / 'server.key'}\n"
            if tls
            else ""
        )
        + "sizelimit unlimited\n"
        f'database mdb\nmaxsize 16777216\nsuffix "{SUFFIX}"\n'
        f'rootdn "cn=admin,{SUFFIX}"\ndirectory {root / "data"}\n'
        "index objectClass eq\n"
        "access to attrs=userPassword by anonymous auth by self read by * none\n"
        "access to * by * read\n"
    )


def _write_certificates(root: Path) -> None:
    """A throwaway CA and a server certificate for localhost (not for 127.0.0.1: the tests
    check that the probe verifies the name it connected to)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("runas test directory CA"))
        .issuer_name(name("runas test directory CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file = root / "server.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    """An anonymous search of the root DSE answers (a bare TCP accept is not enough)."""
    with warnings.catch_warnings():  # ldap3 2.9.1 uses names pyasn1 0.6 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        import ldap3

    try:  # a plain connect first: ldap3 leaves the socket of a refused one open
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    server = ldap3.Server("127.0.0.1", port=port, connect_timeout=1)
    conn = ldap3.Connection(server, receive_timeout=1, raise_exceptions=False)
    try:
        conn.open()
        return bool(conn.search("", "(objectClass=*)", search_scope=ldap3.BASE))
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            conn.unbind()
        if conn.socket is not None:
            conn.socket.close()


@dataclass
class Slapd:
    """A running test directory."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    #: the CA that signed the server's certificate (StartTLS), None without TLS
    ca_file: Path | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _check_installed() -> None:
    missing = [str(p) for p in (SLAPD, SLAPADD, SCHEMA_DIR / "core.schema") if not p.exists()]
    if missing:
        raise SlapdUnavailable(
            f"OpenLDAP is not installed ({', '.join(missing)} missing): ./scripts/test installs "
            "the Debian packages slapd and ldap-utils"
        )


def start_slapd(
    users: Sequence[DirectoryUser],
    computers: Sequence[DirectoryComputer] = (),
    *,
    tls: bool = False,
) -> Slapd:
    """Start a directory holding ``users`` and ``computers`` under dc=contoso,dc=com; with
    ``tls``, it also offers StartTLS with a certificate for ``localhost`` signed by a throwaway
    CA (:attr:`Slapd.ca_file`)."""
    _check_installed()
    root = Path(tempfile.mkdtemp(prefix="runas-slapd-"))
    try:
        (root / "data").mkdir(mode=0o700)
        (root / "ad.schema").write_text(AD_SCHEMA)
        conf = root / "slapd.conf"
        if tls:
            _write_certificates(root)
        conf.write_text(_config(root, tls))
        # The LDIF (hashes only) goes on slapadd's stdin, never to a file or an argument.
        done = subprocess.run(
            [str(SLAPADD), "-q", "-f", str(conf)],
            input=_ldif(users, computers).encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise SlapdUnavailable(f"slapadd failed: {done.stderr.decode(errors='replace')}")
        for _attempt in range(5):
            port = _free_port()
            log = root / f"slapd-{port}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(SLAPD), "-d", "0", "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            slapd = Slapd(root, port, process, log, root / "ca.pem" if tls else None)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None:
                if _answers(port):
                    return slapd
                time.sleep(0.1)
            if process.poll() is None:
                process.kill()
                process.wait()
                raise SlapdUnavailable(f"slapd did not answer: {log.read_text()[-2000:]}")
            # It exited: most likely the port was taken meanwhile; try another one.
        raise SlapdUnavailable(f"slapd would not start: {log.read_text()[-2000:]}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


@contextlib.contextmanager
def slapd_running(
    users: Sequence[DirectoryUser],
    computers: Sequence[DirectoryComputer] = (),
    *,
    tls: bool = False,
) -> Iterator[Slapd]:
    slapd = start_slapd(users, computers, tls=tls)
    try:
        yield slapd
    finally:
        slapd.stop()


__all__ = [
    "AD_SCHEMA",
    "COMPUTERS_OU",
    "DOMAIN",
    "SUFFIX",
    "USERS_OU",
    "DirectoryComputer",
    "DirectoryUser",
    "Slapd",
    "SlapdUnavailable",
    "slapd_running",
    "ssha",
    "start_slapd",
]
