"""Inbound's jobs: a webhook delivery split and applied, and the sweep that picks up
deliveries and events whose job was lost."""

from typing import Any

from arq import cron, func
from arq.cron import CronJob
from arq.worker import Function

from app.core.jobs import JobName, every
from app.core.settings import get_settings
from app.inbound.processing import InboundProcessor


def _processor(ctx: dict[str, Any]) -> InboundProcessor:
    processor: InboundProcessor = ctx["inbound"]
    return processor


async def process_webhook(ctx: dict[str, Any], delivery_id: int) -> None:
    await _processor(ctx).process_delivery(delivery_id)


async def sweep_inbound(ctx: dict[str, Any]) -> None:
    await _processor(ctx).sweep()


FUNCTIONS: list[Function] = [
    func(process_webhook, name=JobName.PROCESS_WEBHOOK.value, keep_result=0, max_tries=1),
]
CRON_JOBS: list[CronJob] = [
    cron(
        sweep_inbound,
        name=f"cron:{JobName.SWEEP_WEBHOOK_DELIVERIES.value}",
        second=every(get_settings().sweep_interval_seconds),
        run_at_startup=True,
    ),
]
