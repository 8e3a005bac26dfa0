"""Participants' job: the profile fields of chats' participants fetched from Meta."""

from typing import Any

from arq.cron import CronJob
from arq.worker import Function

from app.core.jobs import JobName, task
from app.participants import service


async def refresh_participants(ctx: dict[str, Any], chat_ids: list[int]) -> None:
    await service.refresh(ctx["sessions"], ctx["graph"], ctx["settings"], ctx["redis"], chat_ids)


FUNCTIONS: list[Function] = [
    task(refresh_participants, JobName.REFRESH_PARTICIPANTS),
]
CRON_JOBS: list[CronJob] = []
