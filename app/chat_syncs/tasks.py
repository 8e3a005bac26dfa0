"""Chat syncs' job: one backfill run."""

from typing import Any

from arq.cron import CronJob
from arq.worker import Function

from app.chat_syncs import service
from app.core.jobs import JobName, periodic, task


async def sync_chats(ctx: dict[str, Any], chat_sync_id: int) -> None:
    await service.run(ctx["sessions"], ctx["graph"], ctx["settings"], ctx["redis"], chat_sync_id)


FUNCTIONS: list[Function] = [task(sync_chats, JobName.SYNC_CHATS)]


async def sweep_chat_syncs(ctx: dict[str, Any]) -> None:
    await service.sweep(ctx["sessions"], ctx["redis"])


CRON_JOBS: list[CronJob] = [periodic(sweep_chat_syncs, JobName.SWEEP_CHAT_SYNCS, second={30})]
