"""Inbound's jobs: the drain that takes stored webhook deliveries through the pipeline in
batches, and the sweep that picks up webhook deliveries and events whose job was lost."""

from typing import Any

from arq.cron import CronJob
from arq.worker import Function

from app.core.jobs import JobName, resource, sweep, task
from app.inbound.pipeline import InboundPipeline


async def drain_webhooks(ctx: dict[str, Any]) -> None:
    await resource(ctx, "inbound", InboundPipeline).drain()


async def process_webhook(
    ctx: dict[str, Any], webhook_delivery_id: int, traceparent: str | None = None
) -> None:
    """One webhook delivery: the job of versions before the drain, for those still queued.
    `traceparent`: the trace of the POST that stored it, while tracing is on."""
    await resource(ctx, "inbound", InboundPipeline).process_webhook_delivery(
        webhook_delivery_id, traceparent
    )


async def sweep_inbound(ctx: dict[str, Any]) -> None:
    await resource(ctx, "inbound", InboundPipeline).sweep()


FUNCTIONS: list[Function] = [
    task(drain_webhooks, JobName.DRAIN_WEBHOOKS),
    task(process_webhook, JobName.PROCESS_WEBHOOK),
]
CRON_JOBS: list[CronJob] = [
    sweep(sweep_inbound, JobName.SWEEP_WEBHOOK_DELIVERIES, run_at_startup=True),
]
