"""The agent side of Run As: what happens to a credential on the computer that runs a workflow.

Building blocks, each usable and testable on its own:

* :mod:`runas.agent.handoff` — the typed credential document and how it reaches a workflow
  process (stdin, or a 0600 file removed after use), never a command line or an environment
  variable;
* :mod:`runas.agent.probes` — the probes that run workflows, starting with ``command``;
* :mod:`runas.agent.scrub` — every output scrubbed of the secrets the agent holds before it leaves.

The agent process (``runas agent run``, contract in ``docs/agents.md``) is built from them:
:mod:`~runas.agent.settings` (``agent.toml`` + ``RUNAS_AGENT_*``), :mod:`~runas.agent.identity`
(data directory, keys, certificate), :mod:`~runas.agent.client` (mTLS to the management servers,
failover), :mod:`~runas.agent.config` (typed configuration, sealed bundle, cache),
:mod:`~runas.agent.scheduler` and :mod:`~runas.agent.worker` (runs), :mod:`~runas.agent.tasks`
(tasks operators start), :mod:`~runas.agent.main` (the loop) and :mod:`~runas.agent.cli`
(the entry point).

The Run As health those probes feed is pure domain logic, in :mod:`runas.domain.health`.
"""
