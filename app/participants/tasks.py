"""Participants' job: the profile fields of chats' participants fetched from Meta, their
pictures copied to the media store."""

from typing import Any

from arq.cron import CronJob
from arq.worker import Function

from app.core.jobs import JobName, resource, task
from app.media.service import Mirror
from app.participants import service


async def refresh_participants(ctx: dict[str, Any], chat_ids: list[int]) -> None:
    mirror = resource(ctx, "mirror", Mirror)
    await service.refresh(
        ctx["sessions"], ctx["graph"], ctx["settings"], ctx["redis"], mirror, chat_ids
    )


FUNCTIONS: list[Function] = [
    task(refresh_participants, JobName.REFRESH_PARTICIPANTS),
]
CRON_JOBS: list[CronJob] = []
