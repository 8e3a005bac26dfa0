"""The one way to ask a worker for work: a `Job`, named by `JobName`, enqueued after the
rows it is about are committed.

The database row is the truth and a job only points at it, so a failed enqueue is logged,
not raised: the caller's work is committed and a sweeper enqueues it again.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from arq import cron, func
from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.cron import CronJob
from arq.jobs import serialize_job
from arq.typing import WorkerCoroutine
from arq.utils import timestamp_ms
from arq.worker import Function
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import after_commit
from app.core.settings import get_settings

log = logging.getLogger(__name__)


class JobName(StrEnum):
    """Every job a worker runs, under the name arq stores it by in Redis: a job queued by one
    version of dmrelay is run by the next, so a value never changes."""

    SEND_CHAT = "deliver_chat"
    # One webhook delivery: enqueued by versions before the drain, run for their jobs still queued.
    PROCESS_WEBHOOK = "process_webhook"
    DRAIN_WEBHOOKS = "drain_webhooks"
    REFRESH_PARTICIPANTS = "refresh_participants"
    MIRROR_ATTACHMENT = "mirror_attachment"
    CHECK_STORY_MENTION = "check_story_mention"
    DELETE_MEDIA = "delete_media"
    SYNC_CHATS = "sync_chats"
    UNSUBSCRIBE_ACCOUNT = "unsubscribe_account"
    ERASE_PROFILE = "erase_profile"
    # Periodic (arq cron jobs, stored as "cron:<name>").
    SWEEP_SENDS = "sweep"
    SWEEP_WEBHOOK_DELIVERIES = "sweep_inbound"
    SWEEP_MEDIA_DELETIONS = "sweep_media_deletions"
    PURGE_IDEMPOTENCY_KEYS = "purge_idempotency_keys"
    PRUNE_CUSTOMER_EVENTS = "prune_customer_events"
    REFRESH_TOKENS = "refresh_tokens"
    SWEEP_CHAT_SYNCS = "sweep_chat_syncs"
    SWEEP_PROFILE_ERASURES = "sweep_profile_erasures"


# A job's arguments are plain data (see queue.pack_job): ids, and lists of ids or keys.
JobArg = int | str | list[int] | list[str]


@dataclass(frozen=True)
class Job:
    """One job to enqueue. `id` keeps it unique in Redis (arq refuses a second job under an id
    that is queued, running or kept as a result); `defer_until` or `defer_by` delays it."""

    name: JobName
    args: tuple[JobArg, ...]
    id: str | None = None
    defer_until: datetime | None = None
    defer_by: timedelta | None = None


async def enqueue(pool: ArqRedis, job: Job) -> bool:
    """Enqueue a job whose rows are already committed: False if its id is taken (or Redis
    failed, which is logged)."""
    try:
        queued = await pool.enqueue_job(
            job.name.value,
            *job.args,
            _job_id=job.id,
            _defer_until=job.defer_until,
            _defer_by=job.defer_by,
        )
    except Exception:
        log.exception("could not enqueue %s%r; the sweeper will pick it up", job.name, job.args)
        return False
    return queued is not None


def enqueue_after_commit(session: AsyncSession, job: Job) -> None:
    """Enqueue `job` once the session's transaction has committed (see db.after_commit)."""
    after_commit(session, lambda pool: enqueue(pool, job))


# arq's enqueue_job for several candidate ids in one round trip (arq itself takes three per
# id: WATCH, EXISTS, MULTI/EXEC): the job goes under the first id with no job or result, and
# its id is published on the wake channel if one is given (see WAKES).
# KEYS: the queue, then each id's job key and result key. ARGV: the serialised job, its
# score, its expiry (ms), the wake channel or '', then the ids.
_ENQUEUE_FIRST_FREE = """
for j = 1, #ARGV - 4 do
    if redis.call('EXISTS', KEYS[2 * j], KEYS[2 * j + 1]) == 0 then
        redis.call('PSETEX', KEYS[2 * j], ARGV[3], ARGV[1])
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4 + j])
        if ARGV[4] ~= '' then
            redis.call('PUBLISH', ARGV[4], ARGV[4 + j])
        end
        return j
    end
end
return 0
"""
# Jobs a worker starts as soon as they are enqueued, told on the queue's wake channel,
# rather than at its next poll of the queue (up to the poll delay later): a send, and the
# drain of Meta's webhooks (which gathers what arrives meanwhile into its next batch), wait
# for nobody. The poll is left to deferred and background jobs, and to a wake missed.
WAKES = frozenset({JobName.SEND_CHAT, JobName.DRAIN_WEBHOOKS})


def wake_channel(queue_name: str) -> str:
    """The Redis channel the ids of a queue's WAKES jobs are published on when enqueued."""
    return f"{queue_name}:wake"


async def enqueue_first_free(
    pool: ArqRedis, name: JobName, args: tuple[JobArg, ...], job_ids: list[str]
) -> str | None:
    """Enqueue a job under the first of `job_ids` that is free, as arq would; the id used,
    or None if all are taken (or Redis failed: logged, as in `enqueue`)."""
    keys, argv = _first_free(pool, name, args, job_ids)
    try:
        taken = await pool.register_script(_ENQUEUE_FIRST_FREE)(keys, argv)
    except Exception:
        log.exception("could not enqueue %s%r; the sweeper will pick it up", name, args)
        return None
    return job_ids[taken - 1] if taken else None


# A job that drains a table of work in batches (inbound's webhook deliveries), asked for by
# a signal: a counter each producer adds to once its row is committed. The producer that
# finds it at 1 (no drain asked for since the last one settled) enqueues the drain job, as
# _ENQUEUE_FIRST_FREE would, and gives the counter a time to live that the running drain
# keeps renewing: should the drain die with its worker, the counter lapses and the next row
# enqueues a drain again. The others only count (-1).
# KEYS: the queue, the job's key and result key, the counter. ARGV: the serialised job, its
# score, its expiry (ms), the wake channel or '', its id, the counter's time to live (ms).
_SIGNAL = """
if redis.call('INCR', KEYS[4]) > 1 then
    return -1
end
redis.call('PEXPIRE', KEYS[4], ARGV[6])
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
    redis.call('PSETEX', KEYS[2], ARGV[3], ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[5])
    if ARGV[4] ~= '' then
        redis.call('PUBLISH', ARGV[4], ARGV[5])
    end
    return 1
end
return 0
"""
# The drain's end: the counter dropped if it still reads what the drain read before its last
# look at the table, else (a producer counted since) the drain looks again. KEYS: the
# counter. ARGV: what it read ('' for no counter).
_SETTLE = """
if (redis.call('GET', KEYS[1]) or '') == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
"""


@dataclass(frozen=True)
class Signal:
    """A drain's signal: the counter's key, its time to live, and the drain job's name."""

    counter: str
    ttl: timedelta
    job: JobName


async def signal(pool: ArqRedis, drain: Signal, job_id: str) -> None:
    """Count a committed row for the drain, enqueueing it (a job without arguments, under
    `job_id`) if none is asked for yet. A Redis failure is logged: the row waits for the
    sweeper."""
    keys, argv = _first_free(pool, drain.job, (), [job_id])
    ttl_ms = int(drain.ttl.total_seconds() * 1000)
    try:
        await pool.register_script(_SIGNAL)([*keys, drain.counter], [*argv, ttl_ms])
    except Exception:
        log.exception("could not signal %s; the sweeper will pick it up", drain.job)


async def signalled(pool: ArqRedis, drain: Signal) -> str:
    """The signal's count, read before the drain looks at its table ('' for none); its time
    to live renewed, as the drain is alive."""
    async with pool.pipeline(transaction=False) as pipe:
        pipe.get(drain.counter)
        pipe.pexpire(drain.counter, drain.ttl)
        count, _ = await pipe.execute()
    return "" if count is None else count.decode()


async def settle(pool: ArqRedis, drain: Signal, seen: str) -> bool:
    """End the drain: True (the signal cleared, the next row enqueues a drain again) if
    nothing was counted since `seen` was read, before the drain's last look at its table
    found nothing to take; else False, and the drain looks again. Why no row is left behind:
    a producer commits its row, then counts. Counted before `seen` was read, its row was
    committed before that last look; counted after, the counter no longer reads `seen`."""
    settled = await pool.register_script(_SETTLE)([drain.counter], [seen])
    return bool(settled)


def _first_free(
    pool: ArqRedis, name: JobName, args: tuple[JobArg, ...], job_ids: list[str]
) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV of _ENQUEUE_FIRST_FREE for one job."""
    enqueued_ms = timestamp_ms()
    job = serialize_job(name.value, args, {}, None, enqueued_ms, serializer=pool.job_serializer)
    keys = [pool.default_queue_name]
    for job_id in job_ids:
        keys += [job_key_prefix + job_id, result_key_prefix + job_id]
    wake = wake_channel(pool.default_queue_name) if name in WAKES else ""
    return keys, [job, enqueued_ms, pool.expires_extra_ms, wake, *job_ids]


def task(coroutine: WorkerCoroutine, name: JobName, max_tries: int = 1) -> Function:
    """A job function as a worker registers it (each capability's tasks.py). keep_result=0:
    a finished job frees its id at once, for the next job of the same id."""
    return func(coroutine, name=name.value, keep_result=0, max_tries=max_tries)


def periodic(coroutine: WorkerCoroutine, name: JobName, **when: Any) -> CronJob:
    """A cron job (arq's `cron`, with `when` its schedule), stored as "cron:<name>"."""
    return cron(coroutine, name=f"cron:{name.value}", **when)


def sweep(coroutine: WorkerCoroutine, name: JobName, run_at_startup: bool = False) -> CronJob:
    """A sweep: a cron job every SWEEP_INTERVAL_SECONDS that finds work whose job was lost."""
    seconds = get_settings().sweep_interval_seconds
    return periodic(
        coroutine, name, second=set(range(0, 60, seconds)), run_at_startup=run_at_startup
    )


Resource = TypeVar("Resource")


def resource(ctx: dict[str, Any], key: str, kind: type[Resource]) -> Resource:
    """What the worker's start-up (app/worker.py) keeps in a job's `ctx` under `key`, typed."""
    value = ctx[key]
    if not isinstance(value, kind):
        raise TypeError(f"ctx[{key!r}] is a {type(value).__name__}, not a {kind.__name__}")
    return value
