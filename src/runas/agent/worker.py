"""One run of one workflow for one object: credential document, probe, scrubbed result.

What a run does (``docs/agents.md``, domain.md §6 and §11):

* **Credential.** A workflow with an ``account`` gets that account's credential document
  (:func:`runas.agent.handoff.credential_document`), built from the account's public fields in
  the configuration and its secret fields from the opened bundle in memory. If the bundle
  does not hold that account version, the workflow does not run: its result is ``unknown``
  and says so (the server sees it, and Run As health raises "credentials not found").
  A workflow without an account gets the ``none`` document and runs as the **action user**.
* **Identity.** When the agent runs as root, a workflow without an account runs as the action
  user (``runas-action`` unless ``action_user`` names another), created on first need as a
  system user with no home and no shell. Not as root, the agent cannot switch users and runs
  such workflows as itself. Workflows *with* an account run as the agent's own user, as the
  brief for this module specifies (the program uses the handed-off credential to log on to
  its target).
* **Probe.** ``command`` with ``config = {"program": ..., "args": [...]}``; ``{name}``
  placeholders are filled from the object's properties (scalars only, rendered as text).
  Properties are non-secret by the class model; :func:`run_command` refuses any argument that
  would still carry a secret the agent holds.
* **Scrubbing.** Every text of the result is scrubbed of *every* secret the agent holds (not
  only the run's own), and ``scrubbed`` counts the hits.

The result is the dict of the report contract; nothing in it, nor in any exception or log
line of this module, holds a secret value.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from runas.agent.config import Secrets, WorkflowEntry
from runas.agent.handoff import NO_CREDENTIAL, CredentialDocument, HandOff, credential_document
from runas.agent.probes.base import ProbeContext, parameters_of, probe_for, render_config
from runas.agent.probes.result import ProbeResult, ProbeState
from runas.agent.scheduler import UNAVAILABLE_MESSAGE
from runas.agent.scrub import Scrubber
from runas.agent.settings import DEFAULT_ACTION_USER
from runas.errors import ConfigurationError, InvalidInput, RunAsError

_log = logging.getLogger("runas.agent.worker")

#: where useradd lives on every Linux distribution the agent supports
USERADD = "/usr/sbin/useradd"
NOLOGIN = "/usr/sbin/nologin"


def resolve_action_user(name: str | None, *, create: bool = True) -> tuple[int, int] | None:
    """(uid, gid) workflows without an account run as; None when the agent is not root
    (they then run as the agent's own user). Creates the user when missing and ``create``."""
    if os.geteuid() != 0:
        return None
    user = name or DEFAULT_ACTION_USER
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        if not create:
            raise ConfigurationError(f"action user {user!r} does not exist") from None
        _create_user(user)
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ConfigurationError(f"action user {user!r} could not be created") from None
    if entry.pw_uid == 0:
        raise ConfigurationError(f"action user {user!r} is root; it must be unprivileged")
    return entry.pw_uid, entry.pw_gid


def _create_user(user: str) -> None:
    argv = [USERADD, "--system", "--no-create-home", "--shell", NOLOGIN, user]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        raise ConfigurationError(
            f"cannot create action user {user!r}: {type(err).__name__}"
        ) from None
    if done.returncode not in (0, 9):  # 9: exists (another agent process made it meanwhile)
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ConfigurationError(
            f"cannot create action user {user!r}: {reason[0] if reason else done.returncode}"
        )
    _log.info("agent.action_user_created", extra={"fields": {"user": user}})


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _unknown(message: str) -> ProbeResult:
    return ProbeResult(ProbeState.UNKNOWN, message, None)


class Worker:
    """Runs entries; ``secrets`` returns what the agent holds right now (read per run, so a
    new configuration applies to the next run, and an erased one to every later run)."""

    def __init__(
        self,
        agent_id: str,
        *,
        secrets: Callable[[], Secrets],
        handoff: HandOff = HandOff.STDIN,
        action_user: tuple[int, int] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        kill_grace_s: float = 2.0,
        known_hosts: Callable[[], tuple[str, ...]] = tuple,
    ) -> None:
        self._agent_id = agent_id
        self._secrets = secrets
        self._handoff = handoff
        self._action_user = action_user
        self._clock = clock
        self._kill_grace_s = kill_grace_s
        self._known_hosts = known_hosts

    def __repr__(self) -> str:
        return f"Worker(agent={self._agent_id!r}, handoff={self._handoff.value})"

    def _document(self, entry: WorkflowEntry, secrets: Secrets) -> CredentialDocument | str:
        """The credential document, or why there is none (a message, no secret in it)."""
        account = entry.account
        if account is None:
            return NO_CREDENTIAL
        held = secrets.get(account.id, account.secret_version)
        if held is None:
            return (
                f"the credentials of account {account.name!r} (version "
                f"{account.secret_version}) are not in this agent's bundle"
            )
        try:
            return credential_document(
                account.type,
                dict(account.public),
                dict(held.fields),
                account_name=account.name,
                account_id=account.id,
                secret_version=account.secret_version,
            )
        except InvalidInput as err:
            return f"account {account.name!r}: {err}"

    def run(self, entry: WorkflowEntry) -> dict[str, Any]:
        """Run ``entry`` once and return its result (the report contract's shape)."""
        started, probe = self.execute(entry)
        return self.result(entry, started, probe)

    def execute(
        self, entry: WorkflowEntry, *, document: CredentialDocument | None = None
    ) -> tuple[datetime, ProbeResult]:
        """Run ``entry`` once: (when it started, what the probe said, scrubbed by the probe).

        ``document`` replaces the entry's account (a task run with credentials typed in for
        it, ``runas.agent.tasks``); its secrets are scrubbed along with the agent's own.
        """
        started = self._clock()
        secrets = self._secrets()
        scrubber = secrets.scrubber()
        probe_impl = probe_for(entry.probe.type)
        if probe_impl is None:
            return started, _unknown(UNAVAILABLE_MESSAGE)
        if document is None:
            found = self._document(entry, secrets)
            if isinstance(found, str):
                return started, _unknown(found)
            document = found
        elif document.secret_values():
            scrubber = Scrubber([*secrets.values(), *document.secret_values()])
        try:
            context = ProbeContext(
                workflow=entry.workflow,
                kind=entry.kind,
                object=entry.object,
                computer=self._agent_id,
                config=render_config(entry.probe.config, parameters_of(entry.properties)),
                raw_config=entry.probe.config,
                properties=entry.properties,
                document=document,
                timeout_s=entry.schedule.timeout_s,
                scrubber=scrubber,
                handoff=self._handoff,
                action_user=self._action_user,
                kill_grace_s=self._kill_grace_s,
                known_hosts=self._known_hosts(),
            )
            probe = probe_impl.run(context)
        except InvalidInput as err:
            probe = _unknown(f"the workflow cannot run: {err}")
        except RunAsError as err:  # the credential file could not be removed
            _log.error(
                "agent.handoff_cleanup_failed",
                extra={"fields": {"workflow": entry.workflow, "error": str(err)}},
            )
            probe = _unknown(str(err))
        except Exception as err:  # a probe bug must not stop the agent or leak a traceback
            _log.error(
                "agent.probe_failed",
                extra={"fields": {"workflow": entry.workflow, "error": type(err).__name__}},
            )
            probe = _unknown(f"the {entry.probe.type} probe failed ({type(err).__name__})")
        return started, probe

    def result(
        self,
        entry: WorkflowEntry,
        started: datetime,
        probe: ProbeResult,
        *,
        extra_secrets: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The report's result dict; every text scrubbed again with everything held now (and
        ``extra_secrets``: credentials supplied for a task run, which the bundle does not hold)."""
        secrets = self._secrets()
        scrubber = (
            Scrubber([*secrets.values(), *extra_secrets]) if extra_secrets else secrets.scrubber()
        )
        message, hits = scrubber.scrub(probe.message)
        events, event_hits = scrubber.scrub_obj([e.to_dict() for e in probe.events])
        auth = probe.auth_failure.to_dict() if probe.auth_failure else None
        auth, auth_hits = scrubber.scrub_obj(auth)
        perf, perf_hits = scrubber.scrub_obj(dict(probe.perf))
        found = None if probe.discovery is None else [dict(o) for o in probe.discovery]
        found, found_hits = scrubber.scrub_obj(found)
        account = entry.account
        return {
            "workflow": entry.workflow,
            "object": entry.object,
            "started_at": _iso(started),
            "duration_s": round(probe.duration_s, 6),
            "state": probe.state.value,
            "message": message,
            "exit_code": probe.exit_code,
            "timed_out": probe.timed_out,
            "perf": {k: v for k, v in perf.items() if isinstance(v, int | float)},
            "events": events,
            "account_id": account.id if account else None,
            "secret_version": account.secret_version if account else None,
            "auth_failure": auth,
            "scrubbed": probe.scrubbed + hits + event_hits + auth_hits + perf_hits + found_hits,
            "discovery": found if entry.kind == "discovery" else None,
            "host_key": None if probe.host_key is None else dict(probe.host_key),
        }


__all__ = ["Worker", "resolve_action_user"]
