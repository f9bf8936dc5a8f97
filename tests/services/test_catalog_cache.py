"""The server's catalog cache answers explain exactly as a fresh read would: a change committed
by anyone (another server, the local CLI) is seen by the next question."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from runas.runtime import Runtime
from runas.services import accounts, discovery, explain, packs, profiles, setup
from runas.services.accounts import AccountCreate
from runas.services.catalog import CatalogCache
from runas.services.discovery import DiscoveryPayload
from runas.services.profiles import AssociateRequest, DissociateRequest
from runas.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
WORKFLOW = "Contoso.SQL.InstanceAvailability"
INSTANCE_A = "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"


@pytest.fixture
def runtime(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    rt = Runtime(Settings(data_dir=tmp_path / "data", database_url=db_url, actor="t"), env={})
    setup.init(rt, "test")
    with rt.unit_of_work() as uow:
        packs.import_pack(uow, (EXAMPLES / "packs" / "contoso-sql.yaml").read_text(), "pack")
    with rt.unit_of_work() as uow:
        snapshot = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
        discovery.submit(uow, DiscoveryPayload.model_validate(snapshot))
    with rt.unit_of_work() as uow:
        for name in ("one", "two"):
            accounts.add(
                uow,
                AccountCreate(
                    name=name,
                    type="windows",
                    fields={"domain": "contoso.com", "user": name},
                    secrets={"password": SecretStr("pw")},
                ),
            )
    try:
        yield rt
    finally:
        rt.close()


def _account(rt: Runtime, cache: CatalogCache) -> str | None:
    with rt.unit_of_work() as uow:
        view = explain.explain(uow.session, obj_ref=INSTANCE_A, workflow=WORKFLOW, catalogs=cache)
    return None if view.account is None else view.account.name


def _associate(rt: Runtime, account: str) -> None:
    with rt.unit_of_work() as uow:
        profiles.associate(
            uow, AssociateRequest(profile=PROFILE, account=account, target_kind="object",
                                  target=INSTANCE_A),
        )  # fmt: skip


def test_a_change_is_seen_by_the_next_question(runtime: Runtime) -> None:
    cache = CatalogCache()
    assert _account(runtime, cache) is None
    _associate(runtime, "one")  # not through the cache's owner: like another server
    assert _account(runtime, cache) == "one"
    assert _account(runtime, cache) == "one"  # from the cache, still right
    with runtime.unit_of_work() as uow:
        profiles.dissociate(uow, DissociateRequest(profile=PROFILE, account="one"))
    assert _account(runtime, cache) is None
