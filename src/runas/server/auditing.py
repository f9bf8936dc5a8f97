"""Audit records of refused or failed changes made through the API.

A change that succeeds is recorded by its service, in its own transaction. One that fails
(401, 403, invalid input, conflict, 500…) rolled that transaction back, so the server records
the attempt here, in a transaction of its own: who tried what, on which target, from where,
and the error code — never the request body.
"""

from __future__ import annotations

import logging

from fastapi import Request

from runas.server.security import ANONYMOUS, client_source, rules_of, runtime_of
from runas.services import audit

LOGGER = "runas.server"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def failed(request: Request, code: str) -> None:
    """Record a failed change, if this request was one (a mutating method on a route whose
    rule names an audit action). Never raises: the client gets its error either way."""
    if request.method in _READS:
        return
    route = request.scope.get("route")
    if route is None:
        return
    actions = [rule.action for rule in rules_of(route) if rule.action]
    if not actions:
        return
    state = request.state
    target = getattr(state, "audit_target", None)
    if target is None:
        target = "/".join(str(v) for v in request.path_params.values())
    try:
        audit.record_failure(
            runtime_of(request),
            actor=getattr(state, "actor", ANONYMOUS),
            source=client_source(request),
            action=actions[0],
            target=target,
            code=code,
        )
    except Exception:
        # The refusal itself must still reach the client; the log says the record is missing.
        logging.getLogger(LOGGER).error(
            "audit record of a failed change not written",
            exc_info=True,
            extra={"fields": {"action": actions[0], "code": code}},
        )
