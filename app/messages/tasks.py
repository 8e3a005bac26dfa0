"""The send path's jobs: a chat's messages sent to Meta in order, and the sweep that
re-enqueues chats whose job was lost."""

from typing import Any

from arq.cron import CronJob
from arq.worker import Function

from app.core.jobs import JobName, resource, sweep, task
from app.messages.sender import Sender
from app.messages.sweep import requeue_stranded_chats


async def send_chat(ctx: dict[str, Any], chat_id: int) -> None:
    await resource(ctx, "sender", Sender).send_chat(chat_id)


async def share_chats(ctx: dict[str, Any]) -> None:
    """After each poll of the queue (the worker's on_poll): see app/messages/sharing.py."""
    await resource(ctx, "sender", Sender).sharing.look()


async def sweep_sends(ctx: dict[str, Any]) -> None:
    sender = resource(ctx, "sender", Sender)
    await requeue_stranded_chats(sender.engine, sender.redis, sender.settings)


FUNCTIONS: list[Function] = [
    task(send_chat, JobName.SEND_CHAT),
]
CRON_JOBS: list[CronJob] = [
    sweep(sweep_sends, JobName.SWEEP_SENDS, run_at_startup=True),
]
