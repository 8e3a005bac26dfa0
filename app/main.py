import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from app.actions.router import router as actions_router
from app.api_keys.router import router as api_keys_router
from app.api_keys.service import PrincipalCache
from app.chat_syncs.router import router as chat_syncs_router
from app.chats.router import router as chats_router
from app.comments.router import router as comments_router
from app.connections.router import callback_router
from app.connections.router import router as connections_router
from app.core import errors, heap, openapi, tracing
from app.core.addresses import Resolver, resolve
from app.core.availability import RETRY_AFTER_SECONDS, readiness
from app.core.db import close_driver_pool, create_driver_pool, create_engine, create_sessionmaker
from app.core.edge import BodyCaps, EdgeGuard
from app.core.express import ExpressLane, Lane, Route
from app.core.front import ExpressFront, FrontedAPI
from app.core.idempotency import Replay
from app.core.metrics import HttpMetrics, exposition
from app.core.queue import arq_pool
from app.core.request_id import RequestIdMiddleware
from app.core.settings import Settings, get_settings
from app.ice_breakers.router import router as ice_breakers_router
from app.inbound import receipt
from app.inbound.router import router as inbound_router
from app.mcp import server as mcp_server
from app.media import download
from app.media.outbound import MediaTools
from app.media.router import router as media_router
from app.media.storage import create_store
from app.messages import express as messages_express
from app.messages.monitoring import backlog_collector
from app.messages.router import router as messages_router
from app.messages.throttle import ProfileThrottle
from app.meta.graph import GraphClient, create_session
from app.participants.router import router as participants_router
from app.profiles.router import groups_router
from app.profiles.router import router as profiles_router
from app.webhooks.router import router as webhooks_router


def create_app(
    settings: Settings | None = None, *, express: bool = True, resolver: Resolver = resolve
) -> FrontedAPI:
    """The API. `express=False` leaves the express lane out, so that tests can compare its
    answers with the FastAPI routes' alone (tests/test_express.py). `resolver` resolves
    every host name the API checks before it connects (sends' media URLs, customer webhook
    URLs): the system's, or one of the tests' that looks nothing up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # On only if OTel's environment variables ask for it (app/core/tracing.py).
        tracer_provider = tracing.start("dmrelay-api")
        engine = create_engine(settings)
        app.state.sessionmaker = create_sessionmaker(engine)
        # Neither pool connects before its first use: the API starts while PostgreSQL or
        # Redis is down, and says so on GET /readyz.
        app.state.arq_pool = arq_pool(settings)
        app.state.driver_pool = await create_driver_pool(settings)
        # Graph reads made while answering a request (participant profiles).
        http = create_session(timeout_seconds=10.0)
        app.state.graph = GraphClient(settings, http)
        # Sender actions (app/actions) book their slots under the profile's rate limit.
        app.state.throttle = ProfileThrottle(app.state.arq_pool, settings)
        principals: PrincipalCache = app.state.principals
        watcher = asyncio.create_task(principals.watch(app.state.arq_pool, app.state.sessionmaker))
        try:
            # The start-up heap out of the collector's walks; its pauses measured
            # (app/core/heap.py).
            with heap.pauses_measured(), heap.frozen():
                async with app.state.mcp.session_manager.run():
                    yield
        finally:
            principals.stop()
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher
            await http.close()
            await app.state.media.http.aclose()
            await app.state.arq_pool.aclose()
            await close_driver_pool(app.state.driver_pool)
            await engine.dispose()
            await tracing.stop(tracer_provider)

    app = FrontedAPI(
        title="dmrelay",
        summary="Instagram direct messages over Meta's Graph API, Postproxy-compatible",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.resolver = resolver
    app.state.principals = PrincipalCache()
    # Checking sends' media: probes of their URLs, and the store their files go to.
    app.state.media = MediaTools(
        download.create_client(), settings, create_store(settings), resolver
    )
    errors.install(app)
    app.add_exception_handler(Replay, lambda request, replay: replay.response())
    caps = BodyCaps(
        settings.max_body_bytes,
        path_limits={receipt.PATH: settings.webhook_max_body_bytes},
        upload_limits=[(messages_express.ROUTE.path, settings.media_upload_max_bytes)],
    )
    # The lane inside the request id middleware, so that its answers carry one too; the edge
    # in front of it, so that both lanes share its checks. And before all of them, the front,
    # which serves the lane's plain requests the same way, inline (app/core/front.py).
    if express:
        # Requests the lane answered itself, per route (app/core/express.py).
        app.state.express_answered = Counter[Route]()
        lane = Lane([messages_express.ROUTE, receipt.ROUTE], app.state.express_answered)
        app.add_middleware(ExpressLane, lane=lane)
        app.front = ExpressFront(lane, caps)
    app.add_middleware(EdgeGuard, caps=caps)
    app.add_middleware(RequestIdMiddleware)
    # A server span per request while tracing is on (a check of a global while it is off);
    # outside the request id, so that its 500s and 503s are traced with their id.
    app.add_middleware(tracing.HttpTracing)
    # Outermost: counts every answer, the middlewares' own 503s and 500s included.
    app.add_middleware(HttpMetrics)

    for router in (
        profiles_router,
        groups_router,
        connections_router,
        api_keys_router,
        chats_router,
        messages_router,
        participants_router,
        chat_syncs_router,
        webhooks_router,
        actions_router,
        ice_breakers_router,
        comments_router,
    ):
        app.include_router(router, prefix="/api")
    app.include_router(inbound_router)
    app.include_router(callback_router)
    app.include_router(media_router)
    openapi.install(app)
    # The MCP tools for agents (app/mcp), at /mcp.
    app.state.mcp = mcp_server.mount(app)

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, str]:
        """Liveness: the process answers; asks nothing of PostgreSQL or Redis."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def ready() -> JSONResponse:
        """Readiness: PostgreSQL and Redis both answer within READINESS_TIMEOUT_SECONDS."""
        is_ready, body = await readiness(app.state, settings.readiness_timeout_seconds)
        if is_ready:
            return JSONResponse(body)
        return JSONResponse(body, 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics (app/core/metrics.py), with the send backlog read now."""
        backlog = await backlog_collector(app.state, settings.readiness_timeout_seconds)
        body, content_type = exposition(backlog)
        return Response(body, media_type=content_type)

    return app
