"""The send path's jobs: a chat's messages delivered to Meta in order, and the sweep that
re-enqueues chats whose job was lost."""

from typing import Any

from arq.cron import CronJob
from arq.worker import Function

from app.core.jobs import JobName, resource, sweep, task
from app.messages.delivery import Delivery


async def deliver_chat(ctx: dict[str, Any], chat_id: int) -> None:
    await resource(ctx, "delivery", Delivery).deliver_chat(chat_id)


async def sweep_sends(ctx: dict[str, Any]) -> None:
    await resource(ctx, "delivery", Delivery).sweep()


FUNCTIONS: list[Function] = [
    task(deliver_chat, JobName.DELIVER_CHAT),
]
CRON_JOBS: list[CronJob] = [
    sweep(sweep_sends, JobName.SWEEP_SENDS, run_at_startup=True),
]
