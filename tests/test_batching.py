"""The Batcher, and the per-profile throttle built on it."""

import asyncio
import time

import pytest

from app.core.batching import Batcher
from app.messages.throttle import GUARD_RETRY_MS, HEADROOM, Held, ProfileThrottle


async def test_concurrent_submits_share_one_run_and_get_their_own_results():
    runs = []

    async def double(items: list[int]) -> list[int]:
        runs.append(items)
        return [2 * item for item in items]

    batcher = Batcher(double)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert await batcher.submit(7) == 14
    assert runs == [[0, 1, 2, 3, 4], [7]]


async def test_one_at_a_time_submits_made_while_a_run_is_in_flight_share_the_next_run():
    runs, release = [], asyncio.Event()

    async def slow_double(items: list[int]) -> list[int]:
        runs.append(items)
        await release.wait()
        return [2 * item for item in items]

    batcher = Batcher(slow_double, one_at_a_time=True)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.01)  # the first run is in flight
    later = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    assert runs == [[0]]
    release.set()
    assert await asyncio.gather(first, *later) == [0, 2, 4]
    assert runs == [[0], [1, 2]]


async def test_a_failed_run_fails_every_submit_of_its_batch():
    async def broken(items: list[int]) -> list[int]:
        raise ConnectionError("database gone")

    batcher = Batcher(broken)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert [type(result) for result in results] == [ConnectionError] * 3


async def test_sends_of_one_profile_in_one_batch_are_spaced_by_its_rate(clean):
    throttle = ProfileThrottle(clean.worker.pool, clean.settings)
    first, second, other = await asyncio.gather(
        throttle.reserve(1, "instagram_login", None),
        throttle.reserve(1, "instagram_login", None),
        throttle.reserve(2, "instagram_login", None),
    )
    assert (first.wait, other.wait) == (0.0, 0.0)
    assert first.booked and second.booked and other.booked
    # 100/s less the headroom: the next slot is ~10.4 ms after the first.
    assert second.wait == pytest.approx(
        1 / (clean.settings.rate_text_instagram_login * HEADROOM), abs=0.003
    )
    paused = time.monotonic()
    await throttle.pause(2, 30)

    def pause_left(seconds: float) -> bool:  # what is left of it, as long as it has been
        return 30 - (time.monotonic() - paused) - 0.002 <= seconds <= 30

    assert pause_left((await throttle.reserve(2, "instagram_login", None)).paused_for)
    # Sending: a paused profile's send is held back for the pause, any other goes.
    with pytest.raises(Held) as held:
        async with throttle.sending(2, "instagram_login", None, patience=5):
            pytest.fail("a paused profile sent")
    assert pause_left(held.value.seconds)
    sent = False
    async with throttle.sending(3, "instagram_login", None, patience=5):
        sent = True
    assert sent


async def test_a_slot_further_off_than_the_senders_patience_is_not_waited_for(clean):
    # Video at 0.2/s: once profile 4 has booked a slot, its next is ~5 s away, further than
    # the sender's patience by more than a busy machine's stall.
    rate = 0.2
    throttle = ProfileThrottle(
        clean.worker.pool, clean.settings.model_copy(update={"rate_audio_video": rate})
    )
    assert (await throttle.reserve(4, "instagram_login", "video")).booked
    started = time.monotonic()
    with pytest.raises(Held) as held:
        async with throttle.sending(4, "instagram_login", "video", patience=2):
            pytest.fail("sent before its slot")
    assert 2 < held.value.seconds <= 1 / (rate * HEADROOM)
    assert time.monotonic() - started < 2  # answered at once, not after waiting
    async with throttle.sending(5, "instagram_login", "video", patience=2):
        pass


async def _redis_ms(redis) -> float:
    seconds, microseconds = await redis.time()
    return seconds * 1000 + microseconds / 1000


async def test_no_second_holds_the_limit_even_of_sends_not_answered_yet(clean):
    throttle = ProfileThrottle(clean.worker.pool, clean.settings)
    limit = int(clean.settings.rate_audio_video)
    # Paced at a little under 10/s, ten slots fit in the horizon's second; Meta, which counts
    # a send when it gets it, could see all ten in one second (a slow network, a stalled
    # loop) and throttle the account. Only nine are booked.
    booked = []
    while True:
        # When Redis answered, within its clock's readings around the call.
        before = await _redis_ms(clean.worker.pool)
        slot = await throttle.reserve(6, "instagram_login", "video")
        after = await _redis_ms(clean.worker.pool)
        if not slot.booked:
            break
        booked.append(float(slot.booking[1]))  # the slot's time, in Redis's ms
    assert len(booked) == limit - 1
    # Turned away while those sends are unanswered: ask again soon after the slot the next
    # send would have had (or now, if that is past).
    next_slot = booked[-1] + 1000 / (limit * HEADROOM)

    def retry_in(now: float) -> float:
        return max(next_slot - now, 0) + GUARD_RETRY_MS

    assert retry_in(after) - 1 <= slot.wait * 1000 <= retry_in(before) + 1


async def test_an_answered_send_counts_for_a_second_after_its_answer(clean):
    throttle = ProfileThrottle(clean.worker.pool, clean.settings)
    limit = int(clean.settings.rate_audio_video)

    async def send() -> None:
        async with throttle.sending(7, "instagram_login", "video", patience=5):
            pass

    await asyncio.gather(*(send() for _ in range(limit - 1)))  # ~0.9 s, paced
    # Their answers are logged with the next request, this one: until they are a second
    # old, a tenth send could share a second with all of them at Meta. Not asked again
    # every few ms meanwhile (as for sends not answered yet): told when.
    slot = await throttle.reserve(7, "instagram_login", "video")
    assert not slot.booked
    assert slot.wait == pytest.approx(1.0, abs=0.1)
