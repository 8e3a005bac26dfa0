"""Where the MCP tools (app/mcp/tools.py) are served: /mcp in the API (streamable HTTP,
stateless, so any API process answers any call), and `dmrelay mcp` over stdio."""

import json
import os
import sys

from fastapi import FastAPI
from mcp.server.fastmcp import FastMCP
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api_keys.auth import authenticate
from app.core.errors import APIError, error_response, unparsable_body
from app.core.express import read_body, replay
from app.core.settings import Settings
from app.mcp.tools import create_server

PATH = "/mcp"
# Where `dmrelay mcp` takes its API key from.
API_KEY_ENV = "DMRELAY_API_KEY"


class Authenticated:
    """Refuses, in the API's words, what MCP should not read: a request without a valid API
    key (each tool call checks the key again, as its unit of work begins); any method but
    POST (stateless, the server has nothing to stream on a GET, which it would hold open for
    ever, and no session to DELETE); a body the SDK would answer with a 500."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.state = api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            message = f"{scope['method']} is not allowed on {PATH}; it takes POST."
            await error_response(405, message, headers={"Allow": "POST"})(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization", "")
        try:
            async with self.state.sessionmaker() as session:
                await authenticate(self.state.principals, session, authorization)
        except APIError as error:
            answer = error_response(
                error.status_code, error.message, headers={"WWW-Authenticate": "Bearer"}
            )
            await answer(scope, receive, send)
            return
        body = await read_body(receive)  # bounded by the edge's cap
        # The two bodies the MCP SDK cannot refuse itself (it would answer a 500).
        try:
            json.loads(body)
        except (UnicodeDecodeError, RecursionError) as error:
            await error_response(400, unparsable_body(error) or "")(scope, receive, send)
            return
        except ValueError:
            pass  # not JSON: the SDK answers with JSON-RPC's parse error
        await self.app(scope, replay(body, receive), send)


def mount(app: FastAPI) -> FastMCP:
    """Serve the tools at /mcp; the caller runs `session_manager.run()` in the lifespan."""
    server = create_server(app.state)
    app.router.routes.append(
        Route(PATH, Authenticated(server.streamable_http_app(), app), include_in_schema=False)
    )
    return server


async def run_stdio(settings: Settings) -> None:
    """`dmrelay mcp`: the tools over stdio, with the key in DMRELAY_API_KEY, on the API's own
    resources (its lifespan builds them: database, Redis, the key cache)."""
    from app.main import create_app

    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        sys.exit(f"dmrelay mcp: set {API_KEY_ENV} to an API key (dmrelay keys create)")
    app = create_app(settings, express=False)
    async with app.router.lifespan_context(app):
        await create_server(app.state, key).run_stdio_async()
