"""The pack keys of tasks: ``parameters`` and ``timeout`` (refused on other kinds), each refusal
located at its line; the values survive storage (convert)."""

from __future__ import annotations

from textwrap import dedent

import pytest

from runas.domain.model import TaskParameter, WorkflowKind
from runas.errors import PackError
from runas.packs import load_pack_text
from runas.services import convert

#: four lines; the snippets below start on line 5
HEADER = "pack:\n  id: T\n  version: 1.0.0\n  display_name: T\n"
TASK = "workflows:\n  - id: T.W\n    kind: task\n    target: System.Computer\n"
PROBE = "    probe: {type: command, config: {program: x, args: ['{mode}']}}\n"


def refused(body: str) -> str:
    with pytest.raises(PackError) as info:
        load_pack_text(HEADER + body, "t.yaml")
    return str(info.value)


def test_a_task_declares_parameters_and_a_timeout() -> None:
    text = HEADER + dedent(
        """\
        workflows:
          - id: T.W
            kind: task
            target: System.Computer
            timeout: 90s
            parameters:
              mode: {default: graceful, overridable: true, description: how to stop}
              retries: {default: 3}
              ratio: {default: 0.5}
              force: {default: false, overridable: true}
              when: {default: 2024-01-01}
              free:
            probe: {type: command, config: {program: x, args: ["{mode}"]}}
        """
    )
    (task,) = load_pack_text(text, "t.yaml").pack.workflows
    assert task.kind is WorkflowKind.TASK
    assert task.timeout_seconds == 90
    assert task.parameters == (
        TaskParameter("mode", "graceful", True, "how to stop"),
        TaskParameter("retries", 3),
        TaskParameter("ratio", 0.5),
        TaskParameter("force", False, True),
        TaskParameter("when", "2024-01-01"),  # as written, not a date
        TaskParameter("free"),
    )
    stored = convert.workflow_def(convert.workflow_row(task, "T"))
    assert stored.parameters == task.parameters
    assert stored.timeout_seconds == 90


def test_a_task_without_the_keys_gets_the_defaults_and_other_kinds_none() -> None:
    text = HEADER + TASK + PROBE
    (task,) = load_pack_text(text, "t.yaml").pack.workflows
    assert (task.parameters, task.timeout_seconds) == ((), 300)
    monitor = HEADER + dedent(
        """\
        workflows:
          - id: T.M
            kind: monitor
            target: System.Computer
            schedule: {interval: 1m}
            probe: {type: command}
        """
    )
    (m,) = load_pack_text(monitor, "t.yaml").pack.workflows
    assert (m.parameters, m.timeout_seconds) == ((), None)
    assert convert.workflow_row(m, "T").parameters == {}


@pytest.mark.parametrize("kind", ["monitor", "rule", "discovery"])
def test_only_tasks_have_parameters_or_a_timeout(kind: str) -> None:
    base = (
        f"workflows:\n  - id: T.W\n    kind: {kind}\n    target: System.Computer\n"
        "    schedule: {interval: 1m}\n    probe: {type: command}\n"
    )
    assert refused(base + "    parameters: {a: {default: 1}}\n") == (
        f"t.yaml:11: {kind} T.W is not a task: only tasks have 'parameters'"
    )
    assert refused(base + "    timeout: 30s\n") == (
        f"t.yaml:11: {kind} T.W is not a task: only tasks have 'timeout' (in its schedule)"
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            "    parameters: {password: {default: x}}\n",
            "9: parameter 'password' of task T.W looks like a credential",
            id="secret-name",
        ),
        pytest.param(
            "    parameters: {api_key: {}}\n",
            "9: parameter 'api_key' of task T.W looks like a credential",
            id="secret-name-2",
        ),
        pytest.param(
            "    parameters: {db-name: {default: x}}\n",
            "9: a parameter name of task T.W 'db-name' is not a valid name",
            id="not-a-name",
        ),
        pytest.param(
            "    parameters: [mode]\n",
            "9: 'parameters' of task T.W must be a mapping",
            id="not-a-mapping",
        ),
        pytest.param(
            "    parameters:\n      mode: {default: [a, b]}\n",
            "10: default of parameter 'mode' of task T.W must be text, a number or true/false",
            id="list-default",
        ),
        pytest.param(
            "    parameters:\n      mode: {overrideable: true}\n",
            "10: unknown key 'overrideable' in parameter 'mode' of task T.W (did you mean "
            "'overridable'?)",
            id="typo",
        ),
        pytest.param(
            "    parameters:\n      mode: {overridable: yes please}\n",
            "10: 'overridable' of parameter 'mode' of task T.W must be true or false",
            id="not-a-boolean",
        ),
        pytest.param(
            "    parameters:\n      mode: graceful\n",
            "10: parameter 'mode' of task T.W must be a mapping",
            id="bare-default",
        ),
        pytest.param(
            "    timeout: 0s\n", "9: timeout of task T.W must be between 1s and 1d", id="zero"
        ),
        pytest.param(
            "    timeout: 2d\n", "9: timeout of task T.W must be between 1s and 1d", id="long"
        ),
        pytest.param(
            "    timeout: soon\n",
            "9: timeout of task T.W 'soon' is not a duration",
            id="not-a-duration",
        ),
    ],
)
def test_task_keys_are_refused_at_their_line(fields: str, expected: str) -> None:
    assert refused(TASK + fields + PROBE).startswith(f"t.yaml:{expected}")
