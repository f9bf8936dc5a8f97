"""The baseline of bench/api.py: a minimal FastAPI app served exactly as ``runas server`` is.

Same uvicorn configuration as ``runas.server.serve`` (one process, no access log, no lifespan,
no server header, the socket bound before serving), so the difference between the two is the
work a runas request does, not the server around it.

    .venv/bin/python bench/hello_app.py --port 0      # prints: hello listening on http://…

``GET /hello`` is ``async def`` (FastAPI's canonical hello world, no worker thread);
``GET /hello-sync`` is a plain ``def`` and so runs in the threadpool, as every runas route that
touches the database does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn
from fastapi import FastAPI

from runas.server.serve import bind


def build() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/hello-sync")
    def hello_sync() -> dict[str, str]:
        return {"hello": "world"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = bind(args.host, args.port)
    config = uvicorn.Config(
        build(),
        access_log=False,
        log_config=None,
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
    )
    host, port = sock.getsockname()[:2]
    sys.stdout.write(f"hello listening on http://{host}:{port}\n")
    sys.stdout.flush()
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        sock.close()


if __name__ == "__main__":
    main()
