"""Distribution of an account's secret: which computers may receive it, and suggestions."""

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from runas.domain.accounts import DistributionMode
from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import distribution
from runas.services.audit import AuditAction
from runas.services.distribution import DistributionView, SuggestView


class DistributionChange(BaseModel):
    """``computers`` replaces the approved list; ``add``/``remove`` edit it."""

    model_config = ConfigDict(extra="forbid")

    mode: DistributionMode
    computers: list[Annotated[str, Field(max_length=255)]] | None = None
    add: list[Annotated[str, Field(max_length=255)]] | None = None
    remove: list[Annotated[str, Field(max_length=255)]] | None = None


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["distribution"])

    @r.get("/distribution/{ref:path}", response_model=DistributionView, responses=errors(404))
    def get_distribution(
        caller: Annotated[Caller, require(Permission.RUNAS_READ)], ref: str
    ) -> DistributionView:
        with caller.uow() as uow:
            return distribution.get(uow.session, ref)

    @r.put(
        "/distribution/{ref:path}",
        response_model=DistributionView,
        responses=errors(404, 409, 413),
    )
    def set_distribution(
        caller: Annotated[
            Caller, require(Permission.RUNAS_WRITE, action=AuditAction.DISTRIBUTION_SET)
        ],
        ref: str,
        change: DistributionChange,
    ) -> DistributionView:
        with caller.uow() as uow:
            return distribution.set_distribution(
                uow,
                ref,
                mode=change.mode,
                computers=change.computers,
                add=change.add,
                remove=change.remove,
            )

    @r.post(
        "/distribution-suggestions/{ref:path}",
        response_model=SuggestView,
        responses=errors(404, 409),
    )
    def suggest(
        caller: Annotated[
            Caller,
            require(Permission.RUNAS_READ, action=AuditAction.DISTRIBUTION_APPROVE_SUGGESTED),
        ],
        ref: str,
        apply: Annotated[bool, Query()] = False,
    ) -> SuggestView:
        if apply:
            # Approving the suggestions changes distribution: an administrator's right.
            caller.demand(Permission.RUNAS_WRITE)
        with caller.uow() as uow:
            return distribution.suggest(uow, ref, apply=apply)

    return r
