"""Probes: the ways an agent runs a workflow and turns what it did into a typed result.

:mod:`runas.agent.probes.command` runs a program with a credential hand-off and maps its exit
code or property bag to a health state.
"""
