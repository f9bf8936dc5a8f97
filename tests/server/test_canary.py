"""Canary secrets planted through the API, for every account type, never come back: not in a
response, not in the JSON log, not in an audit record."""

import base64
import json

from sqlalchemy import select

from cli.test_secrets_canary import Canaries
from runas.storage.tables import AuditRow
from server.conftest import INSTANCE_A, PROFILE, Served


def _accounts(canaries: Canaries) -> list[dict[str, object]]:
    t = canaries.text

    def b64(label: str) -> str:
        return base64.b64encode(canaries.blob(label)).decode()

    pw = {"password": ""}
    specs: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
        ("c-windows", "windows", {"domain": "corp.contoso.com", "user": "sqlmon"}, pw),
        ("c-action", "action", {"domain": "corp.contoso.com", "user": "agent"}, pw),
        ("c-basic", "basic", {"user": "web"}, pw),
        ("c-digest", "digest", {"user": "web"}, pw),
        ("c-simple", "simple", {"user": "sa"}, pw),
        ("c-community", "community-string", {}, {"community": ""}),
        ("c-unix-mon", "unix-monitoring", {"user": "mon", "elevation": "sudo"}, pw),
        ("c-unix-su", "unix-maintenance", {"user": "ops", "elevation": "su"},
         {"password": "", "su_password": ""}),
        ("c-snmpv3", "snmpv3",
         {"user": "snmp", "auth_protocol": "SHA-256", "priv_protocol": "AES"},
         {"auth_key": "", "priv_key": ""}),
    ]  # fmt: skip
    out: list[dict[str, object]] = []
    for name, kind, fields, secret_names in specs:
        secrets = {k: t(f"{name}-{k}") for k in secret_names}
        out.append({"name": name, "type": kind, "fields": fields, "secrets": secrets})
    out.append({"name": "c-binary", "type": "binary", "secrets": {"data": b64("binary")}})
    out.append({
        "name": "c-unix-key", "type": "unix-maintenance",
        "fields": {"user": "ops", "elevation": "privileged"},
        "secrets": {"ssh_key": b64("ssh"), "passphrase": t("passphrase")},
    })  # fmt: skip
    return out


def test_canaries_never_leave_through_the_api(seeded_any: Served) -> None:
    c, admin = seeded_any.client, seeded_any.admin
    canaries = Canaries()
    bodies: list[bytes] = []

    def call(method: str, path: str, **options: object) -> None:
        r = c.request(method, path, headers=admin, **options)  # type: ignore[arg-type]
        assert r.status_code < 400, (method, path, r.text)
        bodies.append(r.content)

    planted = _accounts(canaries)
    for account in planted:
        call("POST", "/api/v1/accounts", json=account)
    names = [str(a["name"]) for a in planted]
    call(
        "PATCH",
        "/api/v1/accounts/c-simple",
        json={"secrets": {"password": canaries.text("rotated")}, "description": "rotated"},
    )
    call(
        "POST",
        f"/api/v1/profiles/{PROFILE}/associations",
        json={"account": "c-windows", "target_kind": "all"},
    )
    call("PUT", "/api/v1/distribution/c-windows",
         json={"mode": "more-secure", "add": ["a.contoso.com"]})  # fmt: skip
    call("GET", "/api/v1/accounts")
    for name in names:
        call("GET", f"/api/v1/accounts/{name}")
        call("GET", f"/api/v1/distribution/{name}")
        call("POST", f"/api/v1/distribution-suggestions/{name}")
    call("GET", f"/api/v1/profiles/{PROFILE}")
    call("GET", "/api/v1/explain", params={"object": INSTANCE_A, "profile": PROFILE})
    call("GET", "/api/v1/computers/a.contoso.com/config")
    call("GET", "/api/v1/audit", params={"limit": 1000})
    call("POST", "/api/v1/keys/rotate")
    call("GET", "/metrics")
    # a refused and an invalid attempt carrying secrets
    c.post("/api/v1/accounts", json=planted[0], headers=seeded_any.as_user("operator"))
    bad = {**planted[2], "name": "c-bad", "type": "windows"}
    assert c.post("/api/v1/accounts", json=bad, headers=admin).status_code == 422

    with seeded_any.runtime.database.session() as s:
        audit = [
            json.dumps([r.actor, r.action, r.target, r.details]).encode()
            for r in s.scalars(select(AuditRow))
        ]
    assert any(b"account:create" in a for a in audit)
    forms = canaries.forms()
    for where, haystack in (
        ("responses", b"\n".join(bodies)),
        ("log", seeded_any.log.getvalue().encode()),
        ("audit", b"\n".join(audit)),
    ):
        leaks = sorted(f for f in forms if f in haystack)
        assert leaks == [], f"canary found in {where}: {leaks[:3]}"
