"""Receiving Meta's webhook POSTs: verify, store, acknowledge.

Meta wants the 200 within seconds and retries otherwise, so the ack only stores the
webhook delivery as received (one INSERT, committed on its own) and signals the drain that
takes stored deliveries through the pipeline in batches (pipeline.py), enqueueing it if none
is under way (one Redis call).
"""

import logging
import re

import asyncpg
from arq.connections import ArqRedis
from asyncpg.pool import PoolConnectionProxy

from app.core import tracing
from app.core.db import acquire
from app.core.express import Answer, ExpressRequest, Route
from app.core.jobs import signal
from app.core.metrics import META_WEBHOOKS
from app.core.settings import Settings
from app.inbound import repository
from app.inbound.pipeline import DRAIN_SIGNAL, drain_job_id
from app.inbound.signature import SIGNATURE_HEADER, signature_is_valid

log = logging.getLogger(__name__)

RECEIVED = b'{"received":true}'


META_WEBHOOKS_STORED = META_WEBHOOKS.labels("stored")
META_WEBHOOKS_REFUSED = META_WEBHOOKS.labels("refused")


def is_signed(settings: Settings, body: bytes, signature: str | None) -> bool:
    secrets = [s for s in (settings.meta_app_secret, settings.instagram_app_secret) if s]
    if not secrets:
        log.error(
            "a Meta webhook arrived but neither META_APP_SECRET nor INSTAGRAM_APP_SECRET is set; "
            "it cannot be verified"
        )
    return signature_is_valid(secrets, body, signature)


async def store(
    connection: asyncpg.Connection | PoolConnectionProxy, redis: ArqRedis, body: bytes
) -> None:
    """Keep a verified webhook delivery, then have a worker apply it: the drain of stored
    deliveries (pipeline.py) is signalled, and enqueued if none is under way."""
    # Kept even if it is not JSON (the worker reports it); PostgreSQL text cannot hold NUL.
    text = body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    # While tracing, the delivery keeps this request's trace, which the batch applying it
    # links to (app/inbound/pipeline.py).
    stored = await repository.store_webhook_delivery(connection, text, tracing.traceparent())
    await signal(redis, DRAIN_SIGNAL, drain_job_id(stored))
    META_WEBHOOKS_STORED.inc()


async def receive(request: ExpressRequest) -> Answer | None:
    """The express lane's ack (app/core/express.py); a bad signature is FastAPI's to refuse."""
    signature = request.headers.get(SIGNATURE_HEADER.lower().encode(), b"").decode("latin-1")
    if not is_signed(request.state.settings, request.body, signature):
        return None
    async with acquire(
        request.state.driver_pool, request.state.settings.database_pool_timeout_seconds
    ) as connection:
        await store(connection, request.state.arq_pool, request.body)
    return Answer(200, RECEIVED)


PATH = "/webhooks/instagram"
ROUTE = Route("POST", re.compile(re.escape(PATH)), receive, PATH)
