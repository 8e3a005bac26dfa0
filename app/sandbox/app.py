"""A fake of Meta's Graph API (Instagram messaging), answering as Meta documents it.

Graph calls (app.sandbox.graph) are taken by GraphCalls before FastAPI routes anything;
`/_sandbox/*` (app.sandbox.control) is the unauthenticated control surface.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.settings import Settings, get_settings
from app.sandbox.control import ControlError, control, control_error
from app.sandbox.graph import graph_call
from app.sandbox.state import Sandbox


class GraphCalls:
    """Every path outside /_sandbox, straight to the Graph handler: the sandbox shares the
    machine with what it stands in for Meta to (the bench runs both on two cores), and
    through FastAPI's routing and dependencies each Send API call cost it more CPU than
    dmrelay's worker spent delivering the message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        sandbox: Sandbox = scope["app"].state.sandbox
        response = await graph_call(scope["path"].lstrip("/"), Request(scope, receive), sandbox)
        await response(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    sandbox = Sandbox(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await sandbox.aclose()

    app = FastAPI(title="dmrelay sandbox Graph API", lifespan=lifespan)
    app.state.sandbox = sandbox
    app.exception_handler(ControlError)(control_error)
    app.add_middleware(GraphCalls)
    app.include_router(control)
    return app
