"""schemathesis against the OpenAPI document, as an administrator over a seeded management
group: no request it generates gets a 5xx, and every response matches the document.

The operations are driven from inside one test (not schemathesis's pytest plugin, whose lazy
fixture loader does not work with this pytest), a few examples each so the run stays short."""

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from runas.domain.roles import Role
from runas.services import users
from runas.services.users import TokenCreate
from server.conftest import Served

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 10


@pytest.mark.slow
def test_api_conforms_to_its_document(seeded: Served) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", seeded.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40
    failures: list[str] = []
    for n, operation in enumerate(operations):
        # A token of its own for each operation: generated calls may revoke the caller's token
        # (logout, token ids), which would turn the rest of the run into 401s that prove nothing.
        with seeded.runtime.unit_of_work() as uow:
            token = users.create_token(
                uow, TokenCreate(name=f"st-{n}"), user=Role.ADMINISTRATOR.value
            ).token
        failure = _exercise(operation, {"Authorization": f"Bearer {token}"})
        if failure:
            failures.append(f"{operation.label}: {failure}")
    assert failures == [], "\n\n".join(failures)


def _exercise(operation: Any, headers: dict[str, str]) -> str | None:
    """Run the operation's generated cases; the first failure, or None."""
    statuses: list[int] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        statuses.append(response.status_code)

    try:
        run()
    except (Exception, BaseExceptionGroup) as err:  # schemathesis raises an exception group
        return str(err)[:1500]
    if operation.path != "/api/v1/login" and all(s == 401 for s in statuses):
        return "every call was refused (401): proves nothing"
    return None
