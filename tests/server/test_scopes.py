"""Role scopes: a role scoped to groups shows only the objects of those groups, and an object
out of scope reads exactly like one that does not exist."""

from __future__ import annotations

from runas.domain.roles import Role
from runas.services import users
from runas.services.roles import RoleAssign
from server.conftest import GROUP, INSTANCE_A, Served, add_user

INSTANCE_D = "Contoso.SQL.Instance:d.contoso.com;MSSQLSERVER"  # environment test: not in GROUP


def _scoped_operator(s: Served) -> dict[str, str]:
    token = add_user(s.runtime, "scoped", [])
    with s.runtime.unit_of_work() as uow:
        users.assign_role(uow, "scoped", RoleAssign(role=Role.OPERATOR.value, scope_groups=[GROUP]))
    return {"Authorization": f"Bearer {token}"}


def test_a_scoped_role_sees_only_its_groups_objects(seeded: Served) -> None:
    c, scoped = seeded.client, _scoped_operator(seeded)
    names = {o["full_name"] for o in c.get("/api/v1/objects", headers=scoped).json()}
    assert names == {f"Contoso.SQL.Instance:{x}.contoso.com;MSSQLSERVER" for x in ("a", "b", "c")}
    everything = c.get("/api/v1/objects", headers=seeded.as_user("read-only-operator")).json()
    assert len(everything) == 8  # an unscoped role sees the four computers too
    assert [g["id"] for g in c.get("/api/v1/groups", headers=scoped).json()] == [GROUP]
    shown = c.get(f"/api/v1/objects/{INSTANCE_A}", headers=scoped)
    assert shown.status_code == 200
    assert shown.json()["groups"] == [GROUP]


def test_out_of_scope_reads_like_missing(seeded: Served) -> None:
    c, scoped = seeded.client, _scoped_operator(seeded)
    hidden = c.get(f"/api/v1/objects/{INSTANCE_D}", headers=scoped)
    missing = c.get("/api/v1/objects/Contoso.SQL.Instance:z.contoso.com;X", headers=scoped)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"] == f"no object named {INSTANCE_D!r}"
    assert missing.json()["detail"].startswith("no object named ")
    assert c.get(f"/api/v1/groups/{GROUP}", headers=scoped).status_code == 200
    assert c.get("/api/v1/groups/System.Nothing", headers=scoped).json()["detail"] == (
        "no group 'System.Nothing'"
    )
