"""Run As profiles and their associations. Authors may list profiles; only administrators see
a profile's associations or change them."""

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from runas.domain.model import TargetKind
from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, RemovedIds, errors, etag, expected_version
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import lookup, profiles
from runas.services.audit import AuditAction
from runas.services.profiles import (
    AssociateRequest,
    AssociationView,
    DissociateRequest,
    ProfileCreate,
    ProfileSummary,
    ProfileView,
)

#: ``If-Match`` on an association change: the profile's version (its ``ETag``) the client saw
IfMatch = Annotated[str | None, Header(max_length=64)]


class AssociationCreate(BaseModel):
    """:class:`AssociateRequest` without ``profile`` (it is in the path)."""

    model_config = ConfigDict(extra="forbid")

    account: str = Field(min_length=1, max_length=255)
    target_kind: TargetKind = TargetKind.ALL
    target: str | None = Field(default=None, max_length=1024)
    enforced: bool = False
    position: int | None = Field(default=None, ge=1)


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["profiles"])
    write = Permission.RUNAS_WRITE

    @r.get("/profiles", response_model=list[ProfileSummary], responses=errors())
    def list_profiles(
        caller: Annotated[Caller, require(Permission.PROFILES_LIST)],
    ) -> list[ProfileSummary]:
        with caller.uow() as uow:
            return profiles.list_profiles(uow.session)

    @r.get("/profiles/{profile_id}", response_model=ProfileView, responses=errors(404))
    def show_profile(
        caller: Annotated[Caller, require(Permission.RUNAS_READ)],
        profile_id: str,
        response: Response,
    ) -> ProfileView:
        with caller.uow() as uow:
            # The version changes with every association change: If-Match on one refuses
            # (409) rather than change a list the client has not seen.
            response.headers["ETag"] = etag(lookup.profile(uow.session, profile_id).row_version)
            return profiles.show(uow.session, profile_id)

    @r.post(
        "/profiles", status_code=201, response_model=ProfileView, responses=errors(404, 409, 413)
    )
    def create_profile(
        caller: Annotated[Caller, require(write, action=AuditAction.PROFILE_CREATE)],
        req: ProfileCreate,
    ) -> ProfileView:
        caller.target(req.id)
        with caller.uow() as uow:
            return profiles.add(uow, req)

    @r.post(
        "/profiles/{profile_id}/associations",
        status_code=201,
        response_model=AssociationView,
        responses=errors(404, 409, 413),
    )
    def associate(
        caller: Annotated[Caller, require(write, action=AuditAction.ASSOCIATION_CREATE)],
        profile_id: str,
        req: AssociationCreate,
        if_match: IfMatch = None,
    ) -> AssociationView:
        expected = None if if_match is None else expected_version(if_match, "profile")
        with caller.uow() as uow:
            return profiles.associate(
                uow,
                AssociateRequest(profile=profile_id, **req.model_dump()),
                expected_version=expected,
            )

    @r.delete(
        "/profiles/{profile_id}/associations",
        response_model=RemovedIds,
        responses=errors(404, 409),
    )
    def dissociate(
        caller: Annotated[Caller, require(write, action=AuditAction.ASSOCIATION_REMOVE)],
        profile_id: str,
        account: Annotated[str, Query(min_length=1, max_length=255)],
        target_kind: Annotated[TargetKind | None, Query()] = None,
        target: Annotated[str | None, Query(max_length=1024)] = None,
        if_match: IfMatch = None,
    ) -> RemovedIds:
        expected = None if if_match is None else expected_version(if_match, "profile")
        req = DissociateRequest(
            profile=profile_id, account=account, target_kind=target_kind, target=target
        )
        with caller.uow() as uow:
            return RemovedIds(removed=profiles.dissociate(uow, req, expected_version=expected))

    return r
