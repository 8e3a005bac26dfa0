"""Per-profile send limits, shared by every worker through Redis.

Meta limits sends per Instagram account (text and reactions 100/s with Instagram Login, 300/s
with Facebook Login; audio and video 10/s). dmrelay spaces each profile's sends to stay under
those rates, and pauses a profile entirely while Meta says it is throttled, so a client may
send as fast as it likes.
"""

import time

from redis.asyncio import Redis

from app.core.settings import Settings

AUDIO_VIDEO = frozenset({"audio", "video"})
# Keep a little under the configured rate so clock jitter never trips Meta's own window.
HEADROOM = 0.98

# Generic cell rate algorithm with no burst: each call is due one interval after the previous
# one. Returns 0 when this call may go now, or how many milliseconds to wait.
_SPACE_CALLS = """
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + now_parts[2] / 1000
local interval = tonumber(ARGV[1])
local due = tonumber(redis.call('GET', KEYS[1]) or '0')
if due > now then
  return tostring(due - now)
end
redis.call('SET', KEYS[1], tostring(now + interval), 'PX', math.ceil(interval) + 1000)
return '0'
"""


class ProfileThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._space_calls = redis.register_script(_SPACE_CALLS)

    def _limit(self, connection: str, attachment_type: str | None) -> tuple[str, float]:
        """The limit a send counts against: its name and its rate per second."""
        if attachment_type in AUDIO_VIDEO:
            return "audio_video", self._settings.rate_audio_video
        if connection == "facebook_login":
            return "text", self._settings.rate_text_facebook_login
        return "text", self._settings.rate_text_instagram_login

    async def wait_for_slot(
        self, profile_id: int, connection: str, attachment_type: str | None
    ) -> float:
        """Seconds to wait before this send may go; 0 means it has its slot now."""
        name, rate = self._limit(connection, attachment_type)
        wait_ms = await self._space_calls(
            keys=[f"dmrelay:rate:{profile_id}:{name}"], args=[1000.0 / (rate * HEADROOM)]
        )
        return float(wait_ms) / 1000.0

    async def pause(self, profile_id: int, seconds: float) -> None:
        """Hold every send of this profile for a while (Meta asked us to back off)."""
        until = time.time() + seconds
        key = f"dmrelay:paused:{profile_id}"
        current = await self._redis.get(key)
        if current is None or float(current) < until:
            await self._redis.set(key, str(until), px=max(1, int(seconds * 1000)))

    async def paused_for(self, profile_id: int) -> float:
        """Seconds left on this profile's pause; 0 if it may send."""
        until = await self._redis.get(f"dmrelay:paused:{profile_id}")
        return max(0.0, float(until) - time.time()) if until else 0.0
