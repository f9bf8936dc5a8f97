"""Run As accounts. Secrets are write-only: they arrive in ``AccountCreate``/``AccountUpdate``
(``SecretStr``, so ``writeOnly`` in the schema) and no response model has a field for one."""

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from runas.domain.roles import Permission
from runas.errors import Conflict
from runas.server.routes.common import API_PREFIX, Removed, errors, etag, expected_version
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import accounts, lookup
from runas.services.accounts import AccountCreate, AccountSummary, AccountUpdate, AccountView
from runas.services.audit import AuditAction
from runas.storage.tables import AccountRow

READ = require(Permission.RUNAS_READ)


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["accounts"])

    @r.get("/accounts", response_model=list[AccountSummary], responses=errors())
    def list_accounts(
        caller: Annotated[Caller, READ],
        account_type: Annotated[str | None, Query(alias="type", max_length=64)] = None,
    ) -> list[AccountSummary]:
        with caller.uow() as uow:
            return accounts.list_accounts(uow.session, account_type)

    @r.post(
        "/accounts",
        status_code=201,
        response_model=AccountView,
        responses=errors(409, 413),
    )
    def create_account(
        caller: Annotated[
            Caller, require(Permission.RUNAS_WRITE, action=AuditAction.ACCOUNT_CREATE)
        ],
        req: AccountCreate,
    ) -> AccountView:
        caller.target(req.name)
        with caller.uow() as uow:
            return accounts.add(uow, req)

    @r.get("/accounts/{ref:path}", response_model=AccountView, responses=errors(404))
    def show_account(caller: Annotated[Caller, READ], ref: str, response: Response) -> AccountView:
        with caller.uow() as uow:
            row = lookup.account(uow.session, ref)
            response.headers["ETag"] = etag(row.row_version)
            return accounts.view(uow.session, row)

    @r.patch("/accounts/{ref:path}", response_model=AccountView, responses=errors(404, 409, 413))
    def update_account(
        caller: Annotated[
            Caller, require(Permission.RUNAS_WRITE, action=AuditAction.ACCOUNT_UPDATE)
        ],
        ref: str,
        req: AccountUpdate,
        response: Response,
        if_match: Annotated[str | None, Header(max_length=64)] = None,
    ) -> AccountView:
        with caller.uow() as uow:
            if if_match is not None:
                # The client read version N; if the account moved on since, refuse rather than
                # overwrite a change it has not seen.
                row = lookup.account(uow.session, ref, for_update=True)
                if row.row_version != expected_version(if_match, "account"):
                    raise Conflict(
                        f"account {row.name!r} was changed since you read it "
                        f"(version {row.row_version}): reload and retry"
                    )
            view = accounts.update(uow, ref, req)
            updated = uow.session.get(AccountRow, view.id)
            if updated is not None:
                response.headers["ETag"] = etag(updated.row_version)
            return view

    @r.delete("/accounts/{ref:path}", response_model=Removed, responses=errors(404, 409))
    def remove_account(
        caller: Annotated[
            Caller, require(Permission.RUNAS_WRITE, action=AuditAction.ACCOUNT_REMOVE)
        ],
        ref: str,
    ) -> Removed:
        with caller.uow() as uow:
            return Removed(removed=accounts.remove(uow, ref))

    return r
