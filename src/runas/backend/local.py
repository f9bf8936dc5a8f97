"""Operations run in-process: each is one unit of work (one transaction) on the database."""

from __future__ import annotations

from datetime import datetime, timedelta

from runas.domain.accounts import DistributionMode
from runas.runtime import Runtime
from runas.services import (
    accounts,
    agents,
    alerts,
    audit,
    connected,
    discovery,
    distribution,
    explain,
    keys,
    monitoring,
    objects,
    packs,
    profiles,
    run_as_health,
    setup,
    ssh_hosts,
    tasks,
    users,
)
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
from runas.services.ssh_hosts import SshHostKeyAdd, SshHostKeyView
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


class LocalBackend:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def init(self, management_group: str | None) -> InitResult:
        return setup.init(self.runtime, management_group)

    def db_upgrade(self) -> str | None:
        return setup.db_upgrade(self.runtime)

    def account_add(self, req: AccountCreate) -> AccountView:
        with self.runtime.unit_of_work() as uow:
            return accounts.add(uow, req)

    def account_list(self, account_type: str | None) -> list[AccountSummary]:
        with self.runtime.unit_of_work() as uow:
            return accounts.list_accounts(uow.session, account_type)

    def account_show(self, ref: str) -> AccountView:
        with self.runtime.unit_of_work() as uow:
            return accounts.show(uow.session, ref)

    def account_update(self, ref: str, req: AccountUpdate) -> AccountView:
        with self.runtime.unit_of_work() as uow:
            return accounts.update(uow, ref, req)

    def account_remove(self, ref: str) -> str:
        with self.runtime.unit_of_work() as uow:
            return accounts.remove(uow, ref)

    def distribution_get(self, ref: str) -> DistributionView:
        with self.runtime.unit_of_work() as uow:
            return distribution.get(uow.session, ref)

    def distribution_set(
        self,
        ref: str,
        mode: DistributionMode,
        computers: list[str] | None,
        add: list[str] | None,
        remove: list[str] | None,
    ) -> DistributionView:
        with self.runtime.unit_of_work() as uow:
            return distribution.set_distribution(
                uow, ref, mode=mode, computers=computers, add=add, remove=remove
            )

    def distribution_suggest(self, ref: str, apply: bool) -> SuggestView:
        with self.runtime.unit_of_work() as uow:
            return distribution.suggest(uow, ref, apply=apply)

    def pack_import(self, text: str, source: str) -> ImportResult:
        with self.runtime.unit_of_work() as uow:
            return packs.import_pack(uow, text, source)

    def pack_list(self) -> list[PackSummary]:
        with self.runtime.unit_of_work() as uow:
            return packs.list_packs(uow.session)

    def pack_show(self, ref: str, with_source: bool) -> PackView:
        with self.runtime.unit_of_work() as uow:
            return packs.show(uow.session, ref, with_source=with_source)

    def pack_remove(self, ref: str) -> list[str]:
        with self.runtime.unit_of_work() as uow:
            return packs.remove(uow, ref)

    def discovery_submit(self, payload: DiscoveryPayload) -> DiscoveryResult:
        with self.runtime.unit_of_work() as uow:
            return discovery.submit(uow, payload)

    def object_list(
        self, class_id: str | None, computer: str | None, limit: int
    ) -> list[ObjectSummary]:
        with self.runtime.unit_of_work() as uow:
            return objects.list_objects(uow.session, class_id, computer, limit)

    def object_show(self, ref: str) -> ObjectView:
        with self.runtime.unit_of_work() as uow:
            return objects.show(uow.session, ref)

    def group_list(self) -> list[GroupView]:
        with self.runtime.unit_of_work() as uow:
            return objects.list_groups(uow.session)

    def group_show(self, ref: str) -> GroupView:
        with self.runtime.unit_of_work() as uow:
            return objects.show_group(uow.session, ref)

    def profile_list(self) -> list[ProfileSummary]:
        with self.runtime.unit_of_work() as uow:
            return profiles.list_profiles(uow.session)

    def profile_show(self, ref: str) -> ProfileView:
        with self.runtime.unit_of_work() as uow:
            return profiles.show(uow.session, ref)

    def profile_add(self, req: ProfileCreate) -> ProfileView:
        with self.runtime.unit_of_work() as uow:
            return profiles.add(uow, req)

    def associate(self, req: AssociateRequest) -> AssociationView:
        with self.runtime.unit_of_work() as uow:
            return profiles.associate(uow, req)

    def dissociate(self, req: DissociateRequest) -> list[int]:
        with self.runtime.unit_of_work() as uow:
            return profiles.dissociate(uow, req)

    def explain(self, obj_ref: str, workflow: str | None, profile: str | None) -> ExplainView:
        with self.runtime.unit_of_work() as uow:
            return explain.explain(uow.session, obj_ref=obj_ref, workflow=workflow, profile=profile)

    def config_show(self, computer: str) -> ComputerConfigView:
        with self.runtime.unit_of_work() as uow:
            return explain.computer_config(uow.session, computer)

    def key_list(self) -> list[KeyView]:
        return keys.list_keys(self.runtime)

    def key_rotate(self, progress: Progress | None) -> RotateResult:
        return keys.rotate(self.runtime, progress)

    def key_rewrap(self, progress: Progress | None) -> RotateResult:
        return keys.rewrap_all(self.runtime, progress)

    def key_retire(self, key_id: str) -> list[KeyView]:
        return keys.retire(self.runtime, key_id)

    # Local mode has no principal: whoever runs the CLI on the server host already holds the
    # database and the keyring, so it may do anything (and makes the first administrator).

    def user_add(self, req: UserCreate) -> UserView:
        with self.runtime.unit_of_work() as uow:
            return users.create_user(uow, req)

    def user_list(self) -> list[UserView]:
        with self.runtime.unit_of_work() as uow:
            return users.list_users(uow.session)

    def user_show(self, name: str) -> UserView:
        with self.runtime.unit_of_work() as uow:
            return users.show_user(uow.session, name)

    def user_remove(self, name: str) -> str:
        with self.runtime.unit_of_work() as uow:
            return users.remove_user(uow, name)

    def user_passwd(self, name: str, req: PasswordChange) -> UserView:
        with self.runtime.unit_of_work() as uow:
            return users.set_password(uow, name, req)

    def user_set_disabled(self, name: str, disabled: bool) -> UserView:
        with self.runtime.unit_of_work() as uow:
            return users.set_disabled(uow, name, disabled)

    def role_assign(self, name: str, req: RoleAssign) -> UserView:
        with self.runtime.unit_of_work() as uow:
            return users.assign_role(uow, name, req)

    def role_revoke(self, name: str, role: str) -> UserView:
        with self.runtime.unit_of_work() as uow:
            return users.revoke_role(uow, name, role)

    def token_create(self, req: TokenCreate, user: str | None) -> TokenCreated:
        with self.runtime.unit_of_work() as uow:
            return users.create_token(uow, req, user=user)

    def token_list(self, user: str | None) -> list[TokenView]:
        with self.runtime.unit_of_work() as uow:
            return users.list_tokens(uow.session, user=user, now=uow.now)

    def token_revoke(self, token_id: int) -> int:
        with self.runtime.unit_of_work() as uow:
            return users.revoke_token(uow, token_id)

    def audit_list(
        self,
        since: datetime | None,
        actor: str | None,
        action: str | None,
        target: str | None,
        limit: int,
    ) -> list[AuditRecordView]:
        with self.runtime.unit_of_work() as uow:
            return audit.list_records(
                uow.session, since=since, actor=actor, action=action, target=target, limit=limit
            )

    def audit_verify(self) -> AuditVerifyView:
        with self.runtime.unit_of_work() as uow:
            return audit.verify(uow.session)

    # monitoring: local mode sees every alert (no principal, no scope)

    def object_state(self, ref: str) -> ObjectStateView:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return monitoring.object_state(uow.session, ref)

    def alert_list(
        self, include_closed: bool, computer: str | None, source: str | None, limit: int
    ) -> list[AlertView]:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return alerts.list_alerts(
                uow.session,
                open_only=not include_closed,
                computer=computer,
                source=source,
                limit=limit,
            )

    def health_show(self, computer: str) -> list[HealthView]:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return run_as_health.health_show(uow.session, computer)

    # agents

    def agent_list(self, status: str | None) -> list[AgentView]:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return agents.list_agents(uow.session, status)

    def agent_show(self, agent_id: str) -> AgentView:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return agents.show(uow.session, agent_id)

    def agent_approve(self, agent_id: str) -> AgentView:
        with self.runtime.unit_of_work() as uow:
            return agents.approve(uow, agent_id)

    def agent_reject(self, agent_id: str) -> AgentView:
        with self.runtime.unit_of_work() as uow:
            return agents.reject(uow, agent_id)

    def agent_remove(self, agent_id: str) -> str:
        with self.runtime.unit_of_work() as uow:
            return agents.remove(uow, agent_id)

    def agent_token_create(self, req: EnrolmentTokenCreate) -> EnrolmentTokenCreated:
        with self.runtime.unit_of_work() as uow:
            return agents.create_enrolment_token(
                uow, req.computer, timedelta(seconds=req.expires_in)
            )

    def agent_ca(self) -> AgentCaView:
        with self.runtime.unit_of_work() as uow:
            return agents.ca_view(uow)

    # SSH host keys

    def ssh_host_list(self, status: str | None, host: str | None) -> list[SshHostKeyView]:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return ssh_hosts.list_keys(uow.session, status, host)

    def ssh_host_approve(self, target: str, fingerprint: str) -> SshHostKeyView:
        with self.runtime.unit_of_work() as uow:
            return ssh_hosts.approve(uow, target, fingerprint)

    def ssh_host_add(self, req: SshHostKeyAdd) -> SshHostKeyView:
        with self.runtime.unit_of_work() as uow:
            return ssh_hosts.add(uow, req)

    def ssh_host_remove(self, target: str, fingerprint: str | None) -> list[SshHostKeyView]:
        with self.runtime.unit_of_work() as uow:
            return ssh_hosts.remove(uow, target, fingerprint)

    # tasks: local mode has no principal, so it acts as the administrator of the server host

    def task_list(self, target: str | None) -> list[TaskView]:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return tasks.list_tasks(uow.session, target=target, principal=None)

    def task_start(self, req: TaskStart) -> TaskRunView:
        with self.runtime.unit_of_work() as uow:
            return tasks.start(uow, req, principal=None)

    def task_status(self, run_id: str) -> TaskRunView:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return tasks.show(uow.session, run_id, principal=None)

    def task_output(self, run_id: str) -> TaskRunView:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return tasks.show(uow.session, run_id, principal=None, with_output=True)

    def task_history(self, limit: int) -> list[TaskRunView]:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return tasks.history(uow.session, principal=None, limit=limit)

    def tasks_execution_get(self) -> bool:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return tasks.tasks_execution(uow.session)

    def tasks_execution_set(self, enabled: bool) -> bool:
        with self.runtime.unit_of_work() as uow:
            return tasks.set_tasks_execution(uow, enabled, principal=None)

    # connected management groups: local mode acts as an administrator (no principal)

    def mg_connect(self, req: ConnectedGroupCreate) -> ConnectedGroupView:
        return connected.connect(self.runtime, req, principal=None)

    def mg_list(self) -> list[ConnectedGroupView]:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return connected.list_groups(uow.session, principal=None)

    def mg_remove(self, name: str) -> str:
        with self.runtime.unit_of_work() as uow:
            return connected.remove(uow, name, principal=None)

    def alert_list_connected(
        self, include_closed: bool, computer: str | None, source: str | None, limit: int
    ) -> ConnectedAlertsView:
        return connected.alerts(
            self.runtime,
            principal=None,
            include_closed=include_closed,
            computer=computer,
            source=source,
            limit=limit,
        )

    def mg_task_list(self, name: str, target: str | None) -> list[TaskView]:
        return connected.forwarded_tasks(self.runtime, name, target, principal=None)

    def mg_task_start(self, name: str, req: TaskStart) -> TaskRunView:
        return connected.forward_start(self.runtime, name, req, principal=None)

    def mg_task_show(self, name: str, run_id: str, with_output: bool) -> TaskRunView:
        return connected.forwarded_show(
            self.runtime, name, run_id, principal=None, with_output=with_output
        )

    def close(self) -> None:
        self.runtime.close()
