"""Customer webhooks' jobs: pruning events every endpoint is done with. (Sending is the
worker's `Dispatcher`, started with it: it must not wait behind other jobs.)"""

import logging
from typing import Any

from arq.cron import CronJob
from arq.worker import Function
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.idempotency import EVERY_TEN
from app.core.jobs import JobName, periodic, resource
from app.core.settings import Settings
from app.webhooks import service

log = logging.getLogger(__name__)


async def prune_customer_events(ctx: dict[str, Any]) -> None:
    pruned = await service.prune(
        resource(ctx, "engine", AsyncEngine), resource(ctx, "settings", Settings)
    )
    if pruned:
        log.info("customer events: %d past their retention deleted", pruned)


FUNCTIONS: list[Function] = []
CRON_JOBS: list[CronJob] = [
    periodic(prune_customer_events, JobName.PRUNE_CUSTOMER_EVENTS, minute=EVERY_TEN, second=30),
]
