"""Every error is an RFC 9457 problem document with the error's code, and none echoes input."""

from typing import Any

import pytest
from sqlalchemy import select

from runas.runtime import Runtime
from runas.server import ServerSettings
from runas.services import accounts
from runas.storage.tables import AuditRow
from server.conftest import ACCOUNT, Served, serve

FIELDS = {"type", "title", "status", "detail", "instance"}


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = r.json()
    assert set(doc) == FIELDS
    assert doc["type"] == f"urn:runas:problem:{code}"
    assert doc["status"] == status
    assert "\n" not in doc["detail"]
    return doc


def test_each_error_class_maps_to_its_problem(seeded_any: Served) -> None:
    c, admin = seeded_any.client, seeded_any.admin
    problem(c.get("/api/v1/accounts"), 401, "unauthenticated")
    problem(c.get("/api/v1/accounts", headers={"Authorization": "Bearer runas_nope"}), 401,
            "unauthenticated")  # fmt: skip
    problem(c.get("/api/v1/accounts", headers=seeded_any.as_user("operator")), 403, "forbidden")
    doc = problem(c.get("/api/v1/accounts/missing", headers=admin), 404, "not-found")
    assert doc["instance"] == "/api/v1/accounts/missing"
    # digits that are not decimal ("²".isdigit() is true, int("²") fails): a name, not a 500
    problem(c.get("/api/v1/accounts/%C2%B2", headers=admin), 404, "not-found")
    problem(c.patch("/api/v1/accounts/%C2%B2", json={"description": "x"}, headers=admin), 404,
            "not-found")  # fmt: skip
    problem(c.get("/api/v1/objects/%C2%B2", headers=admin), 422, "invalid-input")
    problem(c.get("/api/v1/no-such-route", headers=admin), 404, "not-found")
    problem(c.put("/healthz"), 405, "method-not-allowed")
    body = {
        "name": ACCOUNT,
        "type": "simple",
        "fields": {"user": "u"},
        "secrets": {"password": "p"},
    }
    problem(c.post("/api/v1/accounts", json=body, headers=admin), 409, "already-exists")
    problem(c.delete("/api/v1/packs/runas.system", headers=admin), 409, "in-use")
    bad_type = {**body, "name": "x", "type": "telepathy"}
    problem(c.post("/api/v1/accounts", json=bad_type, headers=admin), 422, "invalid-account")
    bad_pack = {"text": "pack: [", "source": "broken.yaml"}
    doc = problem(c.post("/api/v1/packs", json=bad_pack, headers=admin), 422, "invalid-pack")
    assert doc["detail"].startswith("broken.yaml")


def test_a_401_carries_the_bearer_challenge(served: Served) -> None:
    r = served.client.get("/api/v1/me")
    assert r.headers["www-authenticate"] == "Bearer"


def test_validation_errors_name_the_field_but_never_echo_the_value(served: Served) -> None:
    secret = "tOpSeCrEt-value-1234"
    for body in (
        {"name": "x", "type": "simple", "secrets": {"password": 12}, "fields": secret},
        {"name": ["x", secret], "type": "simple"},
        {"name": "x", "type": "simple", "expires_at": secret},
    ):
        r = served.client.post("/api/v1/accounts", json=body, headers=served.admin)
        doc = problem(r, 422, "invalid-input")
        assert doc["detail"].startswith("body.")
        assert secret not in r.text
    r = served.client.post(
        "/api/v1/accounts", content=b'{"secrets": {"password": "' + secret.encode(),
        headers={**served.admin, "content-type": "application/json"},
    )  # fmt: skip
    problem(r, 422, "invalid-input")
    assert secret not in r.text
    assert secret not in served.log.getvalue()


def test_a_stale_if_match_is_a_409_and_the_current_etag_works(seeded_any: Served) -> None:
    c, admin = seeded_any.client, seeded_any.admin
    etag = c.get(f"/api/v1/accounts/{ACCOUNT}", headers=admin).headers["etag"]
    first = c.patch(f"/api/v1/accounts/{ACCOUNT}", json={"description": "one"},
                    headers={**admin, "If-Match": etag})  # fmt: skip
    assert first.status_code == 200
    assert first.headers["etag"] != etag
    stale = c.patch(f"/api/v1/accounts/{ACCOUNT}", json={"description": "two"},
                    headers={**admin, "If-Match": etag})  # fmt: skip
    problem(stale, 409, "conflict")
    assert c.get(f"/api/v1/accounts/{ACCOUNT}", headers=admin).json()["description"] == "one"


def test_an_unexpected_failure_is_a_generic_500_with_the_traceback_only_in_the_log(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("internal detail: sekrit-path /var/x")

    monkeypatch.setattr(accounts, "list_accounts", broken)
    r = served.client.get("/api/v1/accounts", headers=served.admin)
    doc = problem(r, 500, "internal-error")
    assert "sekrit" not in r.text
    assert "details are in the server log" in doc["detail"]
    log = served.log.getvalue()
    assert "Traceback" in log
    assert "sekrit-path" in log


def test_login_is_rate_limited_with_429_and_retry_after(served: Served) -> None:
    c = served.client
    for _ in range(5):
        problem(c.post("/api/v1/login", json={"name": "operator", "password": "wrong"}), 401,
                "unauthenticated")  # fmt: skip
    r = c.post("/api/v1/login", json={"name": "operator", "password": "wrong"})
    problem(r, 429, "too-many-requests")
    assert int(r.headers["retry-after"]) >= 1


def test_refused_and_failed_changes_are_audited_without_their_bodies(seeded_any: Served) -> None:
    c = seeded_any.client
    c.delete(f"/api/v1/accounts/{ACCOUNT}")  # no token
    c.delete(f"/api/v1/accounts/{ACCOUNT}", headers=seeded_any.as_user("author"))
    c.post("/api/v1/accounts", json={"name": "new", "type": "nonsense",
                                     "secrets": {"password": "audit-canary"}},
           headers=seeded_any.admin)  # fmt: skip
    with seeded_any.runtime.database.session() as s:
        rows = list(s.scalars(select(AuditRow).order_by(AuditRow.seq)))[-3:]
    got = [(r.actor, r.action, r.target, r.outcome, r.details) for r in rows]
    assert got == [
        ("anonymous", "account:remove", ACCOUNT, "denied", {"error": "unauthenticated"}),
        ("author", "account:remove", ACCOUNT, "denied", {"error": "forbidden"}),
        ("administrator", "account:create", "new", "failure", {"error": "invalid-account"}),
    ]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_413_without_being_read(runtime: Runtime, chunked: bool) -> None:
    from server.conftest import add_user

    token = add_user(runtime, "admin", ["administrator"])
    _, client = serve(runtime, ServerSettings(max_body_bytes=2048, max_upload_bytes=4096))
    h = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    big = b'{"name": "' + b"x" * 3000 + b'", "type": "simple"}'

    def chunks() -> Any:
        yield big[:1000]
        yield big[1000:]

    with client:
        r = client.post("/api/v1/accounts", content=chunks() if chunked else big, headers=h)
        doc = problem(r, 413, "content-too-large")
        assert "2048" in doc["detail"]
        # uploads (packs) have the larger limit: the same body is read, and refused as a pack
        r = client.post("/api/v1/packs", content=big, headers=h)
        assert r.status_code == 422
        huge = b'{"text": "' + b"x" * 5000 + b'"}'
        problem(client.post("/api/v1/packs", content=huge, headers=h), 413, "content-too-large")
