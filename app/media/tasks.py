"""Media's jobs: inbound attachments mirrored, story mentions checked, stored files deleted
(and the sweep that re-enqueues deletions whose job was lost)."""

from typing import Any

from arq.cron import CronJob
from arq.worker import Function

from app.core.jobs import JobName, resource, sweep, task
from app.media.service import Mirror


async def mirror_attachment(ctx: dict[str, Any], message_id: int, index: int) -> None:
    await resource(ctx, "mirror", Mirror).mirror(message_id, index, ctx["job_try"])


async def check_story_mention(ctx: dict[str, Any], message_id: int, index: int, check: int) -> None:
    await resource(ctx, "mirror", Mirror).check_story_mention(message_id, index, check)


async def delete_media(ctx: dict[str, Any], keys: list[str]) -> None:
    await resource(ctx, "mirror", Mirror).delete(keys)


async def sweep_media_deletions(ctx: dict[str, Any]) -> None:
    await resource(ctx, "mirror", Mirror).sweep_deletions()


FUNCTIONS: list[Function] = [
    task(mirror_attachment, JobName.MIRROR_ATTACHMENT, max_tries=3),
    task(check_story_mention, JobName.CHECK_STORY_MENTION),
    task(delete_media, JobName.DELETE_MEDIA, max_tries=3),
]
CRON_JOBS: list[CronJob] = [
    sweep(sweep_media_deletions, JobName.SWEEP_MEDIA_DELETIONS),
]
