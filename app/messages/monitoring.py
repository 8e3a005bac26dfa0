"""The send backlog, measured when Prometheus scrapes the API (GET /metrics): what is waiting
in PostgreSQL and in the job queue. Asked of the API rather than the worker, so that it is
there when no worker is."""

import asyncio
import logging
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import State

from app.messages import repository

log = logging.getLogger(__name__)


class BacklogCollector(Collector):
    def __init__(
        self, backlog: repository.Backlog | None, queued: int | None, due: int | None
    ) -> None:
        self.backlog = backlog
        self.queued = queued
        self.due = due

    def collect(self) -> Iterator[Metric]:
        if self.backlog is not None:
            messages = GaugeMetricFamily(
                "dmrelay_messages_undelivered",
                "Outbound messages not delivered yet, by status",
                labels=["status"],
            )
            for status, count in sorted(self.backlog.by_status.items()):
                messages.add_metric([status], count)
            yield messages
            yield GaugeMetricFamily(
                "dmrelay_oldest_undelivered_message_age_seconds",
                "Age of the oldest outbound message not delivered yet (0 when there is none)",
                value=self.backlog.oldest_seconds or 0.0,
            )
        if self.queued is not None and self.due is not None:
            yield GaugeMetricFamily(
                "dmrelay_queue_jobs", "Jobs in the Redis queue, due now or later", value=self.queued
            )
            yield GaugeMetricFamily(
                "dmrelay_queue_jobs_due", "Jobs in the Redis queue due now", value=self.due
            )
        yield GaugeMetricFamily(
            "dmrelay_backlog_up",
            "1 when the backlog figures could be read (PostgreSQL and Redis answered)",
            value=float(self.backlog is not None and self.queued is not None),
        )


async def backlog_collector(state: State, timeout: float) -> Collector:
    """The backlog's gauges; a dependency that does not answer within `timeout` leaves its
    gauges out (and dmrelay_backlog_up at 0), rather than failing the scrape."""

    async def undelivered() -> repository.Backlog | None:
        try:
            async with asyncio.timeout(timeout):
                return await repository.raw_backlog(state.driver_pool)
        except Exception as error:  # noqa: BLE001 - a metric, not a request
            log.warning("metrics: the message backlog could not be read (%r)", error)
            return None

    async def queue() -> tuple[int | None, int | None]:
        pool = state.arq_pool
        try:
            async with asyncio.timeout(timeout):
                name = pool.default_queue_name
                queued = await pool.zcard(name)
                due = await pool.zcount(name, "-inf", time.time() * 1000)
                return int(queued), int(due)
        except Exception as error:  # noqa: BLE001
            log.warning("metrics: the job queue could not be read (%r)", error)
            return None, None

    backlog, (queued, due) = await asyncio.gather(undelivered(), queue())
    return BacklogCollector(backlog, queued, due)
