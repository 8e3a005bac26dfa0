"""A fake of Meta's Graph API (Instagram messaging), answering as Meta documents it.

Graph calls (app.sandbox.graph) go through one catch-all route; `/_sandbox/*`
(app.sandbox.control) is the unauthenticated control surface.
"""

from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.core.settings import Settings, get_settings
from app.sandbox.control import ControlError, control, control_error
from app.sandbox.graph import graph
from app.sandbox.state import Sandbox


def create_app(settings: Settings | None = None) -> FastAPI:
    sandbox = Sandbox(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await sandbox.aclose()

    app = FastAPI(title="dmrelay sandbox Graph API", lifespan=lifespan)
    app.state.sandbox = sandbox
    app.add_exception_handler(ControlError, control_error)
    app.include_router(control)
    app.include_router(graph)  # last: its catch-all route must not shadow /_sandbox
    return app
