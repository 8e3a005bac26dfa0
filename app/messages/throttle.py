"""Per-profile send limits, shared by every worker through Redis.

Meta limits sends per Instagram account (text and reactions 100/s with Instagram Login, 300/s
with Facebook Login; audio and video 10/s). dmrelay spaces each profile's sends to stay under
those rates, and pauses a profile entirely while Meta says it is throttled, so a client may
send as fast as it likes.
"""

import asyncio
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from app.core.batching import Batcher
from app.core.settings import Settings

AUDIO_VIDEO = frozenset({"audio", "video"})
# Keep a little under the configured rate: a send leaves a few ms after its slot now and
# then (a busy event loop, the network), and Meta counts sends in a sliding window. At 96 %
# of 100/s, one profile's busiest second held 97-98 sends in four runs of 2,000 (95 %: 97).
HEADROOM = 0.96

# How late after its booked slot a send may still go: one that woke later would crowd the
# next ones into Meta's window, so it gives the slot up and books another.
LATE_SECONDS = 0.005
# How far ahead a send may book its slot. Further out, it asks again later: a pause Meta
# asks for meanwhile then holds it back.
HORIZON_MS = 1000

# One round trip for both checks, for any number of sends (KEYS and ARGV in pairs and ones:
# a profile's pause key and its rate key, and the limit's interval in ms, per send).
# A paused profile answers {1, ms left on the pause}. Otherwise the generic cell rate
# algorithm with no burst: each send gets the next free slot, one interval after the one
# before, booked if it is within the horizon: {0, ms until the slot, 1}; beyond it,
# {0, ms until then, 0}, and nothing is booked. Booking (rather than asking again once the
# slot is due) leaves no gaps between slots, so a busy profile uses its whole rate.
_RESERVE_SLOTS = f"""
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + now_parts[2] / 1000
local answers = {{}}
for i = 1, #ARGV do
  local paused_ms = redis.call('PTTL', KEYS[2 * i - 1])
  if paused_ms > 0 then
    answers[i] = {{1, tostring(paused_ms), 0}}
  else
    local interval = tonumber(ARGV[i])
    local slot = math.max(tonumber(redis.call('GET', KEYS[2 * i]) or '0'), now)
    if slot - now > {HORIZON_MS} then
      answers[i] = {{0, tostring(slot - now), 0}}
    else
      local next_slot = slot + interval
      redis.call('SET', KEYS[2 * i], tostring(next_slot), 'PX', math.ceil(next_slot - now) + 1000)
      answers[i] = {{0, tostring(slot - now), 1}}
    end
  end
end
return answers
"""


@dataclass(frozen=True)
class Slot:
    """The answer to "may this profile send now?"."""

    # Seconds left on a pause Meta asked for: the send should be held back, not retried soon.
    paused_for: float
    # Seconds until the send's slot, or until it should ask again.
    wait: float
    # Whether the slot is the send's: after `wait`, it goes without asking again.
    booked: bool


class ProfileThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._reserve_slots = redis.register_script(_RESERVE_SLOTS)
        # The sends of concurrent chats ask in one round trip.
        self._requests = Batcher(self._reserve_all)

    def _limit(self, connection: str, attachment_type: str | None) -> tuple[str, float]:
        """The limit a send counts against: its name and its rate per second."""
        if attachment_type in AUDIO_VIDEO:
            return "audio_video", self._settings.rate_audio_video
        if connection == "facebook_login":
            return "text", self._settings.rate_text_facebook_login
        return "text", self._settings.rate_text_instagram_login

    async def wait_for_slot(
        self, profile_id: int, connection: str, attachment_type: str | None, patience: float
    ) -> float:
        """Wait until this send may go: 0.0 then, or how long it should be held back instead
        (not retried soon): the seconds left on a pause Meta asked for, or until its slot if
        that is more than `patience` seconds away (the caller's hold on its chat must outlast
        the wait: a profile with many chats queued on its audio and video rate, 10/s, can
        have slots many seconds out)."""
        deadline = time.monotonic() + patience
        while True:
            slot = await self.reserve(profile_id, connection, attachment_type)
            if slot.paused_for:
                return slot.paused_for
            due = time.monotonic() + slot.wait
            if not slot.booked and due > deadline:
                return slot.wait
            if slot.wait:
                await asyncio.sleep(slot.wait)
            if slot.booked and time.monotonic() - due <= LATE_SECONDS:
                return 0.0

    async def reserve(self, profile_id: int, connection: str, attachment_type: str | None) -> Slot:
        name, rate = self._limit(connection, attachment_type)
        return await self._requests.submit(
            (
                _pause_key(profile_id),
                f"dmrelay:rate:{profile_id}:{name}",
                1000.0 / (rate * HEADROOM),
            )
        )

    async def _reserve_all(self, requests: list[tuple[str, str, float]]) -> list[Slot]:
        answers = await self._reserve_slots(
            keys=[key for pause_key, rate_key, _ in requests for key in (pause_key, rate_key)],
            args=[interval for _, _, interval in requests],
        )
        return [
            Slot(paused_for=float(ms) / 1000.0, wait=0.0, booked=False)
            if paused
            else Slot(paused_for=0.0, wait=float(ms) / 1000.0, booked=bool(booked))
            for paused, ms, booked in answers
        ]

    async def pause(self, profile_id: int, seconds: float) -> None:
        """Hold every send of this profile for a while (Meta asked us to back off)."""
        milliseconds = max(1, int(seconds * 1000))
        # Only ever lengthen a pause (a race between two workers is harmless: both pause).
        if await self._redis.pttl(_pause_key(profile_id)) < milliseconds:
            await self._redis.set(_pause_key(profile_id), "1", px=milliseconds)


def _pause_key(profile_id: int) -> str:
    return f"dmrelay:paused:{profile_id}"
