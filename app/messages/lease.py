"""A chat's send lease: one worker at a time sends a chat's messages, oldest first.

The lease is a time-bounded lock in PostgreSQL (`chats.send_lease_until`) with the random
token of the worker that took it (`chats.send_lease_owner`): only that worker renews or
releases it, and one whose lease ran out and was taken meanwhile learns so (`LeaseLost`)
before it sends anything more.
"""

import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from app.core.settings import Settings
from app.messages import repository

# What an attempt may still need once its lease was last checked, beyond the Graph call and
# the echo wait: storing the outcome, and a booked rate-limit slot up to a second away.
ATTEMPT_MARGIN_SECONDS = 5.0


class LeaseLost(Exception):
    """Another worker has the chat now: this one stops without sending anything more."""


@dataclass(slots=True)
class Lease:
    """A chat this worker holds: its token, and when it was last known to run until
    `now + ChatLeases.duration` (taken before the statement that set it, so never late)."""

    chat_id: int
    owner: int
    checked_at: float


class ChatLeases:
    def __init__(self, db: asyncpg.Pool, settings: Settings) -> None:
        self._db = db
        # What an attempt needs after its last look at the lease: the Graph call (a total
        # timeout), the wait for an echo after an unknown outcome, and a margin.
        call = settings.graph_timeout_seconds + settings.echo_wait_seconds + ATTEMPT_MARGIN_SECONDS
        # The lease is looked at (renewed, only by its owner) before each claim and again
        # just before each Graph call, but only once this much of it has gone, not with
        # every message; a send waits for its rate-limit slot at most this long too.
        self.renew_after = call / 3
        # So a lease looked at always has the rest of the attempt left, and a claim (as long,
        # set before the rate-limit wait) lasts the whole attempt.
        self.duration = timedelta(seconds=self.renew_after + call)

    async def take(self, chat_id: int) -> Lease | None:
        """The chat's lease, unless another worker holds it."""
        checked_at = time.monotonic()
        owner = secrets.randbits(63)
        if await repository.raw_take_lease(self._db, chat_id, self.duration, owner):
            return Lease(chat_id, owner, checked_at)
        return None

    async def keep(self, lease: Lease, now: bool = False) -> None:
        """Make sure the lease outlasts an attempt from here, renewing it once it is old
        (or `now`); raises LeaseLost if another worker has taken the chat meanwhile."""
        if not now and time.monotonic() - lease.checked_at <= self.renew_after:
            return  # still ours: a lease runs out before anyone else may take it
        checked_at = time.monotonic()
        if not await repository.raw_renew_lease(
            self._db, lease.chat_id, self.duration, lease.owner
        ):
            raise LeaseLost
        lease.checked_at = checked_at

    async def release(self, lease: Lease) -> None:
        await repository.raw_release_lease(self._db, lease.chat_id, lease.owner)
