"""For tests of the agent app in-process: the client certificate where the TLS layer puts it."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from runas.server.agent_listener import TLS_EXTENSION

#: the request header naming which agent's certificate the request presents
CERT_HEADER = "x-test-client-cert"


class WithClientCertificate:
    """Puts the certificate named by a test header where the TLS layer puts the real one."""

    def __init__(self, app: ASGIApp, certificates: dict[str, bytes]) -> None:
        self.app = app
        self.certificates = certificates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            name = headers.get(CERT_HEADER.encode())
            if name is not None:
                cert = self.certificates[name.decode()]
                scope = {**scope, "extensions": {TLS_EXTENSION: {"client_cert_der": cert}}}
        await self.app(scope, receive, send)
