"""Tasks (``services/tasks.py``): the tasks packs declare, task runs, and the management group's
Tasks Execution setting.

Who may do what is decided in two places on purpose. The route's rule is the coarse right
(``tasks:run`` to start a run, ``settings:write`` to change the setting), checked before anything
is looked up; the service decides the rest — task scopes, object scopes, the Tasks Execution
setting, whether the caller is an administrator — because the local backend (no principal)
must answer exactly the same way."""

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import tasks
from runas.services.audit import AuditAction
from runas.services.tasks import TaskRunView, TaskStart, TaskView

#: the most runs one history request returns
MAX_HISTORY = 1000
#: a task run id is a UUID; anything longer is not one
RUN_ID_MAX = 64
RunId = Annotated[str, Path(min_length=1, max_length=RUN_ID_MAX)]


class TasksExecutionSetting(BaseModel):
    """``GET``/``PUT /settings/tasks-execution``: the words the CLI uses, not a boolean, so
    the document reads the same as ``runas settings get tasks-execution``."""

    tasks_execution: Literal["enabled", "disabled"]


def setting_word(enabled: bool) -> Literal["enabled", "disabled"]:
    return "enabled" if enabled else "disabled"


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["tasks"])
    # Reading is for everyone who may look at objects: a read-only operator sees which tasks
    # exist (and that it may not run them); history and runs are filtered by the service to
    # the caller's own runs unless the caller is an administrator.
    read = require(Permission.OBJECTS_READ)

    @r.get("/tasks", response_model=list[TaskView], responses=errors(404))
    def list_tasks(
        caller: Annotated[Caller, read],
        target: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> list[TaskView]:
        with caller.uow() as uow:
            return tasks.list_tasks(uow.session, target=target, principal=caller.principal)

    @r.post("/task-runs", status_code=201, response_model=TaskRunView, responses=errors(404))
    def start(
        caller: Annotated[Caller, require(Permission.TASKS_RUN, action=AuditAction("task:start"))],
        req: TaskStart,
    ) -> TaskRunView:
        caller.target(req.task)
        with caller.uow() as uow:
            return tasks.start(uow, req, principal=caller.principal)

    @r.get("/task-runs", response_model=list[TaskRunView], responses=errors())
    def history(
        caller: Annotated[Caller, read],
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 50,
    ) -> list[TaskRunView]:
        with caller.uow() as uow:
            return tasks.history(uow.session, principal=caller.principal, limit=limit)

    @r.get("/task-runs/{run_id}", response_model=TaskRunView, responses=errors(404))
    def show(caller: Annotated[Caller, read], run_id: RunId) -> TaskRunView:
        with caller.uow() as uow:
            return tasks.show(uow.session, run_id, principal=caller.principal)

    @r.get("/task-runs/{run_id}/output", response_model=TaskRunView, responses=errors(404))
    def output(caller: Annotated[Caller, read], run_id: RunId) -> TaskRunView:
        with caller.uow() as uow:
            return tasks.show(uow.session, run_id, principal=caller.principal, with_output=True)

    @r.get("/settings/tasks-execution", response_model=TasksExecutionSetting, responses=errors())
    def get_tasks_execution(caller: Annotated[Caller, read]) -> TasksExecutionSetting:
        # Operators need to know whether they must bring credentials before they try.
        with caller.uow() as uow:
            return TasksExecutionSetting(
                tasks_execution=setting_word(tasks.tasks_execution(uow.session))
            )

    @r.put("/settings/tasks-execution", response_model=TasksExecutionSetting, responses=errors())
    def set_tasks_execution(
        caller: Annotated[
            Caller,
            require(Permission.SETTINGS_WRITE, action=AuditAction("settings:tasks-execution")),
        ],
        req: TasksExecutionSetting,
    ) -> TasksExecutionSetting:
        caller.target("tasks-execution")
        with caller.uow() as uow:
            enabled = tasks.set_tasks_execution(
                uow, req.tasks_execution == "enabled", principal=caller.principal
            )
        return TasksExecutionSetting(tasks_execution=setting_word(enabled))

    return r
