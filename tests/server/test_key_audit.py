"""Key operations through the API are audited as the caller, from the caller's address."""

from __future__ import annotations

from runas.services import audit
from server.conftest import Served


def test_rotation_through_the_api_is_recorded_as_the_caller(seeded: Served) -> None:
    response = seeded.client.post("/api/v1/keys/rotate", headers=seeded.admin)
    assert response.status_code == 200, response.text
    with seeded.runtime.database.session() as s:
        records = audit.list_records(s, action="key:rotate")
    assert [r.actor for r in records] == ["administrator"]
    assert records[0].source not in ("", "local")
