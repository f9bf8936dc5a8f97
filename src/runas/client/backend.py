"""The Backend protocol over HTTP: each operation is one request to the management server's
``/api/v1`` (docs: the API table in ``docs/cli.md`` → Remote mode), answered with the same
views LocalBackend returns, so every command prints the same thing in both modes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TypeVar

import httpx
from pydantic import SecretStr

from runas.client.transport import DEFAULT_TIMEOUT, ApiClient, segment
from runas.domain.accounts import DistributionMode
from runas.errors import ConfigurationError, InvalidInput, ServerError
from runas.services.accounts import AccountCreate, AccountSummary, AccountUpdate, AccountView
from runas.services.agents import (
    AgentCaView,
    AgentView,
    EnrolmentTokenCreate,
    EnrolmentTokenCreated,
)
from runas.services.alerts import AlertView
from runas.services.audit import AuditRecordView, AuditVerifyView
from runas.services.connected import (
    ConnectedAlertsView,
    ConnectedGroupCreate,
    ConnectedGroupView,
)
from runas.services.discovery import DiscoveryPayload, DiscoveryResult
from runas.services.distribution import DistributionView, SuggestView
from runas.services.explain import ComputerConfigView, ExplainView
from runas.services.keys import KeyView, Progress, RotateResult
from runas.services.monitoring import ObjectStateView
from runas.services.objects import GroupView, ObjectSummary, ObjectView
from runas.services.packs import ImportResult, PackSummary, PackView
from runas.services.profiles import (
    AssociateRequest,
    AssociationView,
    DissociateRequest,
    ProfileCreate,
    ProfileSummary,
    ProfileView,
)
from runas.services.run_as_health import HealthView
from runas.services.setup import InitResult
from runas.services.ssh_hosts import (
    SshHostKeyAdd,
    SshHostKeyApprove,
    SshHostKeysRemoved,
    SshHostKeyView,
)
from runas.services.tasks import TaskRunView, TaskStart, TaskView
from runas.services.users import (
    PasswordChange,
    RoleAssign,
    TokenCreate,
    TokenCreated,
    TokenView,
    UserCreate,
    UserView,
)

#: key rotation re-wraps every data key in one request; it may take minutes on a large group
LONG_TIMEOUT = 3600.0

V = TypeVar("V")


def _server_host_only(command: str) -> ConfigurationError:
    return ConfigurationError(
        f"'runas {command}' runs on the server host, against its data directory and database; "
        "run it there without --server or RUNAS_SERVER"
    )


class HttpBackend:
    def __init__(
        self,
        base_url: str,
        token: SecretStr | None,
        *,
        verify: bool | Path = True,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api = ApiClient(base_url, token, verify=verify, timeout=timeout, transport=transport)

    @property
    def base_url(self) -> str:
        return self.api.base_url

    # management group: local-only

    def init(self, management_group: str | None) -> InitResult:
        raise _server_host_only("init")

    def db_upgrade(self) -> str | None:
        raise _server_host_only("db upgrade")

    # accounts

    def account_add(self, req: AccountCreate) -> AccountView:
        return self.api.one(AccountView, self.api.call("POST", "/accounts", body=req))

    def account_list(self, account_type: str | None) -> list[AccountSummary]:
        data = self.api.call("GET", "/accounts", query={"type": account_type})
        return self.api.many(AccountSummary, data)

    def account_show(self, ref: str) -> AccountView:
        return self.api.one(AccountView, self.api.call("GET", f"/accounts/{segment(ref)}"))

    def account_update(self, ref: str, req: AccountUpdate) -> AccountView:
        data = self.api.call("PATCH", f"/accounts/{segment(ref)}", body=req)
        return self.api.one(AccountView, data)

    def account_remove(self, ref: str) -> str:
        data = self.api.call("DELETE", f"/accounts/{segment(ref)}")
        return _field(data, "removed", str)

    # distribution

    def distribution_get(self, ref: str) -> DistributionView:
        data = self.api.call("GET", f"/distribution/{segment(ref)}")
        return self.api.one(DistributionView, data)

    def distribution_set(
        self,
        ref: str,
        mode: DistributionMode,
        computers: list[str] | None,
        add: list[str] | None,
        remove: list[str] | None,
    ) -> DistributionView:
        body: dict[str, object] = {"mode": DistributionMode(mode).value}
        for key, value in (("computers", computers), ("add", add), ("remove", remove)):
            if value is not None:
                body[key] = list(value)
        data = self.api.call("PUT", f"/distribution/{segment(ref)}", body=body)
        return self.api.one(DistributionView, data)

    def distribution_suggest(self, ref: str, apply: bool) -> SuggestView:
        data = self.api.call(
            "POST", f"/distribution-suggestions/{segment(ref)}", query={"apply": apply}
        )
        return self.api.one(SuggestView, data)

    # packs

    def pack_import(self, text: str, source: str) -> ImportResult:
        data = self.api.call("POST", "/packs", body={"text": text, "source": source})
        return self.api.one(ImportResult, data)

    def pack_list(self) -> list[PackSummary]:
        return self.api.many(PackSummary, self.api.call("GET", "/packs"))

    def pack_show(self, ref: str, with_source: bool) -> PackView:
        query = {"source": True} if with_source else None
        return self.api.one(PackView, self.api.call("GET", f"/packs/{segment(ref)}", query=query))

    def pack_remove(self, ref: str) -> list[str]:
        data = self.api.call("DELETE", f"/packs/{segment(ref)}")
        return _str_list(data, "removed_objects")

    # discovery, objects, groups

    def discovery_submit(self, payload: DiscoveryPayload) -> DiscoveryResult:
        data = self.api.call("POST", "/discovery", body=payload, timeout=LONG_TIMEOUT)
        return self.api.one(DiscoveryResult, data)

    def object_list(
        self, class_id: str | None, computer: str | None, limit: int
    ) -> list[ObjectSummary]:
        query = {"class": class_id, "computer": computer, "limit": limit}
        return self.api.many(ObjectSummary, self.api.call("GET", "/objects", query=query))

    def object_show(self, ref: str) -> ObjectView:
        return self.api.one(ObjectView, self.api.call("GET", f"/objects/{segment(ref)}"))

    def group_list(self) -> list[GroupView]:
        return self.api.many(GroupView, self.api.call("GET", "/groups"))

    def group_show(self, ref: str) -> GroupView:
        return self.api.one(GroupView, self.api.call("GET", f"/groups/{segment(ref)}"))

    # profiles and associations

    def profile_list(self) -> list[ProfileSummary]:
        return self.api.many(ProfileSummary, self.api.call("GET", "/profiles"))

    def profile_show(self, ref: str) -> ProfileView:
        return self.api.one(ProfileView, self.api.call("GET", f"/profiles/{segment(ref)}"))

    def profile_add(self, req: ProfileCreate) -> ProfileView:
        return self.api.one(ProfileView, self.api.call("POST", "/profiles", body=req))

    def associate(self, req: AssociateRequest) -> AssociationView:
        body = req.model_dump(mode="json", exclude={"profile"})
        data = self.api.call("POST", f"/profiles/{segment(req.profile)}/associations", body=body)
        return self.api.one(AssociationView, data)

    def dissociate(self, req: DissociateRequest) -> list[int]:
        query = {
            "account": req.account,
            "target_kind": req.target_kind.value if req.target_kind is not None else None,
            "target": req.target,
        }
        data = self.api.call(
            "DELETE", f"/profiles/{segment(req.profile)}/associations", query=query
        )
        removed = _field(data, "removed", list)
        if not all(isinstance(i, int) for i in removed):
            raise ServerError(f"server {self.base_url} sent an unexpected answer (removed)")
        return [int(i) for i in removed]

    # resolution

    def explain(self, obj_ref: str, workflow: str | None, profile: str | None) -> ExplainView:
        query = {"object": obj_ref, "workflow": workflow, "profile": profile}
        return self.api.one(ExplainView, self.api.call("GET", "/explain", query=query))

    def config_show(self, computer: str) -> ComputerConfigView:
        data = self.api.call("GET", f"/computers/{segment(computer)}/config")
        return self.api.one(ComputerConfigView, data)

    # keys

    def key_list(self) -> list[KeyView]:
        return self.api.many(KeyView, self.api.call("GET", "/keys"))

    def key_rotate(self, progress: Progress | None) -> RotateResult:
        return self._rewrap("/keys/rotate", progress)

    def key_rewrap(self, progress: Progress | None) -> RotateResult:
        return self._rewrap("/keys/rewrap", progress)

    def _rewrap(self, path: str, progress: Progress | None) -> RotateResult:
        # One request does the whole job on the server; the bar only completes at the end.
        result = self.api.one(RotateResult, self.api.call("POST", path, timeout=LONG_TIMEOUT))
        if progress is not None:
            progress(result.rewrapped, result.rewrapped)
        return result

    def key_retire(self, key_id: str) -> list[KeyView]:
        return self.api.many(KeyView, self.api.call("DELETE", f"/keys/{segment(key_id)}"))

    # users, roles, tokens

    def user_add(self, req: UserCreate) -> UserView:
        return self.api.one(UserView, self.api.call("POST", "/users", body=req))

    def user_list(self) -> list[UserView]:
        return self.api.many(UserView, self.api.call("GET", "/users"))

    def user_show(self, name: str) -> UserView:
        return self.api.one(UserView, self.api.call("GET", f"/users/{segment(name)}"))

    def user_remove(self, name: str) -> str:
        return _field(self.api.call("DELETE", f"/users/{segment(name)}"), "removed", str)

    def user_passwd(self, name: str, req: PasswordChange) -> UserView:
        data = self.api.call("PUT", f"/users/{segment(name)}/password", body=req)
        return self.api.one(UserView, data)

    def user_set_disabled(self, name: str, disabled: bool) -> UserView:
        data = self.api.call("PUT", f"/users/{segment(name)}/disabled", body={"disabled": disabled})
        return self.api.one(UserView, data)

    def role_assign(self, name: str, req: RoleAssign) -> UserView:
        data = self.api.call("POST", f"/users/{segment(name)}/roles", body=req)
        return self.api.one(UserView, data)

    def role_revoke(self, name: str, role: str) -> UserView:
        data = self.api.call("DELETE", f"/users/{segment(name)}/roles/{segment(role)}")
        return self.api.one(UserView, data)

    def token_create(self, req: TokenCreate, user: str | None) -> TokenCreated:
        _own_tokens_only(user)
        return self.api.one(TokenCreated, self.api.call("POST", "/tokens", body=req))

    def token_list(self, user: str | None) -> list[TokenView]:
        _own_tokens_only(user)
        return self.api.many(TokenView, self.api.call("GET", "/tokens"))

    def token_revoke(self, token_id: int) -> int:
        data = self.api.call("DELETE", f"/tokens/{segment(str(token_id))}")
        return _field(data, "revoked", int)

    # audit trail

    def audit_list(
        self,
        since: datetime | None,
        actor: str | None,
        action: str | None,
        target: str | None,
        limit: int,
    ) -> list[AuditRecordView]:
        query = {
            "since": since.isoformat() if since is not None else None,
            "actor": actor,
            "action": action,
            "target": target,
            "limit": limit,
        }
        return self.api.many(AuditRecordView, self.api.call("GET", "/audit", query=query))

    def audit_verify(self) -> AuditVerifyView:
        data = self.api.call("GET", "/audit/verify", timeout=LONG_TIMEOUT)
        return self.api.one(AuditVerifyView, data)

    # monitoring

    def object_state(self, ref: str) -> ObjectStateView:
        data = self.api.call("GET", f"/objects/{segment(ref)}/state")
        return self.api.one(ObjectStateView, data)

    def alert_list(
        self, include_closed: bool, computer: str | None, source: str | None, limit: int
    ) -> list[AlertView]:
        query = {"all": include_closed, "computer": computer, "source": source, "limit": limit}
        return self.api.many(AlertView, self.api.call("GET", "/alerts", query=query))

    def health_show(self, computer: str) -> list[HealthView]:
        data = self.api.call("GET", f"/computers/{segment(computer)}/health")
        return self.api.many(HealthView, data)

    # agents

    def agent_list(self, status: str | None) -> list[AgentView]:
        return self.api.many(AgentView, self.api.call("GET", "/agents", query={"status": status}))

    def agent_show(self, agent_id: str) -> AgentView:
        return self.api.one(AgentView, self.api.call("GET", f"/agents/{segment(agent_id)}"))

    def agent_approve(self, agent_id: str) -> AgentView:
        data = self.api.call("POST", f"/agents/{segment(agent_id)}/approve")
        return self.api.one(AgentView, data)

    def agent_reject(self, agent_id: str) -> AgentView:
        data = self.api.call("POST", f"/agents/{segment(agent_id)}/reject")
        return self.api.one(AgentView, data)

    def agent_remove(self, agent_id: str) -> str:
        return _field(self.api.call("DELETE", f"/agents/{segment(agent_id)}"), "removed", str)

    def agent_token_create(self, req: EnrolmentTokenCreate) -> EnrolmentTokenCreated:
        data = self.api.call("POST", "/enrolment-tokens", body=req)
        return self.api.one(EnrolmentTokenCreated, data)

    def agent_ca(self) -> AgentCaView:
        return self.api.one(AgentCaView, self.api.call("GET", "/agent-ca"))

    # SSH host keys

    def ssh_host_list(self, status: str | None, host: str | None) -> list[SshHostKeyView]:
        data = self.api.call("GET", "/ssh-hosts", query={"status": status, "host": host})
        return self.api.many(SshHostKeyView, data)

    def ssh_host_approve(self, target: str, fingerprint: str) -> SshHostKeyView:
        data = self.api.call(
            "POST",
            f"/ssh-hosts/{segment(target)}/approve",
            body=SshHostKeyApprove(fingerprint=fingerprint),
        )
        return self.api.one(SshHostKeyView, data)

    def ssh_host_add(self, req: SshHostKeyAdd) -> SshHostKeyView:
        return self.api.one(SshHostKeyView, self.api.call("POST", "/ssh-hosts", body=req))

    def ssh_host_remove(self, target: str, fingerprint: str | None) -> list[SshHostKeyView]:
        data = self.api.call(
            "DELETE", f"/ssh-hosts/{segment(target)}", query={"fingerprint": fingerprint}
        )
        return self.api.one(SshHostKeysRemoved, data).removed

    # tasks and the Tasks Execution setting

    def task_list(self, target: str | None) -> list[TaskView]:
        return self.api.many(TaskView, self.api.call("GET", "/tasks", query={"target": target}))

    def task_start(self, req: TaskStart) -> TaskRunView:
        # The body carries supplied credentials (SecretStr, revealed only into the body)
        return self.api.one(TaskRunView, self.api.call("POST", "/task-runs", body=req))

    def task_status(self, run_id: str) -> TaskRunView:
        return self.api.one(TaskRunView, self.api.call("GET", f"/task-runs/{segment(run_id)}"))

    def task_output(self, run_id: str) -> TaskRunView:
        data = self.api.call("GET", f"/task-runs/{segment(run_id)}/output")
        return self.api.one(TaskRunView, data)

    def task_history(self, limit: int) -> list[TaskRunView]:
        return self.api.many(
            TaskRunView, self.api.call("GET", "/task-runs", query={"limit": limit})
        )

    def tasks_execution_get(self) -> bool:
        return _tasks_execution(self.api.call("GET", "/settings/tasks-execution"))

    def tasks_execution_set(self, enabled: bool) -> bool:
        body = {"tasks_execution": "enabled" if enabled else "disabled"}
        return _tasks_execution(self.api.call("PUT", "/settings/tasks-execution", body=body))

    # connected management groups

    def mg_connect(self, req: ConnectedGroupCreate) -> ConnectedGroupView:
        data = self.api.call("POST", "/connected-groups", body=req)
        return self.api.one(ConnectedGroupView, data)

    def mg_list(self) -> list[ConnectedGroupView]:
        return self.api.many(ConnectedGroupView, self.api.call("GET", "/connected-groups"))

    def mg_remove(self, name: str) -> str:
        return _field(self.api.call("DELETE", f"/connected-groups/{segment(name)}"), "removed", str)

    def alert_list_connected(
        self, include_closed: bool, computer: str | None, source: str | None, limit: int
    ) -> ConnectedAlertsView:
        query = {"all": include_closed, "computer": computer, "source": source, "limit": limit}
        data = self.api.call("GET", "/connected-alerts", query=query)
        return self.api.one(ConnectedAlertsView, data)

    def mg_task_list(self, name: str, target: str | None) -> list[TaskView]:
        data = self.api.call(
            "GET", f"/connected-groups/{segment(name)}/tasks", query={"target": target}
        )
        return self.api.many(TaskView, data)

    def mg_task_start(self, name: str, req: TaskStart) -> TaskRunView:
        data = self.api.call("POST", f"/connected-groups/{segment(name)}/task-runs", body=req)
        return self.api.one(TaskRunView, data)

    def mg_task_show(self, name: str, run_id: str, with_output: bool) -> TaskRunView:
        path = f"/connected-groups/{segment(name)}/task-runs/{segment(run_id)}"
        data = self.api.call("GET", path + ("/output" if with_output else ""))
        return self.api.one(TaskRunView, data)

    def close(self) -> None:
        self.api.close()


def _tasks_execution(data: object) -> bool:
    value = _field(data, "tasks_execution", str)
    if value not in ("enabled", "disabled"):
        raise ServerError("the server's answer has no valid 'tasks_execution'")
    return value == "enabled"


def _own_tokens_only(user: str | None) -> None:
    # A server knows who is calling: its token routes are about the caller's own tokens.
    if user is not None:
        raise InvalidInput(
            "--user is for local mode: against a server, token commands are about your own "
            "tokens (log in as that user)"
        )


def _field(data: object, name: str, kind: type[V]) -> V:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, kind):
        raise ServerError(f"the server's answer has no {name!r}")
    return value


def _str_list(data: object, name: str) -> list[str]:
    value = _field(data, name, list)
    if not all(isinstance(v, str) for v in value):
        raise ServerError(f"the server's answer has no {name!r}")
    return [str(v) for v in value]
