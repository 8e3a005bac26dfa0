"""Per-profile send limits, shared by every worker through Redis.

Meta limits sends per Instagram account (text and reactions 100/s with Instagram Login, 300/s
with Facebook Login; audio and video 10/s), counted over any second, and a second that
reaches the limit throttles the account. dmrelay spaces each profile's sends to stay under
those rates, and pauses a profile entirely while Meta says it is throttled, so a client may
send as fast as it likes.

Two rules, checked together in one Redis round trip per batch of sends:
- Pacing: each send books the next free slot, one interval after the one before (the generic
  cell rate algorithm, no burst), at a little under the limit. Booking, rather than asking
  again once the slot is due, leaves no gaps between slots, so a busy profile uses its rate.
- A guard: Meta counts a send when it receives it, which may be later than its slot (a
  stalled event loop, a slow network, a busy machine), so sends that left on time can reach
  Meta bunched. Every send is logged with the latest time Meta can have received it: once
  answered, the answer's time; until then, a few seconds ahead of now, pushed on while its
  worker waits for the answer (see UNANSWERED_SECONDS). A slot is booked only if fewer than
  limit - 1 logged sends can fall in the second before it, so whatever the delays, no second
  at Meta holds the limit.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from redis.asyncio import Redis

from app.core.batching import Batcher
from app.core.settings import Settings
from app.profiles.models import Connection

log = logging.getLogger(__name__)

AUDIO_VIDEO = frozenset({"audio", "video"})
# Pace a little under the limit, so that the guard seldom has to hold a send back.
HEADROOM = 0.96
# How far ahead a send may book its slot. Further out, it asks again later: a pause Meta
# asks for meanwhile then holds it back.
HORIZON_MS = 1000
# A send the guard turns away asks again this long after its slot at the latest.
GUARD_RETRY_MS = 5
# How far ahead of now an unanswered send is logged, pushed on every third of it while its
# worker waits for the answer (never past the Graph timeout and a second, the most a call
# can take). Meta counts a send when the request reaches it: a live worker keeps its
# unanswered sends logged ahead of that, and a dead one sends nothing more (what it had
# written reaches Meta within the network's transit time, far less than this), so a dead
# worker's unanswered sends hold their places at most this long after its last push, not
# for a whole Graph timeout. The cost: a worker that cannot push for two thirds of it (its
# event loop stalled, or Redis out of reach) may have a request reach Meta after its entry
# has gone, so this is several times the stalls a busy machine shows.
UNANSWERED_SECONDS = 3.0

# KEYS: per send, its profile's pause key, rate key and log key; then the log key of each
# send answered since the last call. ARGV: the number of sends, the ms a send stays in the
# log unanswered, per send its interval in ms and how many logged sends may share its second,
# then each answered send's log entry.
# Each send gets {1, ms left on the pause, why} if its profile is paused; else {0, ms until
# its slot, its log entry} if the slot is booked, or {0, ms until it should ask again} if not.
_RESERVE_SLOTS = f"""
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + now_parts[2] / 1000
local sends = tonumber(ARGV[1])
local unanswered_ms = tonumber(ARGV[2])
for i = 3 * sends + 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', 'LT', now, ARGV[2 + 2 * sends + i - 3 * sends])
end
local answers = {{}}
for i = 1, sends do
  local pause_key, rate_key, log_key = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local interval, most = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local paused_ms = redis.call('PTTL', pause_key)
  local slot = math.max(tonumber(redis.call('GET', rate_key) or '0'), now)
  if paused_ms > 0 then
    answers[i] = {{1, tostring(paused_ms), redis.call('GET', pause_key) or ''}}
  elseif slot - now > {HORIZON_MS} then
    answers[i] = {{0, tostring(slot - now)}}
  else
    redis.call('ZREMRANGEBYSCORE', log_key, '-inf', now - 1000)
    local second_before = '(' .. tostring(slot - 1000)
    local in_second = redis.call('ZCOUNT', log_key, second_before, '+inf')
    if in_second > most then
      -- Asks again once the send that must leave the second first has left it; soon after
      -- the slot if that send is unanswered (answers usually come within milliseconds).
      local first = redis.call(
        'ZRANGEBYSCORE', log_key, second_before, '+inf', 'WITHSCORES',
        'LIMIT', in_second - most - 1, 1
      )
      local first_at = tonumber(first[2])
      local retry = first_at <= now and first_at + 1000 or slot + {GUARD_RETRY_MS}
      answers[i] = {{0, tostring(retry - now)}}
    else
      local next_slot = slot + interval
      redis.call('SET', rate_key, tostring(next_slot), 'PX', math.ceil(next_slot - now) + 1000)
      local entry = tostring(slot)
      redis.call('ZADD', log_key, slot + unanswered_ms, entry)
      redis.call('PEXPIRE', log_key, math.ceil(slot - now + unanswered_ms) + 1000)
      answers[i] = {{0, tostring(slot - now), entry}}
    end
  end
end
return answers
"""


# KEYS: the log key of each send whose call is under way. ARGV: how far ahead of now to log
# them, in ms, then each send's log entry. Never moves an entry back (an answer's time).
_PUSH_ON = """
local now_parts = redis.call('TIME')
local ahead = tonumber(ARGV[1])
local until_ms = now_parts[1] * 1000 + now_parts[2] / 1000 + ahead
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', 'GT', until_ms, ARGV[i + 1])
  if redis.call('PTTL', KEYS[i]) < ahead + 1000 then
    redis.call('PEXPIRE', KEYS[i], math.ceil(ahead) + 1000)
  end
end
return 0
"""


class Booking(NamedTuple):
    """A booked slot's entry in its profile's log of sends, to mark it answered by."""

    log_key: str
    entry: bytes


class _SlotRequest(NamedTuple):
    """One send's question to _RESERVE_SLOTS: its profile's keys and its limit."""

    pause_key: str
    rate_key: str
    log_key: str
    interval_ms: float
    # How many logged sends may share the second before its slot.
    most_in_second: int


class PauseReason(StrEnum):
    """Why a profile is paused, kept as the pause key's value."""

    THROTTLED = "1"  # Meta asked us to back off
    EXPIRED = "expired"  # Meta refused the token: until reconnected


@dataclass(frozen=True)
class Slot:
    """The answer to "may this profile send now?"."""

    # Seconds left on a pause Meta asked for: the send should be held back, not retried soon.
    paused_for: float
    # Seconds until the send's slot, or until it should ask again.
    wait: float
    # If the slot is the send's (after `wait`, it goes without asking again).
    booking: Booking | None
    # Why the profile is paused, if it is.
    reason: PauseReason | None = None

    @property
    def booked(self) -> bool:
        return self.booking is not None


class Held(Exception):
    """The send may not go now: it should be held back `seconds`, not retried soon.
    `expired`: held because the profile's token was refused (until it is reconnected)."""

    def __init__(self, seconds: float, expired: bool = False) -> None:
        super().__init__(f"held back for {seconds:.3f} s")
        self.seconds = seconds
        self.expired = expired


class ProfileThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._reserve_slots = redis.register_script(_RESERVE_SLOTS)
        self._push_on = redis.register_script(_PUSH_ON)
        self._unanswered = min(UNANSWERED_SECONDS, settings.graph_timeout_seconds + 1)
        # Sends booked and not answered yet, kept logged ahead of now by one task.
        self._in_flight: set[Booking] = set()
        self._keeper: asyncio.Task[None] | None = None
        # The sends of concurrent chats ask in one round trip.
        self._requests = Batcher(self._reserve_all)
        # Sends answered since the last round trip, which marks them so in their logs. If
        # that call fails they stay unanswered there until their time runs out: they hold
        # their places longer, never shorter, so losing them is safe.
        self._answered: list[Booking] = []

    def _limit(self, connection: str, attachment_type: str | None) -> tuple[str, float]:
        """The limit a send counts against: its name and its rate per second."""
        if attachment_type in AUDIO_VIDEO:
            return "audio_video", self._settings.rate_audio_video
        if connection == Connection.FACEBOOK_LOGIN:
            return "text", self._settings.rate_text_facebook_login
        return "text", self._settings.rate_text_instagram_login

    @asynccontextmanager
    async def sending(
        self, profile_id: int, connection: str, attachment_type: str | None, patience: float
    ) -> AsyncIterator[None]:
        """Wait for this send's slot, then make the call in the block.

        Raises Held instead if the send should be held back: the profile is paused (Meta
        asked), or its slot is more than `patience` seconds away (the caller's hold on its
        chat must outlast the wait: a profile with many chats queued on its audio and video
        rate, 10/s, can have slots many seconds out).
        """
        deadline = time.monotonic() + patience
        while True:
            slot = await self.reserve(profile_id, connection, attachment_type)
            if slot.paused_for:
                raise Held(slot.paused_for, slot.reason == PauseReason.EXPIRED)
            if slot.booking is not None:
                break
            if time.monotonic() + slot.wait > deadline:
                raise Held(slot.wait)
            await asyncio.sleep(slot.wait)
        booking = slot.booking
        self._in_flight.add(booking)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_in_flight())
        try:
            if slot.wait:
                await asyncio.sleep(slot.wait)
            yield
        finally:
            # Meta has received the call by now, if it ever will.
            self._in_flight.discard(booking)
            self._answered.append(booking)

    async def _keep_in_flight(self) -> None:
        """Keep the sends under way logged ahead of now, until none is left."""
        while self._in_flight:
            await asyncio.sleep(self._unanswered / 3)
            bookings = list(self._in_flight)
            if not bookings:
                return
            try:
                await self._push_on(
                    keys=[booking.log_key for booking in bookings],
                    args=[self._unanswered * 1000] + [booking.entry for booking in bookings],
                )
            except Exception:  # noqa: BLE001 - Redis away: no slot is booked meanwhile either
                log.warning("could not keep %d unanswered sends logged", len(bookings))

    async def reserve(self, profile_id: int, connection: str, attachment_type: str | None) -> Slot:
        name, rate = self._limit(connection, attachment_type)
        return await self._requests.submit(
            _SlotRequest(
                _pause_key(profile_id),
                f"dmrelay:rate:{profile_id}:{name}",
                f"dmrelay:sent:{profile_id}:{name}",
                1000.0 / (rate * HEADROOM),
                # The send itself makes one more, and a second at the limit is throttled.
                max(int(rate) - 2, 0),
            )
        )

    async def _reserve_all(self, requests: list[_SlotRequest]) -> list[Slot]:
        answered, self._answered = self._answered, []
        answers = await self._reserve_slots(
            keys=[
                key
                for request in requests
                for key in (request.pause_key, request.rate_key, request.log_key)
            ]
            + [booking.log_key for booking in answered],
            # An unanswered send is logged this far ahead of its slot, then pushed on.
            args=[len(requests), self._unanswered * 1000]
            + [arg for request in requests for arg in (request.interval_ms, request.most_in_second)]
            + [booking.entry for booking in answered],
        )
        slots = []
        for request, (paused, ms, *entry) in zip(requests, answers, strict=True):
            seconds = float(ms) / 1000.0
            if paused:
                why = entry[0] if entry else b""
                why = why.decode() if isinstance(why, bytes) else str(why)
                # A pause set before reasons were kept says "1": throttled.
                reason = (
                    PauseReason.EXPIRED if why == PauseReason.EXPIRED else PauseReason.THROTTLED
                )
                slots.append(Slot(paused_for=seconds, wait=0.0, booking=None, reason=reason))
            else:
                booking = Booking(request.log_key, entry[0]) if entry else None
                slots.append(Slot(paused_for=0.0, wait=seconds, booking=booking))
        return slots

    async def pause(
        self, profile_id: int, seconds: float, reason: PauseReason = PauseReason.THROTTLED
    ) -> None:
        """Hold every send of this profile for a while (Meta asked us to back off, or
        refused its token)."""
        milliseconds = max(1, int(seconds * 1000))
        # Only ever lengthen a pause (a race between two workers is harmless: both pause).
        if await self._redis.pttl(_pause_key(profile_id)) < milliseconds:
            await self._redis.set(_pause_key(profile_id), reason.value, px=milliseconds)


async def unpause(redis: Redis, profile_id: int) -> None:
    """End the profile's pause (it was reconnected: its held sends may go now). If Redis
    fails, a worker meeting the pause of a profile that is active again ends it."""
    try:
        await redis.delete(_pause_key(profile_id))
    except Exception:  # noqa: BLE001 - the send loop ends a stale pause itself
        log.warning("profile %s: its pause could not be ended now", profile_id, exc_info=True)


def _pause_key(profile_id: int) -> str:
    return f"dmrelay:paused:{profile_id}"
