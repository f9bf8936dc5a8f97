"""Role × operation: every role (and a user with no role, and no token at all) calls every
operation of the API with a valid request; exactly the operations the role's permissions allow
get past authorisation, every other one is 403 — and a 403 says nothing about what exists."""

from typing import Any

import pytest
import yaml
from fastapi.routing import APIRoute

from runas.domain.roles import ROLE_PERMISSIONS, Permission, Role
from runas.server.security import rules_of
from server.conftest import (
    ACCOUNT,
    DISCOVERY,
    GROUP,
    INSTANCE_A,
    NO_ROLE,
    PACK,
    PASSWORD,
    PROFILE,
    TARGET_USER,
    Served,
)

P = Permission
PUBLIC = None
SSH_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIx/0jj1NVD2eiZ4qUcGmSletQUknJrCo4PefPgdKO1l"


def operations(who: str) -> list[tuple[str, str, str, dict[str, Any], Permission | None]]:
    """(method, route template, concrete path, request options, permission the spec requires).
    Destructive operations name things that do not exist, so that a permitted caller gets 404
    — after authorisation — and the next role finds the same state. Logging out comes last:
    it ends the caller's token."""
    acct = f"/api/v1/accounts/{ACCOUNT}"
    new_account = {
        "name": f"new-{who}",
        "type": "simple",
        "fields": {"user": "sa"},
        "secrets": {"password": "matrix-secret"},
    }
    return [
        # before the password changes below
        ("POST", "/api/v1/login", "/api/v1/login",
         {"json": {"name": TARGET_USER, "password": PASSWORD}}, PUBLIC),
        ("GET", "/api/v1/me", "/api/v1/me", {}, P.SELF),
        ("GET", "/api/v1/accounts", "/api/v1/accounts", {}, P.RUNAS_READ),
        ("POST", "/api/v1/accounts", "/api/v1/accounts", {"json": new_account}, P.RUNAS_WRITE),
        ("GET", "/api/v1/accounts/{ref:path}", acct, {}, P.RUNAS_READ),
        ("PATCH", "/api/v1/accounts/{ref:path}", acct, {"json": {"description": who}},
         P.RUNAS_WRITE),
        ("DELETE", "/api/v1/accounts/{ref:path}", "/api/v1/accounts/ghost", {}, P.RUNAS_WRITE),
        ("GET", "/api/v1/distribution/{ref:path}", f"/api/v1/distribution/{ACCOUNT}", {},
         P.RUNAS_READ),
        ("PUT", "/api/v1/distribution/{ref:path}", f"/api/v1/distribution/{ACCOUNT}",
         {"json": {"mode": "more-secure", "add": ["a.contoso.com"]}}, P.RUNAS_WRITE),
        ("POST", "/api/v1/distribution-suggestions/{ref:path}",
         f"/api/v1/distribution-suggestions/{ACCOUNT}", {}, P.RUNAS_READ),
        ("POST", "/api/v1/distribution-suggestions/{ref:path}",
         f"/api/v1/distribution-suggestions/{ACCOUNT}", {"params": {"apply": "true"}},
         P.RUNAS_WRITE),
        ("GET", "/api/v1/packs", "/api/v1/packs", {}, P.OBJECTS_READ),
        ("POST", "/api/v1/packs", "/api/v1/packs", {"json": {"text": PACK, "source": "x.yaml"}},
         P.CONTENT_WRITE),
        ("GET", "/api/v1/packs/{pack_id}", "/api/v1/packs/Contoso.SQL", {}, P.OBJECTS_READ),
        ("DELETE", "/api/v1/packs/{pack_id}", "/api/v1/packs/No.Such.Pack", {}, P.CONTENT_WRITE),
        ("POST", "/api/v1/discovery", "/api/v1/discovery", {"json": yaml.safe_load(DISCOVERY)},
         P.DISCOVERY_SUBMIT),
        ("GET", "/api/v1/objects", "/api/v1/objects", {}, P.OBJECTS_READ),
        ("GET", "/api/v1/objects/{ref:path}", f"/api/v1/objects/{INSTANCE_A}", {},
         P.OBJECTS_READ),
        ("GET", "/api/v1/groups", "/api/v1/groups", {}, P.OBJECTS_READ),
        ("GET", "/api/v1/groups/{group_id}", f"/api/v1/groups/{GROUP}", {}, P.OBJECTS_READ),
        ("GET", "/api/v1/profiles", "/api/v1/profiles", {}, P.PROFILES_LIST),
        ("GET", "/api/v1/profiles/{profile_id}", f"/api/v1/profiles/{PROFILE}", {},
         P.RUNAS_READ),
        ("POST", "/api/v1/profiles", "/api/v1/profiles",
         {"json": {"id": f"Test.P{abs(hash(who)) % 10_000}", "display_name": "p"}},
         P.RUNAS_WRITE),
        ("POST", "/api/v1/profiles/{profile_id}/associations",
         f"/api/v1/profiles/{PROFILE}/associations",
         {"json": {"account": ACCOUNT, "target_kind": "group", "target": GROUP}}, P.RUNAS_WRITE),
        ("DELETE", "/api/v1/profiles/{profile_id}/associations",
         f"/api/v1/profiles/{PROFILE}/associations", {"params": {"account": "ghost"}},
         P.RUNAS_WRITE),
        ("GET", "/api/v1/explain", "/api/v1/explain",
         {"params": {"object": INSTANCE_A, "profile": PROFILE}}, P.RUNAS_READ),
        ("GET", "/api/v1/computers/{name}/config", "/api/v1/computers/a.contoso.com/config", {},
         P.RUNAS_READ),
        ("GET", "/api/v1/keys", "/api/v1/keys", {}, P.RUNAS_READ),
        ("POST", "/api/v1/keys/rotate", "/api/v1/keys/rotate", {}, P.KEYS_ADMIN),
        ("POST", "/api/v1/keys/rewrap", "/api/v1/keys/rewrap", {}, P.KEYS_ADMIN),
        ("DELETE", "/api/v1/keys/{key_id}", "/api/v1/keys/kek-ghost", {}, P.KEYS_ADMIN),
        ("GET", "/api/v1/audit", "/api/v1/audit", {"params": {"limit": 5}}, P.AUDIT_READ),
        ("GET", "/api/v1/audit/verify", "/api/v1/audit/verify", {}, P.AUDIT_READ),
        ("GET", "/api/v1/users", "/api/v1/users", {}, P.USERS_READ),
        ("POST", "/api/v1/users", "/api/v1/users",
         {"json": {"name": f"made-by-{who}", "password": PASSWORD}}, P.USERS_WRITE),
        ("GET", "/api/v1/users/{name}", f"/api/v1/users/{TARGET_USER}", {}, P.USERS_READ),
        ("DELETE", "/api/v1/users/{name}", "/api/v1/users/ghost", {}, P.USERS_WRITE),
        ("PUT", "/api/v1/users/{name}/disabled", f"/api/v1/users/{TARGET_USER}/disabled",
         {"json": {"disabled": False}}, P.USERS_WRITE),
        ("PUT", "/api/v1/users/{name}/password", f"/api/v1/users/{TARGET_USER}/password",
         {"json": {"password": "another long passphrase 1"}}, P.USERS_WRITE),
        ("PUT", "/api/v1/users/{name}/password", f"/api/v1/users/{who}/password",
         {"json": {"password": "another long passphrase 2", "current_password": PASSWORD}},
         P.SELF),
        ("POST", "/api/v1/users/{name}/roles", f"/api/v1/users/{TARGET_USER}/roles",
         {"json": {"role": "operator"}}, P.USERS_WRITE),
        ("DELETE", "/api/v1/users/{name}/roles/{role}",
         f"/api/v1/users/{TARGET_USER}/roles/author", {}, P.USERS_WRITE),
        ("GET", "/api/v1/roles", "/api/v1/roles", {}, P.SELF),
        ("GET", "/api/v1/tokens", "/api/v1/tokens", {}, P.SELF),
        ("POST", "/api/v1/tokens", "/api/v1/tokens", {"json": {"name": "matrix"}}, P.SELF),
        ("DELETE", "/api/v1/tokens/{token_id}", "/api/v1/tokens/999999", {}, P.SELF),
        # monitoring: reported state, alerts, Run As health
        ("GET", "/api/v1/objects/{ref:path}/state", f"/api/v1/objects/{INSTANCE_A}/state", {},
         P.OBJECTS_READ),
        ("GET", "/api/v1/alerts", "/api/v1/alerts", {"params": {"all": "true"}}, P.OBJECTS_READ),
        ("GET", "/api/v1/computers/{name}/health", "/api/v1/computers/a.contoso.com/health", {},
         P.RUNAS_READ),
        # agents: enrolment requests, approval, tokens, the agent CA
        ("GET", "/api/v1/agents", "/api/v1/agents", {"params": {"status": "pending"}},
         P.RUNAS_READ),
        ("GET", "/api/v1/agents/{agent_id}", "/api/v1/agents/ghost", {}, P.RUNAS_READ),
        ("POST", "/api/v1/agents/{agent_id}/approve", "/api/v1/agents/ghost/approve", {},
         P.RUNAS_WRITE),
        ("POST", "/api/v1/agents/{agent_id}/reject", "/api/v1/agents/ghost/reject", {},
         P.RUNAS_WRITE),
        ("DELETE", "/api/v1/agents/{agent_id}", "/api/v1/agents/ghost", {}, P.RUNAS_WRITE),
        ("POST", "/api/v1/enrolment-tokens", "/api/v1/enrolment-tokens",
         {"json": {"computer": "a.contoso.com", "expires_in": 600}}, P.RUNAS_WRITE),
        ("GET", "/api/v1/agent-ca", "/api/v1/agent-ca", {}, P.RUNAS_READ),
        # SSH host keys: operators may look, administrators decide
        ("GET", "/api/v1/ssh-hosts", "/api/v1/ssh-hosts", {"params": {"status": "pending"}},
         P.OBJECTS_READ),
        ("POST", "/api/v1/ssh-hosts", "/api/v1/ssh-hosts",
         {"json": {"host": f"h-{abs(hash(who)) % 10_000}", "key": SSH_HOST_KEY}}, P.RUNAS_WRITE),
        ("POST", "/api/v1/ssh-hosts/{host_port}/approve", "/api/v1/ssh-hosts/ghost/approve",
         {"json": {"fingerprint": "SHA256:ghost"}}, P.RUNAS_WRITE),
        ("DELETE", "/api/v1/ssh-hosts/{host_port}", "/api/v1/ssh-hosts/ghost", {}, P.RUNAS_WRITE),
        # tasks: everyone who reads objects sees tasks and their own runs; operators run them;
        # only administrators change the Tasks Execution setting
        ("GET", "/api/v1/tasks", "/api/v1/tasks", {}, P.OBJECTS_READ),
        ("POST", "/api/v1/task-runs", "/api/v1/task-runs",
         {"json": {"task": "No.Such.Task", "targets": [INSTANCE_A]}}, P.TASKS_RUN),
        ("GET", "/api/v1/task-runs", "/api/v1/task-runs", {"params": {"limit": 5}},
         P.OBJECTS_READ),
        ("GET", "/api/v1/task-runs/{run_id}", "/api/v1/task-runs/ghost", {}, P.OBJECTS_READ),
        ("GET", "/api/v1/task-runs/{run_id}/output", "/api/v1/task-runs/ghost/output", {},
         P.OBJECTS_READ),
        ("GET", "/api/v1/settings/tasks-execution", "/api/v1/settings/tasks-execution", {},
         P.OBJECTS_READ),
        ("PUT", "/api/v1/settings/tasks-execution", "/api/v1/settings/tasks-execution",
         {"json": {"tasks_execution": "enabled"}}, P.SETTINGS_WRITE),
        # connected management groups: administrators connect and remove; alerts and tasks of
        # a connected group ("ghost": none, so 404 after authorisation) like local ones
        ("GET", "/api/v1/connected-groups", "/api/v1/connected-groups", {}, P.RUNAS_READ),
        ("POST", "/api/v1/connected-groups", "/api/v1/connected-groups",
         {"json": {"name": f"cg-{who}", "server_url": "https://127.0.0.1:9",
                   "account": "ghost"}}, P.SETTINGS_WRITE),
        ("DELETE", "/api/v1/connected-groups/{name}", "/api/v1/connected-groups/ghost", {},
         P.SETTINGS_WRITE),
        ("GET", "/api/v1/connected-alerts", "/api/v1/connected-alerts", {}, P.OBJECTS_READ),
        ("GET", "/api/v1/connected-groups/{name}/tasks", "/api/v1/connected-groups/ghost/tasks",
         {}, P.OBJECTS_READ),
        ("POST", "/api/v1/connected-groups/{name}/task-runs",
         "/api/v1/connected-groups/ghost/task-runs",
         {"json": {"task": "No.Such.Task", "targets": [INSTANCE_A]}}, P.TASKS_RUN),
        ("GET", "/api/v1/connected-groups/{name}/task-runs/{run_id}",
         "/api/v1/connected-groups/ghost/task-runs/ghost", {}, P.OBJECTS_READ),
        ("GET", "/api/v1/connected-groups/{name}/task-runs/{run_id}/output",
         "/api/v1/connected-groups/ghost/task-runs/ghost/output", {}, P.OBJECTS_READ),
        ("GET", "/healthz", "/healthz", {}, PUBLIC),
        ("GET", "/readyz", "/readyz", {}, PUBLIC),
        ("GET", "/metrics", "/metrics", {}, PUBLIC),
        ("GET", "/openapi.json", "/openapi.json", {}, PUBLIC),
        ("POST", "/api/v1/logout", "/api/v1/logout", {}, P.SELF),
    ]  # fmt: skip


CALLERS = [role.value for role in Role] + [NO_ROLE, "anonymous"]


def test_the_matrix_covers_every_route(seeded: Served) -> None:
    """A new route must join the matrix (and so state who may call it)."""
    listed = {(m, template) for m, template, *_ in operations("x")}
    routes = {
        (method, route.path)
        for route in seeded.app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert routes == listed


def test_each_routes_rule_is_the_permission_the_spec_names(seeded: Served) -> None:
    spec = {(m, t): perm for m, t, _, _, perm in operations("x")}
    for route in seeded.app.routes:
        assert isinstance(route, APIRoute)
        (rule,) = rules_of(route)
        for method in route.methods:
            expected = spec[(method, route.path)]
            if (method, route.path) in {
                ("POST", "/api/v1/distribution-suggestions/{ref:path}"),
                ("PUT", "/api/v1/users/{name}/password"),
            }:
                continue  # the route's rule is the lesser right; the request may need more
            assert rule.permission == expected, (method, route.path)


@pytest.mark.parametrize("who", CALLERS)
def test_each_caller_gets_exactly_its_rights(seeded: Served, who: str) -> None:
    granted = (
        frozenset()
        if who == "anonymous"
        else ROLE_PERMISSIONS.get(Role(who), frozenset()) | {P.SELF}
        if who != NO_ROLE
        else frozenset({P.SELF})
    )
    headers = {} if who == "anonymous" else seeded.as_user(who)
    outcomes: dict[str, int] = {}
    for method, _template, path, options, permission in operations(who):
        r = seeded.client.request(method, path, headers=headers, **options)
        label = f"{method} {path} {options.get('params', '')}"
        outcomes[label] = r.status_code
        assert r.status_code < 500, (label, r.text)
        if permission is None:
            assert r.status_code < 400, (label, r.status_code, r.text)
        elif who == "anonymous":
            assert r.status_code == 401, label
            assert r.headers["www-authenticate"] == "Bearer"
        elif permission in granted:
            assert r.status_code not in (401, 403), (label, r.text)
        else:
            assert r.status_code == 403, (label, r.status_code, r.text)
            assert r.json()["type"] == "urn:runas:problem:forbidden"


def test_a_read_only_operator_can_neither_read_nor_change_accounts(seeded: Served) -> None:
    h = seeded.as_user(Role.READ_ONLY_OPERATOR.value)
    c = seeded.client
    assert c.get("/api/v1/accounts", headers=h).status_code == 403
    assert c.get(f"/api/v1/accounts/{ACCOUNT}", headers=h).status_code == 403
    assert c.get(f"/api/v1/distribution/{ACCOUNT}", headers=h).status_code == 403
    assert c.patch(f"/api/v1/accounts/{ACCOUNT}", json={"description": "x"},
                   headers=h).status_code == 403  # fmt: skip
    assert c.delete(f"/api/v1/accounts/{ACCOUNT}", headers=h).status_code == 403
    # ...and nothing changed
    after = c.get(f"/api/v1/accounts/{ACCOUNT}", headers=seeded.admin).json()
    assert after["description"] == ""


def test_a_403_is_the_same_whether_the_account_exists_or_not(seeded: Served) -> None:
    """The same request before and after an administrator creates the account: byte for byte
    the same answer, so a caller without the right cannot probe what exists."""
    c = seeded.client
    for who in (Role.READ_ONLY_OPERATOR.value, Role.AUTHOR.value, NO_ROLE):
        h = seeded.as_user(who)
        name = f"probe-{who}"
        requests = [
            ("GET", f"/api/v1/accounts/{name}", {}),
            ("DELETE", f"/api/v1/accounts/{name}", {}),
            ("PATCH", f"/api/v1/accounts/{name}", {"json": {"description": "x"}}),
            ("GET", f"/api/v1/distribution/{name}", {}),
        ]
        before = [c.request(m, p, headers=h, **o) for m, p, o in requests]
        created = c.post(
            "/api/v1/accounts",
            json={"name": name, "type": "simple", "fields": {"user": "u"},
                  "secrets": {"password": "pw"}},
            headers=seeded.admin,
        )  # fmt: skip
        assert created.status_code == 201
        after = [c.request(m, p, headers=h, **o) for m, p, o in requests]
        for b, a in zip(before, after, strict=True):
            assert b.status_code == a.status_code == 403
            assert b.content == a.content
            assert dict(b.headers) == dict(a.headers)
