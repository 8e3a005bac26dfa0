"""The per-profile send log: a send whose answer never comes (its worker died) holds its
place for a few seconds, not a whole Graph timeout; one whose worker waits for the answer
keeps it as long as the call runs."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis, create_pool

from app.core.queue import redis_settings
from app.messages.throttle import UNANSWERED_SECONDS, ProfileThrottle
from tests.conftest import Stack, wait_for

PROFILE = 990001
LOG_KEY = f"dmrelay:sent:{PROFILE}:audio_video"


@pytest.fixture
async def redis(clean: Stack) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(redis_settings(clean.settings))
    yield pool
    await pool.aclose()


def throttle(clean: Stack, redis: ArqRedis) -> ProfileThrottle:
    # A Graph timeout of 10 s, as by default: a send could take that long.
    settings = clean.settings.model_copy(
        update={"graph_timeout_seconds": 10.0, "rate_audio_video": 3.0}
    )
    return ProfileThrottle(redis, settings)


async def test_a_dead_workers_unanswered_send_holds_its_place_a_few_seconds(clean, redis):
    # Booked, then never answered nor pushed on: what a worker killed mid-call leaves.
    slot = await throttle(clean, redis).reserve(PROFILE, "instagram_login", "video")
    assert slot.booking is not None
    log_key, entry = slot.booking
    held_until = await redis.zscore(log_key, entry)
    assert held_until - float(entry) <= UNANSWERED_SECONDS * 1000 + 1  # + rounding


async def test_a_live_workers_unanswered_send_keeps_its_place_while_the_call_runs(clean, redis):
    answer = asyncio.Event()

    async def call() -> None:
        async with throttle(clean, redis).sending(PROFILE, "instagram_login", "video", 5):
            await answer.wait()  # Meta has not answered yet

    sending = asyncio.create_task(call())

    async def logged() -> list[tuple[bytes, float]]:
        return await redis.zrange(LOG_KEY, 0, -1, withscores=True)

    [(entry, first)] = await wait_for(logged)

    async def pushed_on() -> bool:
        [(_, score)] = await logged()
        # Past what it was first logged until: it would have gone by now.
        return score > first

    await wait_for(pushed_on)
    answer.set()
    await sending
