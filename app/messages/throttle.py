"""Per-profile send limits, shared by every worker through Redis.

Meta limits sends per Instagram account (text and reactions 100/s with Instagram Login, 300/s
with Facebook Login; audio and video 10/s). dmrelay spaces each profile's sends to stay under
those rates, and pauses a profile entirely while Meta says it is throttled, so a client may
send as fast as it likes.
"""

from dataclasses import dataclass

from redis.asyncio import Redis

from app.core.settings import Settings

AUDIO_VIDEO = frozenset({"audio", "video"})
# Keep a little under the configured rate so clock jitter never trips Meta's own window.
HEADROOM = 0.98

# One round trip for both checks. A paused profile answers {1, ms left on the pause}.
# Otherwise the generic cell rate algorithm with no burst: each send is due one interval
# after the previous one; {0, 0} means this send has its slot now, {0, ms} when to ask again.
_RESERVE_SLOT = """
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + now_parts[2] / 1000
local paused_ms = redis.call('PTTL', KEYS[1])
if paused_ms > 0 then
  return {1, tostring(paused_ms)}
end
local interval = tonumber(ARGV[1])
local due = tonumber(redis.call('GET', KEYS[2]) or '0')
if due > now then
  return {0, tostring(due - now)}
end
redis.call('SET', KEYS[2], tostring(now + interval), 'PX', math.ceil(interval) + 1000)
return {0, '0'}
"""


@dataclass(frozen=True)
class Slot:
    """The answer to "may this profile send now?"."""

    # Seconds left on a pause Meta asked for: the send should be held back, not retried soon.
    paused_for: float
    # Seconds until the rate allows this send; 0 with no pause means: go.
    wait: float


class ProfileThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._reserve_slot = redis.register_script(_RESERVE_SLOT)

    def _limit(self, connection: str, attachment_type: str | None) -> tuple[str, float]:
        """The limit a send counts against: its name and its rate per second."""
        if attachment_type in AUDIO_VIDEO:
            return "audio_video", self._settings.rate_audio_video
        if connection == "facebook_login":
            return "text", self._settings.rate_text_facebook_login
        return "text", self._settings.rate_text_instagram_login

    async def reserve(self, profile_id: int, connection: str, attachment_type: str | None) -> Slot:
        name, rate = self._limit(connection, attachment_type)
        paused, milliseconds = await self._reserve_slot(
            keys=[_pause_key(profile_id), f"dmrelay:rate:{profile_id}:{name}"],
            args=[1000.0 / (rate * HEADROOM)],
        )
        seconds = float(milliseconds) / 1000.0
        return Slot(paused_for=seconds, wait=0.0) if paused else Slot(paused_for=0.0, wait=seconds)

    async def pause(self, profile_id: int, seconds: float) -> None:
        """Hold every send of this profile for a while (Meta asked us to back off)."""
        milliseconds = max(1, int(seconds * 1000))
        # Only ever lengthen a pause (a race between two workers is harmless: both pause).
        if await self._redis.pttl(_pause_key(profile_id)) < milliseconds:
            await self._redis.set(_pause_key(profile_id), "1", px=milliseconds)


def _pause_key(profile_id: int) -> str:
    return f"dmrelay:paused:{profile_id}"
