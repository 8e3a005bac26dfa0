"""Per-profile send limits, shared by every worker through Redis.

Meta limits sends per Instagram account (text and reactions 100/s with Instagram Login, 300/s
with Facebook Login; audio and video 10/s). dmrelay spaces each profile's sends to stay under
those rates, and pauses a profile entirely while Meta says it is throttled, so a client may
send as fast as it likes.
"""

from dataclasses import dataclass

from redis.asyncio import Redis

from app.core.batching import Batcher
from app.core.settings import Settings

AUDIO_VIDEO = frozenset({"audio", "video"})
# Keep a little under the configured rate so clock jitter never trips Meta's own window.
HEADROOM = 0.98

# One round trip for both checks, for any number of sends (KEYS and ARGV in pairs and ones:
# a profile's pause key and its rate key, and the limit's interval in ms, per send).
# A paused profile answers {1, ms left on the pause}. Otherwise the generic cell rate
# algorithm with no burst: each send is due one interval after the previous one; {0, 0}
# means this send has its slot now, {0, ms} when to ask again.
_RESERVE_SLOTS = """
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + now_parts[2] / 1000
local answers = {}
for i = 1, #ARGV do
  local paused_ms = redis.call('PTTL', KEYS[2 * i - 1])
  if paused_ms > 0 then
    answers[i] = {1, tostring(paused_ms)}
  else
    local interval = tonumber(ARGV[i])
    local due = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    if due > now then
      answers[i] = {0, tostring(due - now)}
    else
      redis.call('SET', KEYS[2 * i], tostring(now + interval), 'PX', math.ceil(interval) + 1000)
      answers[i] = {0, '0'}
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
    # Seconds until the rate allows this send; 0 with no pause means: go.
    wait: float


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
            Slot(paused_for=float(ms) / 1000.0, wait=0.0)
            if paused
            else Slot(paused_for=0.0, wait=float(ms) / 1000.0)
            for paused, ms in answers
        ]

    async def pause(self, profile_id: int, seconds: float) -> None:
        """Hold every send of this profile for a while (Meta asked us to back off)."""
        milliseconds = max(1, int(seconds * 1000))
        # Only ever lengthen a pause (a race between two workers is harmless: both pause).
        if await self._redis.pttl(_pause_key(profile_id)) < milliseconds:
            await self._redis.set(_pause_key(profile_id), "1", px=milliseconds)


def _pause_key(profile_id: int) -> str:
    return f"dmrelay:paused:{profile_id}"
