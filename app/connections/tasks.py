"""Connections' jobs: the cron that keeps Instagram Login tokens alive, and unsubscribing a
disconnected account from Meta's webhooks."""

import logging
from typing import Any

from arq import Retry
from arq.cron import CronJob
from arq.worker import Function

from app.connections import service
from app.core.jobs import JobName, periodic, task
from app.core.settings import get_settings

log = logging.getLogger(__name__)
# Tries to unsubscribe, the n-th UNSUBSCRIBE_DELAY_SECONDS * n after the one before.
UNSUBSCRIBE_TRIES = 6
UNSUBSCRIBE_DELAY_SECONDS = 30


async def refresh_tokens(ctx: dict[str, Any]) -> int:
    return await service.refresh_tokens(ctx["sessions"], ctx["graph"], ctx["settings"])


async def unsubscribe_account(ctx: dict[str, Any], profile_id: int) -> None:
    done = await service.unsubscribe_disconnected(
        ctx["sessions"], ctx["graph"], ctx["settings"], profile_id
    )
    if done:
        return
    tried = int(ctx.get("job_try", 1))
    if tried < UNSUBSCRIBE_TRIES:
        raise Retry(defer=UNSUBSCRIBE_DELAY_SECONDS * tried)
    log.warning(
        "profile %s: gave up unsubscribing it after %d tries; Meta may go on sending its "
        "webhooks, which are ignored (remove the app from the account to stop them)",
        profile_id,
        tried,
    )


FUNCTIONS: list[Function] = [
    task(unsubscribe_account, JobName.UNSUBSCRIBE_ACCOUNT, max_tries=UNSUBSCRIBE_TRIES)
]
CRON_JOBS: list[CronJob] = [
    periodic(
        refresh_tokens,
        JobName.REFRESH_TOKENS,
        minute=set(range(0, 60, get_settings().refresh_tokens_interval_minutes)),
    ),
]
