from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api_keys.service import PrincipalCache
from app.chats.router import router as chats_router
from app.core import errors
from app.core.db import create_driver_pool, create_engine, create_sessionmaker
from app.core.express import ExpressLane
from app.core.idempotency import Replay
from app.core.queue import create_arq_pool
from app.core.request_id import RequestIdMiddleware
from app.core.settings import Settings, get_settings
from app.inbound import receipt
from app.inbound.router import router as inbound_router
from app.media.router import router as media_router
from app.messages import express as messages_express
from app.messages.router import router as messages_router
from app.meta.graph import GraphClient, create_session
from app.participants.router import router as participants_router
from app.profiles.router import router as profiles_router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.arq_pool = await create_arq_pool(settings)
        app.state.express_pool = await create_driver_pool(settings)
        # Graph reads made while answering a request (participant profiles).
        http = create_session(timeout_seconds=10.0)
        app.state.graph = GraphClient(settings, http)
        try:
            yield
        finally:
            await http.close()
            await app.state.arq_pool.aclose()
            await app.state.express_pool.close()
            await engine.dispose()

    app = FastAPI(
        title="dmrelay",
        summary="Instagram direct messages over Meta's Graph API, Postproxy-compatible",
        lifespan=lifespan,
        responses=errors.RESPONSES,
    )
    app.state.settings = settings
    app.state.principals = PrincipalCache()
    errors.install(app)
    app.add_exception_handler(Replay, lambda request, replay: replay.response())
    # Inside the request id middleware, so its answers carry one too.
    app.add_middleware(ExpressLane, routes=[messages_express.ROUTE, receipt.ROUTE])
    app.add_middleware(RequestIdMiddleware)

    for router in (profiles_router, chats_router, messages_router, participants_router):
        app.include_router(router, prefix="/api")
    app.include_router(inbound_router)
    app.include_router(media_router)

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
