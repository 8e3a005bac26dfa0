"""The arq worker dmrelay runs: arq's, made to outlive Redis outages and to stop when told.

It relies on arq's public surface only (`main`, `start_jobs`, `heart_beat`, `on_stop`, the
`tasks`, `sem`, `job_counter`, `queue_name` and `allow_pick_jobs` attributes, the
`redis_pool` argument, the in-progress key a running job is marked with);
tests/test_libraries.py fails if that surface changes in an arq release within the pinned
range.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from signal import Signals
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.worker import Worker
from redis.exceptions import RedisError

from app.core import worker_http
from app.core.jobs import wake_channel

log = logging.getLogger(__name__)

# A Redis outage is waited out, trying again this often.
REDIS_RETRY_SECONDS = 1.0


class ResilientWorker(Worker):
    """An arq worker that waits out a Redis outage instead of exiting, even one it starts
    in, does not ask Redis about the jobs it is running itself, starts the jobs announced on
    its queue's wake channel at once (app/core/jobs.py:WAKES), and stops when told to.

    Give it a pool that connects lazily (`redis_pool=queue.arq_pool(settings)`): arq's own
    would fail at once while Redis is down. `on_startup` runs again after an outage, so it
    must be idempotent.
    """

    def __init__(
        self,
        *args: Any,
        http_port: int | None = None,
        on_poll: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Called with the worker's ctx after each poll of the queue while it takes jobs
        # (Redis errors in it are waited out as the poll's are).
        self.on_poll = on_poll
        self._stopping = False
        # Its health, as its HTTP port (app/core/worker_http.py) reports it.
        self.http_port = http_port
        self.last_poll: float | None = None
        self.waiting_for_redis = False
        # arq stops a worker by cancelling its main task once its jobs are done. On Python
        # 3.11 that cancellation can be lost: redis-py sends each command under
        # asyncio.wait_for, which returns a send that finished at the moment it was
        # cancelled. The worker would then poll on, taking no job, and never exit.
        self.on_stop = self._stop

    def _stop(self, signum: Signals) -> None:
        self._stopping = True

    async def main(self) -> None:
        runner = None
        if self.http_port is not None:
            # Before Redis answers: an orchestrator asks from the start.
            runner = await worker_http.start(self, self.http_port)
        woken = asyncio.create_task(self._start_woken_jobs(), name="worker-wake")
        try:
            await self._main()
        finally:
            woken.cancel()
            with suppress(asyncio.CancelledError):
                await woken
            if runner is not None:
                await runner.cleanup()

    async def _main(self) -> None:
        # arq's main loop ends with the first Redis error (at start-up or in any poll):
        # wait, then enter it again. Jobs under way keep running meanwhile.
        while True:
            try:
                await super().main()
                return
            except (RedisError, OSError) as error:
                # Includes the WatchError redis-py raises for a connection lost mid-WATCH.
                self.waiting_for_redis = True
                log.warning(
                    "Redis is unavailable (%s); trying again in %.0f s", error, REDIS_RETRY_SECONDS
                )
                await asyncio.sleep(REDIS_RETRY_SECONDS)

    async def _start_woken_jobs(self) -> None:
        """Start each job whose id is published on the queue's wake channel, as arq's poll
        would at its next turn (up to `poll_delay` later). arq's own checks (the job is due,
        not started by another worker) still decide: every worker hears the id and one wins.
        A wake missed (Redis away, this worker busy) costs only the wait for the poll."""
        channel = wake_channel(self.queue_name)
        while not self._stopping:
            pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                while not self._stopping:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    job_ids = {message["data"]}
                    # Those published meanwhile, in one go.
                    while (message := await pubsub.get_message()) is not None:
                        job_ids.add(message["data"])
                    if self.allow_pick_jobs:
                        await self.start_jobs(list(job_ids))
            except (RedisError, OSError):
                # The poll goes on meanwhile, and main() says that Redis is away.
                await asyncio.sleep(REDIS_RETRY_SECONDS)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def heart_beat(self) -> None:
        if self._stopping:
            # The cancellation arq asked for, in case it was lost (see __init__).
            raise asyncio.CancelledError
        # Called after each poll of the queue: the poll answered.
        self.last_poll = time.monotonic()
        self.waiting_for_redis = False
        await super().heart_beat()
        if self.on_poll is not None and self.allow_pick_jobs:
            await self.on_poll(self.ctx)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # Each poll (every poll_delay while a job slot is free) reads up to max_jobs ids from the
        # queue's head, where running jobs stay until they finish, and arq checks each one in
        # Redis (four round trips) before it skips one that is running. Those running here
        # are known; those running in other workers are asked about in one round trip.
        job_ids = [job_id for job_id in job_ids if not self._running_here(job_id.decode())]
        if len(job_ids) > 1:
            job_ids = await self._not_running_elsewhere(job_ids)
        try:
            await super().start_jobs(job_ids)
        except (RedisError, OSError):
            # arq had taken a job slot for the job it was starting: give it back, or each
            # Redis outage would shrink the worker for good.
            self.job_counter -= 1
            self.sem.release()
            raise

    async def _not_running_elsewhere(self, job_ids: list[bytes]) -> list[bytes]:
        """The jobs no worker has marked in progress. arq's own check still decides for
        those (one may start meanwhile); this only spares it the ones already taken, which
        with M workers are most of the queue: each runs a Mth of the long send jobs."""
        marks = await self.pool.mget(
            [in_progress_key_prefix + job_id.decode() for job_id in job_ids]
        )
        return [job_id for job_id, mark in zip(job_ids, marks, strict=True) if mark is None]

    def _running_here(self, job_id: str) -> bool:
        task = self.tasks.get(job_id)
        return task is not None and not task.done()
