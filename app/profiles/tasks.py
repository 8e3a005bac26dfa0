"""Profiles' jobs: erasing a profile in batches, and resuming erasures cut short."""

import logging
from typing import Any

from arq.cron import CronJob
from arq.worker import Function
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.connections import service as connections
from app.core.jobs import JobName, enqueue, sweep, task
from app.profiles import erasure
from app.profiles.models import Profile

log = logging.getLogger(__name__)


async def erase_profile(ctx: dict[str, Any], profile_id: int) -> bool:
    sessions: async_sessionmaker[AsyncSession] = ctx["sessions"]
    async with sessions() as session:
        profile = await session.get(Profile, profile_id)
    if profile is not None and profile.erasing_since is not None:
        # First, while the token is still there: Meta stops sending its webhooks. Once per
        # run (asking again is harmless); a refusal or an outage does not hold the erasure.
        await connections.unsubscribe(ctx["graph"], ctx["settings"], profile)
    return await erasure.Eraser(sessions, ctx["redis"]).erase(profile_id)


async def sweep_profile_erasures(ctx: dict[str, Any]) -> None:
    """Queue the erasures not finished (a run whose time ran out, or that a crash cut
    short); one queued or running keeps its job id, so none runs twice at once."""
    sessions: async_sessionmaker[AsyncSession] = ctx["sessions"]
    async with sessions() as session:
        profile_ids = await erasure.erasing(session)
    for profile_id in profile_ids:
        await enqueue(ctx["redis"], erasure.erase_job(profile_id))


FUNCTIONS: list[Function] = [task(erase_profile, JobName.ERASE_PROFILE)]
CRON_JOBS: list[CronJob] = [sweep(sweep_profile_erasures, JobName.SWEEP_PROFILE_ERASURES)]
