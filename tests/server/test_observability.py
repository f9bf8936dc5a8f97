"""Health, readiness, metrics and the JSON access log."""

import json

from runas.runtime import Runtime
from runas.server.metrics import Metrics
from server.conftest import ACCOUNT, Served, serve


def test_health_and_readiness(served: Served) -> None:
    assert served.client.get("/healthz").json() == {"status": "ok"}
    r = served.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "schema": "ok", "keyring": "ok"}


def test_not_ready_when_the_keyring_is_unusable(runtime: Runtime) -> None:
    runtime.settings.resolved_keyring_file.write_text("{not json")
    _, client = serve(runtime)
    with client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"].startswith("keyring:")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_count_requests_and_follow_the_management_group(seeded: Served) -> None:
    c = seeded.client
    before = c.get("/metrics").text
    epoch, audit = (
        _metric(before, "runas_resolution_epoch"),
        _metric(before, "runas_audit_writes_total"),
    )
    r = c.patch(f"/api/v1/accounts/{ACCOUNT}", json={"description": "m"}, headers=seeded.admin)
    assert r.status_code == 200
    c.get("/api/v1/accounts/x", headers=seeded.as_user("operator"))
    after = c.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = after.text
    assert _metric(text, "runas_resolution_epoch") == epoch + 1
    assert _metric(text, "runas_audit_writes_total") > audit
    assert _metric(text, "runas_agents") == 0
    assert (
        'runas_http_requests_total{route="/api/v1/accounts/{ref:path}",method="PATCH",'
        'status="200"} 1' in text
    )
    assert 'route="/api/v1/accounts/{ref:path}",method="GET",status="403"} 1' in text
    assert 'runas_http_request_duration_seconds_bucket{route="/api/v1/accounts/{ref:path}",' \
        'method="PATCH",le="+Inf"} 1' in text  # fmt: skip
    # names from URLs never become labels (unbounded cardinality, and they may be sensitive)
    assert "/api/v1/accounts/x" not in text


def test_one_json_line_per_request_with_route_not_values(served: Served) -> None:
    served.client.get("/api/v1/accounts/private-name?x=1", headers=served.admin)
    served.client.get("/api/v1/me")
    lines = [json.loads(line) for line in served.log.getvalue().splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    first, second = requests[-2:]
    assert first["route"] == "/api/v1/accounts/{ref:path}"
    assert first["method"] == "GET"
    assert first["status"] == 404
    assert first["actor"] == "administrator"
    assert first["source"] == "testclient"
    assert first["problem"] == "not-found"
    assert isinstance(first["duration_ms"], float)
    assert {"ts", "level"} <= set(first)
    assert second["actor"] is None
    assert second["status"] == 401
    assert "private-name" not in served.log.getvalue()
    assert "Bearer" not in served.log.getvalue()


def test_latency_buckets_are_cumulative_and_bounded_inclusively() -> None:
    m = Metrics()
    for seconds in (0.005, 0.006, 0.3, 20.0):  # on a bound, between bounds, above all
        m.observe("/r", "GET", 200, seconds)
    text = m.render({})

    def bucket(le: str) -> int:
        prefix = f'runas_http_request_duration_seconds_bucket{{route="/r",method="GET",le="{le}"}} '
        line = next(x for x in text.splitlines() if x.startswith(prefix))
        return int(line.removeprefix(prefix))

    assert bucket("0.005") == 1
    assert bucket("0.01") == 2
    assert bucket("0.25") == 2
    assert bucket("0.5") == 3
    assert bucket("10.0") == 3
    assert bucket("+Inf") == 4
