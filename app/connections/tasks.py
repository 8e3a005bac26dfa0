"""Connections' job: the cron that keeps Instagram Login tokens alive."""

from typing import Any

from arq.cron import CronJob
from arq.worker import Function

from app.connections import service
from app.core.jobs import JobName, periodic
from app.core.settings import get_settings


async def refresh_tokens(ctx: dict[str, Any]) -> int:
    return await service.refresh_tokens(ctx["sessions"], ctx["graph"], ctx["settings"])


FUNCTIONS: list[Function] = []
CRON_JOBS: list[CronJob] = [
    periodic(
        refresh_tokens,
        JobName.REFRESH_TOKENS,
        minute=set(range(0, 60, get_settings().refresh_tokens_interval_minutes)),
    ),
]
