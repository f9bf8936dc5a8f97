"""What the routers share: the error statuses they declare and small response bodies."""

from typing import Any

from pydantic import BaseModel

from runas.errors import InvalidInput
from runas.server.problems import declare

API_PREFIX = "/api/v1"

#: every authenticated route: no/invalid token, missing permission, bad input, a server fault
AUTHED = (401, 403, 422, 500)


def errors(*extra: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for an authenticated route, with its own extra statuses (404, 409…)."""
    return declare(*sorted({*AUTHED, *extra}))


def etag(version: int) -> str:
    """The ``ETag`` of a versioned row (accounts, profiles): its ``row_version``."""
    return f'"{version}"'


def expected_version(if_match: str, what: str) -> int:
    """The version an ``If-Match`` names (``"3"``, ``W/"3"``)."""
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdecimal():
        raise InvalidInput(f'If-Match must be the {what}\'s version, as "<row_version>"')
    return int(value)


class Removed(BaseModel):
    removed: str


class RemovedIds(BaseModel):
    removed: list[int]


class RemovedObjects(BaseModel):
    removed_objects: list[str]


class Revoked(BaseModel):
    revoked: int
