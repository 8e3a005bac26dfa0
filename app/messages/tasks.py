"""The send path's jobs: a chat's messages delivered to Meta in order, and the sweep that
re-enqueues chats whose job was lost."""

from typing import Any

from arq import cron, func
from arq.cron import CronJob
from arq.worker import Function

from app.core.jobs import JobName, every
from app.core.settings import get_settings
from app.messages.delivery import Delivery


def _delivery(ctx: dict[str, Any]) -> Delivery:
    delivery: Delivery = ctx["delivery"]
    return delivery


async def deliver_chat(ctx: dict[str, Any], chat_id: int) -> None:
    await _delivery(ctx).deliver_chat(chat_id)


async def sweep_sends(ctx: dict[str, Any]) -> None:
    await _delivery(ctx).sweep()


# keep_result=0: a finished job frees its id at once (chats reuse theirs, see request_delivery).
FUNCTIONS: list[Function] = [
    func(deliver_chat, name=JobName.DELIVER_CHAT.value, keep_result=0, max_tries=1),
]
CRON_JOBS: list[CronJob] = [
    cron(
        sweep_sends,
        name=f"cron:{JobName.SWEEP_SENDS.value}",
        second=every(get_settings().sweep_interval_seconds),
        run_at_startup=True,
    ),
]
