"""Participants' job: the profile fields of chats' participants fetched from Meta."""

from typing import Any

from arq import func
from arq.cron import CronJob
from arq.worker import Function

from app.core.jobs import JobName
from app.participants import service


async def refresh_participants(ctx: dict[str, Any], chat_ids: list[int]) -> None:
    await service.refresh(ctx["sessions"], ctx["graph"], ctx["settings"], ctx["redis"], chat_ids)


FUNCTIONS: list[Function] = [
    func(refresh_participants, name=JobName.REFRESH_PARTICIPANTS.value, keep_result=0, max_tries=1),
]
CRON_JOBS: list[CronJob] = []
