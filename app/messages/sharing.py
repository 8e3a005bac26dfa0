"""Sharing a backlog of chats among the workers.

A worker drains each chat it takes for up to DRAIN_SECONDS (app/messages/sender.py), so the
worker that is up first when chats are queued takes them all (up to its job slots) while
the others wait for new ones, and the send rate stays that of one worker. Handing every
chat over every few seconds would spread them, at a job's cost (a dozen round trips) every
few sends. Instead a worker with no chat to send from says so in Redis, and a worker that
sees it hands half of its chats over, each at its next send: their fresh jobs are announced
to every worker, and the idle one, with time to spare, takes most of them. Once nobody is
idle, nothing is handed over.
"""

import secrets
import time

from redis.asyncio import Redis

# Set to its mark (with this time to live) by a worker that drains no chat, at each poll of
# its queue.
IDLE_KEY = "dmrelay:sends:idle"
IDLE_MS = 1000
# How often a busy worker may hand half of its chats over: once those are taken, the idle
# worker's mark (set before) may still be up, and it is not asked for twice.
SHARE_EVERY_SECONDS = 2 * IDLE_MS / 1000


class ChatSharing:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        # Its own mark, which it does not share with.
        self._mark = secrets.token_hex(8).encode()
        # Chats this worker drains now, and how many of them to hand over.
        self.draining = 0
        self._to_hand_over = 0
        self._shared_at = float("-inf")

    def hand_over(self) -> bool:
        """Whether the chat asking should go to a fresh job now (one of those to share)."""
        if self._to_hand_over <= 0:
            return False
        self._to_hand_over -= 1
        return True

    async def look(self) -> None:
        """At each poll of the queue: mark this worker idle, or share with one that is."""
        if self.draining == 0:
            self._to_hand_over = 0
            await self._redis.set(IDLE_KEY, self._mark, px=IDLE_MS)
            return
        now = time.monotonic()
        if now - self._shared_at < SHARE_EVERY_SECONDS or self.draining < 2:
            return
        if await self._redis.get(IDLE_KEY) not in (None, self._mark):
            self._shared_at = now
            self._to_hand_over = self.draining // 2
